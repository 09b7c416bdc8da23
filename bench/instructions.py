"""Instructions per request of each gateway target, counted by valgrind's callgrind: repeatable where req/s is not.

req/s on a shared machine moves by several percent between two runs of the same code, which is as much as the
costs the targets bound (metrics + access log: 5 %). callgrind counts the instructions the gateway process
executes (user space; system calls are not counted), the same count for the same code and the same requests
whatever else the machine is doing, give or take what the timing of batches and timers moves (under 1 %).

Each target of bench/run (the plain gateway, the gateway+obs, the gateway+auth, with the same generated
configs) is started under callgrind with counting off; after a warm-up the count is switched on, ``--requests``
non-streaming chat requests are sent over 32 connections (``--stream``: streaming), and the count is dumped.
The program is ~50x slower under callgrind, so the counts are per request, not per second.

Entry point: ``bench/run --instructions`` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

# bench.py registers itself as "bench" before importing this module, so these are its own objects.
from bench import (
    ALL_TARGET,
    AUTH_KEY,
    AUTH_TARGET,
    BARE_UVICORN_ARGS,
    BENCH_DIR,
    CHAT_PATH,
    GATEWAY_FILES,
    HOST,
    KEYED_TARGETS,
    MODEL,
    OBS_TARGET,
    RESULTS_DIR,
    ROOT,
    BenchError,
    Children,
    EnvironmentProblem,
    Pinning,
    bare_env,
    free_port,
    git_state,
    start_upstream,
    wait_ready,
    write_config,
)

CONNECTIONS = 32
WARMUP_REQUESTS = 300
TARGETS = ("bare", "gateway", OBS_TARGET, AUTH_TARGET, ALL_TARGET)
_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


async def _send(port: int, count: int, stream: bool, api_key: str | None) -> None:
    """``count`` chat requests over CONNECTIONS connections; every answer must be a 200, read to the end."""
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    left = count
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(f"http://{HOST}:{port}{CHAT_PATH}", json=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 200:
                        raise BenchError(f"a request through port {port} was answered {reply.status}")

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def count_target(
    children: Children, upstream_port: int, target: str, requests: int, stream: bool, timeout: float
) -> float:
    """Instructions per request of one target: a gateway, or the bare proxy (``"bare"``)."""
    port = free_port()
    out = children.tempdir("modelrouter-bench-callgrind-") / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable]
    if target == "bare":
        log = RESULTS_DIR / "callgrind-bare.log"
        argv = [*valgrind, *BARE_UVICORN_ARGS, "--host", HOST, "--port", str(port)]
        proc = children.start(argv, log, env=bare_env(upstream_port), cwd=BENCH_DIR)
        wait_ready(proc, port, "/v1/models", timeout, "bare proxy under callgrind", log)
    else:
        log_name, config_name = GATEWAY_FILES[target]
        log = RESULTS_DIR / ("callgrind-" + log_name)
        store_dir = children.tempdir("modelrouter-bench-store-")
        logs = target in (OBS_TARGET, ALL_TARGET)
        access_log = children.tempdir("modelrouter-bench-accesslog-") / "access.log" if logs else None
        config_path = RESULTS_DIR / ("callgrind-" + config_name)
        config = write_config(config_path, upstream_port, port, store_dir, target in KEYED_TARGETS, access_log)
        serve = ["-m", "modelrouter", "serve", "--config", str(config), "--host", HOST, "--port", str(port)]
        proc = children.start([*valgrind, *serve], log)
        wait_ready(proc, port, "/health", timeout, f"{target} under callgrind", log)
    api_key = AUTH_KEY if target in KEYED_TARGETS else None
    asyncio.run(_send(port, WARMUP_REQUESTS, stream, api_key))
    _control("-i", "on", str(proc.pid))
    asyncio.run(_send(port, requests, stream, api_key))
    _control("-d", str(proc.pid))  # writes <out>.1: only what ran while counting was on
    dump = Path(f"{out}.1")
    deadline = time.monotonic() + 30
    while not (dump.exists() and _TOTAL.search(dump.read_bytes())):
        if time.monotonic() > deadline:
            raise BenchError(f"callgrind wrote no count for {target} (see {log})")
        time.sleep(0.2)
    match = _TOTAL.search(dump.read_bytes())
    assert match is not None
    return int(match[1]) / requests


def run_instructions(children: Children, requests: int, stream: bool, timeout: float) -> int:
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise EnvironmentProblem(f"--instructions needs {', '.join(missing)} (Debian package valgrind)")
    RESULTS_DIR.mkdir(exist_ok=True)
    kind = "streaming" if stream else "non-streaming"
    print(f"modelrouter bench: instructions per {kind} request under callgrind, {requests:,} requests per target")
    counts: dict[str, float] = {}
    _, upstream_port = start_upstream(children, Pinning([], [], "off: nothing is timed under callgrind"))
    for target in TARGETS:
        counts[target] = count_target(children, upstream_port, target, requests, stream, timeout)
        print(f"  {target:<13} {counts[target]:>12,.0f} instructions per request")
    base = counts["gateway"]
    for target in ("gateway", ALL_TARGET):
        print(f"INFO  {target} / bare, {kind}: {counts[target] / counts['bare']:.2f}x the bare proxy's instructions")
    costs = {}
    for target, label in (
        (OBS_TARGET, "metrics+access log"),
        (AUTH_TARGET, "auth+limits"),
        (ALL_TARGET, "everything (keys, limits, quotas, metrics, access log)"),
    ):
        extra = counts[target] - base
        costs[target] = round(100 * extra / base, 2)
        print(f"INFO  {label} cost, {kind}: {extra:+,.0f} instructions per request ({costs[target]:+.1f} %)")
    out = RESULTS_DIR / f"instructions{'-stream' if stream else ''}.json"
    result = {"requests": requests, "stream": stream, "per_request": counts, "cost_pct": costs, "git": git_state()}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out.relative_to(ROOT)}")
    return 0
