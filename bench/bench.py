"""modelrouter throughput/latency benchmark: wrk -> (fake upstream | bare proxy | gateway -> fake upstream).

Every scenario is run five times, interleaved - straight at the fake upstream ("direct"), through a
minimal uvicorn + aiohttp proxy ("bare", bench/bare_proxy.py: the ceiling for this stack on this machine),
through the gateway (observability off), through a second gateway with metrics, a JSON access log to a file,
request ids and the observability headers on ("gateway+obs"), and through a third with client API keys, rate
limits and the SQLite store enabled ("gateway+auth", limits so high nothing is refused, observability off) -
so the table shows what the gateway itself costs, against no proxy at all and against the cheapest proxy
built from the same parts, and what observability and checking keys and limits each cost on top. See
bench/README.md. Entry point: ``bench/run``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The bare proxy's uvicorn, run from BENCH_DIR (bench/bare_proxy.py); --host and --port are added per run.
BARE_UVICORN_ARGS = [
    "-m", "uvicorn", "bare_proxy:app", "--loop", "uvloop", "--http", "httptools", "--lifespan", "on",
    "--no-access-log", "--no-proxy-headers", "--no-server-header", "--log-level", "warning",
]  # fmt: skip
HOST = "127.0.0.1"  # loopback only, always
CHAT_PATH = "/v1/chat/completions"
MODEL = "bench-model"

# Targets the gateway is held to (see README). Keys are used in latest.json.
TARGET_RPS_C32 = 7_000.0
TARGET_P50_OVERHEAD_MS = 0.25
TARGET_IDLE_RSS_MB = 70.0  # the store is always open under `serve` (config versions): bench/idle_rss.py breaks it down
TARGET_AUTH_COST_PCT = 8.0  # gateway+auth may lose at most this share of the plain gateway's req/s
TARGET_OBS_COST_PCT = 5.0  # gateway+obs (metrics + access log + request id + headers) likewise
# gateway+all (keys, limits, quotas, metrics, access log) against the bare uvicorn + raw ASGI + aiohttp proxy of
# the same run: the bare proxy is not a ceiling, its upstream client is most of its cost (issue 19).
TARGET_ALL_BARE_RATIO = 1.3  # non-stream c32
TARGET_ALL_STREAM_BARE_RATIO = 1.0  # stream c32

# The scenario the cost targets are judged in. Its three gateways are measured again in extra rounds (--rounds),
# each round on its own in alternating order, and a cost is the median over rounds of the cost within a round:
# on this shared machine one pair of runs moved by up to ±10 %, a median of pairs far less.
TARGET_SCENARIO = "non-stream c32"
ROUND_TARGETS = ("gateway", "gateway+obs", "gateway+auth", "gateway+all")

# The "gateway+auth" target: a second gateway with client keys, limits and the store, and the key wrk sends.
AUTH_TARGET = "gateway+auth"
AUTH_KEY = "mr-bench-key-0123456789abcdefghijklmnopqrstuv"
AUTH_KEY_ENV = "BENCH_API_KEY"  # read by chat.lua / chat_stream.lua; set only for wrk runs against AUTH_TARGET
AUTH_MIN_REQUESTS = 10_000  # the issue asks for 10,000 requests through limits and auth per measured c32 run

# The "gateway+obs" target: the plain gateway with every observability feature a production setup turns on.
OBS_TARGET = "gateway+obs"
# Response headers the observability config adds; the sanity check wants all of them from the gateway+obs and
# none from the other gateways, so a baseline that silently kept them on cannot hide their cost.
OBS_HEADERS = ("x-request-id", "x-modelrouter-instance", "x-modelrouter-overhead-ms", "server-timing")
# The target is what the issue names: metrics + access log. Request ids and the timing headers are separate
# switches; BENCH_OBS_HEADERS=1 turns them on in the gateway+obs too, to see everything's cost together.
OBS_WITH_HEADERS = os.environ.get("BENCH_OBS_HEADERS") == "1"
# Every gateway's upstream client (upstream.client, spelled out like the observability switches); the bare proxy
# stays aiohttp, so BENCH_CLIENT=pyreqwest bench/run is the A/B of the client against the same baseline.
UPSTREAM_CLIENT = os.environ.get("BENCH_CLIENT", "aiohttp")
OBS_LOG_MIN_SHARE = 0.9  # access log lines / requests wrk counted against the gateway+obs (warm-ups included)
OBS_LOG_FLUSH_WAIT_S = 1.0  # the access log buffers lines for up to 0.2 s (Observe.FLUSH_AFTER)
OBS_METRIC = "modelrouter_requests_total"  # must be in the gateway+obs's GET /metrics after the runs

# The "gateway+all" target: keys + limits + quotas (as gateway+auth) and metrics + access log (as gateway+obs)
# together, what a production setup runs.
ALL_TARGET = "gateway+all"
KEYED_TARGETS = (AUTH_TARGET, ALL_TARGET)

# Per gateway target: its output log and generated config in bench/results/.
GATEWAY_FILES = {
    "gateway": ("gateway.log", "bench-config.yaml"),
    OBS_TARGET: ("gateway-obs.log", "bench-obs-config.yaml"),
    AUTH_TARGET: ("gateway-auth.log", "bench-auth-config.yaml"),
    ALL_TARGET: ("gateway-all.log", "bench-all-config.yaml"),
}

EXIT_OK, EXIT_FAILED, EXIT_ENV, EXIT_MISSED = 0, 1, 2, 3


class BenchError(Exception):
    """A problem that stops the benchmark; reported without a traceback."""

    exit_code = EXIT_FAILED


class EnvironmentProblem(BenchError):
    """The machine lacks something the benchmark needs (not the gateway's fault)."""

    exit_code = EXIT_ENV


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    connections: int
    threads: int
    lua: str | None = None  # the wrk script, if not the chat one

    @property
    def script(self) -> Path:
        return BENCH_DIR / (self.lua or ("chat_stream.lua" if self.stream else "chat.lua"))


SCENARIOS = (
    Scenario("non-stream c1", stream=False, connections=1, threads=1),
    Scenario("non-stream c32", stream=False, connections=32, threads=2),
    Scenario("stream c1", stream=True, connections=1, threads=1),
    Scenario("stream c32", stream=True, connections=32, threads=2),
)


@dataclass
class WrkRun:
    scenario: str
    target: str  # "direct" | "bare" | "gateway" | "gateway+obs" | "gateway+auth" | "gateway+all"
    connections: int
    threads: int
    duration_s: float
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # anything that makes this run untrustworthy
    # CPU use of our processes during the run, % of one core: ~100 means that process was the bottleneck.
    cpu_pct: dict[str, float] = field(default_factory=dict)
    raw: str = ""
    warmup_requests: int = 0  # answered in the unrecorded warm-up before this run (the access log has them too)
    round: int = 0  # 0: the pass over every scenario; 1..: the extra rounds of TARGET_SCENARIO (see measure)


# ---------------------------------------------------------------------------------------------- processes


class Children:
    """Owns every child process; ``close()`` kills their whole process groups (each runs in its own session,
    so a gateway that forks workers is cleaned up too, and our Ctrl-C does not race its own handler)."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dirs: list[Path] = []

    def tempdir(self, prefix: str) -> Path:
        """A fresh directory, removed by ``close()`` once the processes that used it are dead."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._dirs.append(path)
        return path

    def start(
        self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:  # a file, not a pipe: an unread pipe would block a chatty child
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # SIGKILL the group regardless: the leader may be gone while its workers linger.
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self._procs.clear()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._dirs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session=True makes pid == pgid


def free_port() -> int:
    # Tiny race between close and the child's bind; acceptable on loopback and caught by the readiness check.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output captured)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode} during startup. Its output:\n{tail(log)}")
        try:
            status, _, _ = http_request(port, "GET", path, timeout=1.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(0.1)
    raise BenchError(
        f"{what} did not answer 200 on GET {path} within {timeout:g} s (last: {last}). Its output:\n{tail(log)}"
    )


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    status, resp_headers, resp_body = http_exchange(port, method, path, body, timeout, headers)
    return status, resp_headers.get("content-type", ""), resp_body


def http_exchange(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; the response headers with lower-cased names."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        all_headers = {"Content-Type": "application/json"} if body is not None else {}
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def rss_mb(pid: int) -> tuple[float, float, int]:
    """(VmRSS, VmHWM) in MB summed over ``pid`` and its descendants, and the process count."""
    pids = [pid, *_descendants(pid)]
    rss = hwm = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1]) / 1024
    return rss, hwm, len(pids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants."""
    ticks = 0
    for p in [pid, *_descendants(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may contain spaces/parens; fields after the last ')' are fixed.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# ---------------------------------------------------------------------------------------------- environment


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "wrk is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y wrk) and re-run."
        )
    print("wrk not found; installing the Debian package (apt-get install -y wrk) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
        # Fresh containers often have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=600)
        subprocess.run(install, env=env, check=False, timeout=600)
    path = shutil.which("wrk")
    if not path:
        raise EnvironmentProblem("could not install wrk with apt-get; install it manually (package 'wrk') and re-run.")
    return path


@dataclass(frozen=True)
class Pinning:
    gateway: list[str]  # argv prefix for the gateways and the bare proxy (measured one at a time)
    load: list[str]  # argv prefix for wrk and the fake upstream
    note: str


def plan_pinning(enabled: bool) -> Pinning:
    """Gateways (and bare proxy) on one core, wrk + fake upstream on another, so the load generator does not
    steal the proxy's CPU (the proxies are single-process; on 2 cores this is the fairest split). The bare
    proxy, the gateway+obs and the gateway+auth share the gateway's core so all are compared on equal terms;
    only one is under load at a time."""
    if not enabled:
        return Pinning([], [], "off (--no-pin)")
    taskset = shutil.which("taskset")
    cores = sorted(os.sched_getaffinity(0))
    if not taskset:
        return Pinning([], [], "off (taskset not found)")
    if len(cores) < 2:
        return Pinning([], [], f"off (only {len(cores)} usable core)")
    gw, load = str(cores[0]), str(cores[1])
    note = f"the gateways and the bare proxy on core {gw}, wrk + upstream on core {load}"
    return Pinning([taskset, "-c", gw], [taskset, "-c", load], note)


# ---------------------------------------------------------------------------------------------- wrk

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(out: str, run: WrkRun) -> None:
    run.raw = out
    if m := re.search(r"^\s*(\d+) requests in", out, re.M):
        run.requests = int(m[1])
    if m := re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M):
        run.rps = float(m[1])
    else:
        run.errors.append("no Requests/sec in wrk output")
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s*{pct}(?:\.000)?%\s+(\S+)", out, re.M):
            setattr(run, attr, _ms(m[1]))
        else:
            run.errors.append(f"no p{pct} in wrk output")
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out):
        run.non_2xx_3xx = int(m[1])
        run.errors.append(f"{run.non_2xx_3xx} non-2xx/3xx responses")
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        run.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
        bad = {k: v for k, v in run.socket_errors.items() if v}
        if bad:
            run.errors.append("socket errors " + ", ".join(f"{k}={v}" for k, v in bad.items()))
    if run.requests == 0 and not run.errors:
        run.errors.append("no requests completed")


def run_wrk(
    wrk: str,
    pin: list[str],
    port: int,
    sc: Scenario,
    target: str,
    duration: float,
    watch: dict[str, int],
    api_key: str | None = None,
    path: str = CHAT_PATH,
    timeout_s: float = 5.0,
) -> WrkRun:
    """One bounded wrk run; ``watch`` names the pids whose CPU use to record. With ``api_key`` the lua
    script sends it as a Bearer key (via the environment); without, no Authorization header at all."""
    run = WrkRun(sc.name, target, sc.connections, sc.threads, duration)
    env = {k: v for k, v in os.environ.items() if k != AUTH_KEY_ENV}  # a stray export must not leak in
    if api_key:
        env[AUTH_KEY_ENV] = api_key
    argv = [
        *pin, wrk, f"-t{sc.threads}", f"-c{sc.connections}", f"-d{duration:g}s", "--latency",
        "--timeout", f"{timeout_s:g}s",  # a stalled response counts as a timeout error, not hidden in the tail
        "-s", str(sc.script), f"http://{HOST}:{port}{path}",
    ]  # fmt: skip
    cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    started = time.monotonic()
    try:
        # wrk stops itself after -d; the subprocess timeout is only a backstop so no load can run unbounded.
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False, env=env)
    except subprocess.TimeoutExpired:
        run.errors.append("wrk did not finish in time (killed)")
        return run
    elapsed = time.monotonic() - started
    run.cpu_pct = {name: round(100 * (cpu_seconds(pid) - cpu_before[name]) / elapsed, 1) for name, pid in watch.items()}
    parse_wrk(proc.stdout, run)
    if proc.returncode != 0:
        run.errors.insert(0, f"wrk exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return run


def sanity_check(port: int, what: str, api_key: str | None = None, observability: bool | None = None) -> list[str]:
    """One request of each kind, checked for content: a fast wrong answer must not pass as a fast one.
    With ``api_key``, requests without it (or with a wrong one) must be refused with 401 first; the checked
    requests then carry it. For a gateway, ``observability`` says whether its observability is on (see
    ``observability_problems``)."""
    problems = []
    base = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        if api_key:
            for label, headers in (("without a key", {}), ("with a wrong key", {"Authorization": "Bearer mr-wrong"})):
                status, _, body = http_request(port, "POST", CHAT_PATH, json.dumps(base).encode(), headers=headers)
                if status != 401:
                    problems.append(f"{what}: chat {label} answered HTTP {status}, not 401: {body[:300]!r}")
        status, resp_headers, body = http_exchange(port, "POST", CHAT_PATH, json.dumps(base).encode(), headers=auth)
        if status != 200:
            problems.append(f"{what}: non-streaming chat answered HTTP {status}: {body[:300]!r}")
        elif json.loads(body).get("object") != "chat.completion":
            problems.append(f"{what}: non-streaming chat body is not a chat.completion: {body[:300]!r}")
        elif observability is not None:
            problems += observability_problems(port, what, observability, resp_headers)
        stream_body = json.dumps({**base, "stream": True}).encode()
        status, ctype, body = http_request(port, "POST", CHAT_PATH, stream_body, headers=auth)
        events = [line for line in body.split(b"\n") if line.startswith(b"data:")]
        if status != 200:
            problems.append(f"{what}: streaming chat answered HTTP {status}: {body[:300]!r}")
        elif "text/event-stream" not in ctype:
            problems.append(f"{what}: streaming chat Content-Type is {ctype!r}, not text/event-stream")
        elif not events or events[-1].strip() != b"data: [DONE]" or b"chat.completion.chunk" not in body:
            problems.append(f"{what}: streaming body is not chat.completion.chunk events + [DONE]: {body[:300]!r}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        problems.append(f"{what}: sanity request failed: {exc!r}")
    return problems


def observability_problems(port: int, what: str, on: bool, chat_headers: dict[str, str]) -> list[str]:
    """With ``on``, a chat answer must carry every OBS_HEADERS and GET /metrics must answer 200; otherwise
    neither: a baseline gateway that quietly kept observability on would hide its cost in the comparison, and
    a gateway+obs with it off would look free."""
    present = [h for h in OBS_HEADERS if h in chat_headers]
    missing = [h for h in OBS_HEADERS if h not in chat_headers]
    metrics_status, _, _ = http_request(port, "GET", "/metrics")
    problems = []
    headers_on = on and OBS_WITH_HEADERS
    if headers_on and missing:
        problems.append(f"{what}: observability headers missing from a chat answer: {', '.join(missing)}")
    if not headers_on and present:
        problems.append(
            f"{what}: observability headers are meant to be off, yet a chat answer has {', '.join(present)}"
        )
    if on != (metrics_status == 200):
        problems.append(f"{what}: GET /metrics answered HTTP {metrics_status} with metrics {'on' if on else 'off'}")
    return problems


def check_obs_gateway(port: int, access_log: Path, runs: list[WrkRun]) -> tuple[dict[str, Any], list[str]]:
    """After the runs: the gateway+obs's access log must hold about one line per request it answered (the
    wrk counts of its runs, warm-ups included), and its GET /metrics must answer 200 with OBS_METRIC. A
    gateway that dropped the log or the counters under load would otherwise look cheap."""
    requests = sum(r.requests + r.warmup_requests for r in runs if r.target == OBS_TARGET)
    time.sleep(OBS_LOG_FLUSH_WAIT_S)  # lines are buffered for a moment before they reach the file
    problems = []
    lines = count_lines(access_log)
    if lines is None:
        problems.append(f"{OBS_TARGET}: no access log at {access_log}")
    elif lines < OBS_LOG_MIN_SHARE * requests:
        problems.append(
            f"{OBS_TARGET}: access log has {lines:,} lines for {requests:,} requests wrk counted "
            f"(< {100 * OBS_LOG_MIN_SHARE:.0f} %)"
        )
    elif not _is_access_record(access_log):
        problems.append(f"{OBS_TARGET}: the access log's last line is not a JSON request record with a status")
    metric_total: float | None = None
    try:
        status, _, body = http_request(port, "GET", "/metrics")
    except (OSError, http.client.HTTPException) as exc:
        problems.append(f"{OBS_TARGET}: GET /metrics failed: {exc!r}")
    else:
        if status != 200:
            problems.append(f"{OBS_TARGET}: GET /metrics answered HTTP {status} after the runs")
        elif (metric_total := metric_sum(body.decode(errors="replace"), OBS_METRIC)) is None:
            problems.append(f"{OBS_TARGET}: GET /metrics has no {OBS_METRIC} after the runs")
    stats = {"requests": requests, "access_log_lines": lines, "requests_total_metric": metric_total}
    return stats, problems


def count_lines(path: Path) -> int | None:
    """Newlines in ``path`` (None if it does not exist), read in blocks: the log runs to many megabytes."""
    try:
        with path.open("rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return None


def _is_access_record(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        record = json.loads(last)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("status"), int)


def metric_sum(exposition: str, name: str) -> float | None:
    """The sum of every sample of ``name`` in a Prometheus text exposition; None if it has none."""
    values = [
        float(line.rsplit(maxsplit=1)[-1])
        for line in exposition.splitlines()
        if line.startswith((name + "{", name + " "))
    ]
    return sum(values) if values else None


# ---------------------------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def build_rows(runs: list[WrkRun]) -> list[dict[str, Any]]:
    by_key = {(r.scenario, r.target): r for r in runs if r.round == 0}
    rows = []
    for sc in SCENARIOS:
        targets = ("direct", "bare", "gateway", AUTH_TARGET, OBS_TARGET, ALL_TARGET)
        d, b, g, a, o, x = (by_key.get((sc.name, target)) for target in targets)
        if d is None and b is None and g is None and a is None and o is None and x is None:
            continue
        row: dict[str, Any] = {"scenario": sc.name, "connections": sc.connections}
        for prefix, run in (("direct", d), ("bare", b), ("gateway", g), ("auth", a), ("obs", o), ("all", x)):
            row[f"{prefix}_rps"] = run.rps if run else None
            row[f"{prefix}_p50_ms"] = run.p50_ms if run else None
            row[f"{prefix}_p99_ms"] = run.p99_ms if run else None
        row["auth_requests"] = a.requests if a else None
        row["obs_requests"] = o.requests if o else None
        row["ratio"] = g.rps / d.rps if d and g and d.rps else None
        row["gw_bare_ratio"] = g.rps / b.rps if b and g and b.rps else None
        row["all_bare_ratio"] = x.rps / b.rps if b and x and b.rps else None
        # Both add-ons are compared with the plain gateway of the same scenario in the same run.
        for prefix, run in (("auth", a), ("obs", o)):
            ratio = run.rps / g.rps if run and g and g.rps else None
            row[f"{prefix}_gw_ratio"] = ratio
            row[f"{prefix}_cost_pct"] = None if ratio is None else 100 * (1 - ratio)
        # CPU time per request of each gateway: on a shared machine it moves less than req/s when other tenants
        # take the core for a while (the process is then not running, and not charged), so it is reported too.
        for prefix, run in (("gateway", g), ("auth", a), ("obs", o), ("all", x)):
            row[f"{prefix}_cpu_us"] = _cpu_us_per_request(run)
        for prefix in ("auth", "obs"):
            base, extra = row["gateway_cpu_us"], row[f"{prefix}_cpu_us"]
            row[f"{prefix}_cpu_cost_pct"] = 100 * (extra / base - 1) if base and extra else None
        row["p50_overhead_ms"] = _p50_diff(g, d)
        row["p50_over_bare_ms"] = _p50_diff(g, b)
        row["auth_p50_over_gw_ms"] = _p50_diff(a, g)
        row["obs_p50_over_gw_ms"] = _p50_diff(o, g)
        # "errors" covers the runs the gateway targets are computed from; bare, auth and obs runs are apart.
        row["errors"] = bool((d and d.errors) or (g and g.errors))
        row["bare_errors"] = bool(b and b.errors)
        row["auth_errors"] = bool(a and a.errors)
        row["obs_errors"] = bool(o and o.errors)
        row["all_errors"] = bool((x and x.errors) or (b and b.errors))
        if sc.name == TARGET_SCENARIO:
            _round_medians(row, [r for r in runs if r.scenario == sc.name])
        rows.append(row)
    return rows


def _round_medians(row: dict[str, Any], runs: list[WrkRun]) -> None:
    """With several rounds: each add-on's cost (req/s and CPU per request) within every round, and their median
    as the cost. A round's runs with errors taint the row like the first pass's."""
    rounds = sorted({r.round for r in runs})
    if len(rounds) < 2:
        return
    row["rounds"] = len(rounds)
    for prefix, target in (("auth", AUTH_TARGET), ("obs", OBS_TARGET)):
        costs, cpu_costs = [], []
        for number in rounds:
            by_target = {r.target: r for r in runs if r.round == number}
            g, x = by_target.get("gateway"), by_target.get(target)
            if g is None or x is None or not g.rps:
                continue
            costs.append(100 * (1 - x.rps / g.rps))
            base, extra = _cpu_us_per_request(g), _cpu_us_per_request(x)
            if base and extra:
                cpu_costs.append(100 * (extra / base - 1))
            row["errors"] = row["errors"] or bool(g.errors)
            row[f"{prefix}_errors"] = row[f"{prefix}_errors"] or bool(x.errors)
        if costs:
            row[f"{prefix}_cost_pct_rounds"] = [round(c, 1) for c in costs]
            row[f"{prefix}_cost_pct"] = statistics.median(costs)
            row[f"{prefix}_gw_ratio"] = 1 - row[f"{prefix}_cost_pct"] / 100
        if cpu_costs:
            row[f"{prefix}_cpu_cost_pct_rounds"] = [round(c, 1) for c in cpu_costs]
            row[f"{prefix}_cpu_cost_pct"] = statistics.median(cpu_costs)


def _cpu_us_per_request(run: WrkRun | None) -> float | None:
    if run is None or not run.requests or run.target not in run.cpu_pct:
        return None
    return run.cpu_pct[run.target] / 100 * run.duration_s / run.requests * 1e6


def _p50_diff(a: WrkRun | None, b: WrkRun | None) -> float | None:
    if a is None or b is None or a.p50_ms is None or b.p50_ms is None:
        return None
    return a.p50_ms - b.p50_ms


def print_table(rows: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    header = (
        f"{'scenario':<16}{'direct rps':>12}{'bare rps':>10}{'gateway rps':>13}{'auth rps':>10}{'obs rps':>9}"
        f"{'all rps':>9}{'ratio':>7}{'gw/bare':>9}{'all/bare':>9}{'auth/gw':>9}{'obs/gw':>8}"
        f"{'direct p50/p99 ms':>20}{'gateway p50/p99 ms':>21}"
        f"{'p50 overhead ms':>17}{'p50 over bare':>15}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        direct = f"{_fmt(r['direct_p50_ms'], '.3f')} / {_fmt(r['direct_p99_ms'], '.3f')}"
        gateway = f"{_fmt(r['gateway_p50_ms'], '.3f')} / {_fmt(r['gateway_p99_ms'], '.3f')}"
        bad = r["errors"] or r["bare_errors"] or r["auth_errors"] or r["obs_errors"] or r["all_errors"]
        print(
            f"{r['scenario']:<16}{_fmt(r['direct_rps'], ',.0f'):>12}{_fmt(r['bare_rps'], ',.0f'):>10}"
            f"{_fmt(r['gateway_rps'], ',.0f'):>13}{_fmt(r['auth_rps'], ',.0f'):>10}{_fmt(r['obs_rps'], ',.0f'):>9}"
            f"{_fmt(r['all_rps'], ',.0f'):>9}{_fmt(r['ratio'], '.2f'):>7}{_fmt(r['gw_bare_ratio'], '.2f'):>9}"
            f"{_fmt(r['all_bare_ratio'], '.2f'):>9}{_fmt(r['auth_gw_ratio'], '.2f'):>9}"
            f"{_fmt(r['obs_gw_ratio'], '.2f'):>8}{direct:>20}{gateway:>21}{_fmt(r['p50_overhead_ms'], '+.3f'):>17}"
            f"{_fmt(r['p50_over_bare_ms'], '+.3f'):>15}" + ("   <-- ERRORS" if bad else ""),
            file=out,
        )


def info_lines(
    rows: list[dict[str, Any]],
    auth_rss: dict[str, Any] | None,
    gw_rss: dict[str, Any] | None,
    obs_rss: dict[str, Any] | None = None,
    obs_checks: dict[str, Any] | None = None,
) -> list[str]:
    """Informational comparisons (not targets): the gateway against the bare proxy measured in this run, what
    keys + limits and metrics + access log cost in the scenarios that are not a target, the memory of the
    gateway+auth and the gateway+obs, and what the gateway+obs logged and counted."""
    lines = []
    by_name = {r["scenario"]: r for r in rows}
    c32 = by_name.get("non-stream c32")
    if c32 is not None and c32["gw_bare_ratio"] is not None:
        note = "  (run had errors)" if c32["errors"] or c32["bare_errors"] else ""
        lines.append(
            f"gateway at {100 * c32['gw_bare_ratio']:.0f} % of the bare proxy at 32 connections non-streaming{note}"
        )
    for prefix, label in (("auth", "auth+limits"), ("obs", "metrics+access log")):
        for name in ("non-stream c1", "stream c1", "stream c32"):
            r = by_name.get(name)
            if r is None or r[f"{prefix}_cost_pct"] is None:
                continue
            note = "  (run had errors)" if r["errors"] or r[f"{prefix}_errors"] else ""
            lines.append(
                f"{label} cost, {name}: {r[f'{prefix}_cost_pct']:.1f} % fewer req/s "
                f"(p50 {_fmt(r[f'{prefix}_p50_over_gw_ms'], '+.3f')} ms over the gateway){note}"
            )
    if c32 is not None and c32.get("rounds"):
        for prefix, label in (("auth", "auth+limits"), ("obs", "metrics+access log")):
            if c32.get(f"{prefix}_cost_pct_rounds"):
                per_round = ", ".join(f"{c:.1f}" for c in c32[f"{prefix}_cost_pct_rounds"])
                cpu = ", ".join(f"{c:+.1f}" for c in c32.get(f"{prefix}_cpu_cost_pct_rounds", []))
                lines.append(
                    f"{label} cost, non-stream c32, {c32['rounds']} rounds: {per_round} % fewer req/s "
                    f"(median {c32[f'{prefix}_cost_pct']:.1f} %); CPU per request {cpu} %"
                )
    for name in ("non-stream c32", "stream c32"):
        r = by_name.get(name)
        if r is None or r.get("gateway_cpu_us") is None:
            continue
        parts = [f"gateway {r['gateway_cpu_us']:.0f} µs"]
        for prefix, what in (("auth", AUTH_TARGET), ("obs", OBS_TARGET)):
            if r.get(f"{prefix}_cpu_us") is not None:
                parts.append(f"{what} {r[f'{prefix}_cpu_us']:.0f} µs ({r[f'{prefix}_cpu_cost_pct']:+.1f} %)")
        if r.get("all_cpu_us") is not None:
            parts.append(f"{ALL_TARGET} {r['all_cpu_us']:.0f} µs")
        lines.append(f"CPU per request, {name}: " + ", ".join(parts))
    for what, stats, why in ((AUTH_TARGET, auth_rss, "SQLite store open"), (OBS_TARGET, obs_rss, "metrics on")):
        if stats is None:
            continue
        over = f", {stats['idle_mb'] - gw_rss['idle_mb']:+.1f} MB over the plain gateway" if gw_rss else ""
        lines.append(
            f"{what} idle RSS {stats['idle_mb']:.1f} MB ({why}{over}); after load "
            f"{stats['after_load_mb']:.1f} MB, peak {stats['peak_mb']:.1f} MB"
        )
    if obs_checks is not None:
        metric = obs_checks["requests_total_metric"]
        lines.append(
            f"{OBS_TARGET} access log: {_fmt(obs_checks['access_log_lines'], ',')} lines for "
            f"{obs_checks['requests']:,} requests wrk counted (warm-ups included); {OBS_METRIC} sums to "
            f"{_fmt(metric, ',.0f')}"
        )
    return lines


def auth_volume_lines(runs: list[WrkRun], duration: float, quick: bool) -> tuple[list[str], list[str]]:
    """(INFO, NOTE) lines on how many requests each measured c32 gateway+auth run pushed through keys and
    limits: the issue asks for at least AUTH_MIN_REQUESTS, none refused."""
    c32 = [r for r in runs if r.target == AUTH_TARGET and r.connections >= 32]
    if not c32:
        return [], []
    counts = ", ".join(f"{r.requests:,} ({r.scenario})" for r in c32)
    refused = sum(r.non_2xx_3xx for r in c32)
    info = [f"gateway+auth c32 runs handled {counts} requests through keys + limits; non-2xx: {refused}"]
    notes = []
    short = [r for r in c32 if r.requests < AUTH_MIN_REQUESTS]
    if short:
        which = ", ".join(f"{r.scenario} ({r.requests:,})" for r in short)
        why = (
            "--quick runs are 3 s; run without --quick"
            if quick
            else f"runs were {duration:g} s; use a longer --duration"
        )
        notes.append(f"gateway+auth handled fewer than the {AUTH_MIN_REQUESTS:,} requests asked for in {which}: {why}")
    return info, notes


def _verdict(
    name: str,
    value: float | None,
    limit: float,
    at_least: bool,
    tainted: bool,
    value_suffix: str = "",
    limit_suffix: str = "",
) -> dict[str, Any]:
    if value is None:
        status = "SKIP"
    elif tainted:
        status = "MISS"  # numbers from a run with errors prove nothing
    else:
        status = "PASS" if (value >= limit if at_least else value <= limit) else "MISS"
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "at_least": at_least,
        "status": status,
        "run_had_errors": tainted,
        "value_suffix": value_suffix,
        "limit_suffix": limit_suffix,
    }


def check_targets(
    rows: list[dict[str, Any]], rss: dict[str, Any] | None, obs_failed: bool = False
) -> list[dict[str, Any]]:
    """PASS/MISS per target. ``obs_failed``: the gateway+obs's access log or /metrics check after the runs
    failed, which taints its target like an error in one of its runs."""
    by_name = {r["scenario"]: r for r in rows}
    c32 = by_name.get("non-stream c32", {})
    c1 = by_name.get("non-stream c1", {})
    s32 = by_name.get("stream c32", {})
    idle = rss["idle_mb"] if rss else None
    rps, overhead, cost = c32.get("gateway_rps"), c1.get("p50_overhead_ms"), c32.get("auth_cost_pct")
    auth_tainted = bool(c32.get("errors") or c32.get("auth_errors"))
    obs_tainted = bool(c32.get("errors") or c32.get("obs_errors") or obs_failed)
    return [
        _verdict("gateway rps, non-stream c32", rps, TARGET_RPS_C32, True, c32.get("errors", False)),
        _verdict("p50 overhead ms, non-stream c1", overhead, TARGET_P50_OVERHEAD_MS, False, c1.get("errors", False)),
        _verdict("gateway idle RSS MB", idle, TARGET_IDLE_RSS_MB, False, False),
        _verdict(
            "auth+limits cost, non-stream c32", cost, TARGET_AUTH_COST_PCT, False, auth_tainted, " % fewer req/s", " %"
        ),
        _verdict(
            "metrics+access log cost, non-stream c32",
            c32.get("obs_cost_pct"),
            TARGET_OBS_COST_PCT,
            False,
            obs_tainted,
            " % fewer req/s",
            " %",
        ),
        _verdict(
            "auth+limits CPU per request, non-stream c32",
            c32.get("auth_cpu_cost_pct"),
            TARGET_AUTH_COST_PCT,
            False,
            auth_tainted,
            " % more",
            " %",
        ),
        _verdict(
            "gateway+all / bare proxy, non-stream c32",
            c32.get("all_bare_ratio"),
            TARGET_ALL_BARE_RATIO,
            True,
            bool(c32.get("all_errors")),
            "x",
            "x",
        ),
        _verdict(
            "gateway+all / bare proxy, stream c32",
            s32.get("all_bare_ratio"),
            TARGET_ALL_STREAM_BARE_RATIO,
            True,
            bool(s32.get("all_errors")),
            "x",
            "x",
        ),
    ]


def print_targets(targets: list[dict[str, Any]]) -> None:
    for t in targets:
        cmp = ">=" if t["at_least"] else "<="
        value = _fmt(t["value"], ",.3f" if "ms" in t["target"] else ",.1f")
        if t["value"] is not None:
            value += t["value_suffix"]
        note = "  (run had errors)" if t["run_had_errors"] else ""
        print(f"{t['status']:<5} {t['target']}: {value} (target {cmp} {t['limit']:,g}{t['limit_suffix']}){note}")


def shout(lines: list[str]) -> None:
    if not lines:
        return
    bar = "!" * 78
    print(f"\n{bar}\n!! THE FOLLOWING PROBLEMS MAKE THESE NUMBERS UNTRUSTWORTHY:", file=sys.stderr)
    for line in lines:
        print(f"!!  - {line}", file=sys.stderr)
    print(bar, file=sys.stderr)


def git_state() -> dict[str, Any]:
    """Commit and whether the tree had uncommitted changes: numbers from a dirty tree are not reproducible."""
    state: dict[str, Any] = {"commit": None, "dirty": None}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode == 0:
            state["commit"] = head.stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=5)
        if status.returncode == 0:
            state["dirty"] = bool(status.stdout.strip())
    return state


# ---------------------------------------------------------------------------------------------- main


def write_config(
    path: Path,
    upstream_port: int,
    gateway_port: int,
    store_dir: Path,
    auth: bool = False,
    access_log: Path | None = None,
) -> Path:
    """The plain gateway config (its store - config versions - in ``store_dir``, observability off); with
    ``auth``, plus client keys and rate limits (rates so high that nothing is refused: the benchmark measures
    the cost of checking, not refusals); with ``access_log``, observability on and the access log written there.
    Every observability switch is spelled out, so a change of the defaults cannot move a baseline."""
    text = (
        "# Generated by bench/bench.py for one benchmark run.\n"
        f"server: {{host: {HOST}, port: {gateway_port}}}\n"
        "services:\n"
        "  chat:\n"
        "    load_balance: round_robin\n"
        "    instances:\n"
        f"      - name: {MODEL}\n"
        f"        base_url: http://{HOST}:{upstream_port}\n"
        f"store: {{data_dir: {json.dumps(str(store_dir))}}}\n"
        f"upstream: {{client: {UPSTREAM_CLIENT}}}\n"
    )
    on = "true" if access_log is not None else "false"
    text += f"observability:\n  metrics: {on}\n  access_log: {on}\n"
    if access_log is not None:
        # A file, as in production: on stdout the lines would land in the harness's capture (gateway-obs.log).
        text += f"  access_log_path: {json.dumps(str(access_log))}\n"
    extra = "true" if access_log is not None and OBS_WITH_HEADERS else "false"
    text += (
        f"  request_id: {extra}\n"
        f"  headers: {{instance: {extra}, overhead: {extra}, server_timing: {extra}}}\n"
        "  tracing: false\n"  # spans need an exporter; not part of what this target measures
    )
    if auth:
        text += (
            "auth:\n"
            "  enabled: true\n"
            "  keys:\n"
            "    - name: bench\n"
            f"      key: {AUTH_KEY}\n"
            "      quotas: {requests_per_minute: 100000000, tokens_per_minute: 1000000000}\n"
            "limits:\n"
            "  - {scope: global, rate: 100000000, period: 60}\n"
            "  - {scope: ip, rate: 100000000, period: 60}\n"
            # The target is the cost of keys + limits; usage records (a write to the store per request) are a
            # separate feature, measured on their own with BENCH_USAGE=1.
            f"usage: {{enabled: {'true' if os.environ.get('BENCH_USAGE') == '1' else 'false'}}}\n"
        )
    path.write_text(text)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3-second runs (overrides --duration)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPU cores with taskset")
    parser.add_argument("--direct-only", action="store_true", help="measure only the fake upstream (no gateway)")
    parser.add_argument("--startup-timeout", type=float, default=20.0, help="seconds to wait for /health")
    parser.add_argument("--strict", action="store_true", help=f"exit {EXIT_MISSED} if a target is missed")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help=f"rounds of the gateways in {TARGET_SCENARIO}; the cost targets take the median (default 3)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count each gateway's instructions per request under valgrind's callgrind (bench/instructions.py)",
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per target with --instructions")
    parser.add_argument("--stream", action="store_true", help="streaming requests with --instructions")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="gateway+redis against gateway+auth: the cost of state.backend redis (bench/shared_state.py)",
    )
    parser.add_argument(
        "--messages",
        action="store_true",
        help="/v1/messages against /v1/chat/completions on one gateway: the Anthropic front door "
        "(bench/messages_api.py)",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="tokens/s of the local pack's chat model directly and through the gateway (bench/local_chat.py)",
    )
    parser.add_argument("--tokens", type=int, default=128, help="with --local: completion tokens per request")
    parser.add_argument(
        "--peer",
        choices=("litellm",),
        help="side by side with another gateway on the same upstream and core (bench/peer_litellm.py; installs it "
        "into a venv of its own on first use)",
    )
    args = parser.parse_args(argv)
    if not 100 <= args.requests <= 100_000:
        parser.error("--requests must be from 100 to 100,000")
    if args.quick:
        args.duration = 3.0
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600] seconds")
    if not 1 <= args.rounds <= 9:
        parser.error("--rounds must be from 1 to 9")
    return args


def start_upstream(children: Children, pin: Pinning) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = RESULTS_DIR / "upstream.log"
    argv = [*pin.load, sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--host", HOST, "--port", str(port)]
    proc = children.start(argv, log)
    wait_ready(proc, port, "/v1/models", 10.0, "fake upstream", log)
    return proc, port


def bare_env(upstream_port: int) -> dict[str, str]:
    """The bare proxy's environment (run from BENCH_DIR with BARE_UVICORN_ARGS)."""
    pythonpath = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "BARE_PROXY_UPSTREAM": f"http://{HOST}:{upstream_port}"}


def start_bare(
    children: Children, pin: Pinning, upstream_port: int, timeout: float
) -> tuple[subprocess.Popen[bytes], int]:
    """bench/bare_proxy.py under uvicorn, pinned like the gateway; ready once it proxies GET /v1/models."""
    missing = [m for m in ("uvicorn", "uvloop", "httptools", "aiohttp") if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"the bare proxy needs {', '.join(missing)}, not importable by {sys.executable}")
    port = free_port()
    log = RESULTS_DIR / "bare.log"
    uvicorn = [*BARE_UVICORN_ARGS, "--host", HOST, "--port", str(port)]
    proc = children.start([*pin.gateway, sys.executable, *uvicorn], log, env=bare_env(upstream_port), cwd=BENCH_DIR)
    wait_ready(proc, port, "/v1/models", timeout, "bare proxy", log)
    return proc, port


def start_gateway(
    children: Children,
    pin: Pinning,
    upstream_port: int,
    timeout: float,
    target: str = "gateway",
    access_log: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """One of the GATEWAY_FILES targets, each with its SQLite store in a fresh temp dir: the gateway, the
    gateway+auth (keys, limits) or, given ``access_log``, the gateway+obs."""
    if importlib.util.find_spec("modelrouter") is None:
        raise BenchError(f"modelrouter is not importable by {sys.executable}; run: .venv/bin/pip install -e .")
    port = free_port()
    log_name, config_name = GATEWAY_FILES[target]
    log = RESULTS_DIR / log_name
    store_dir = children.tempdir("modelrouter-bench-store-")
    keyed = target in KEYED_TARGETS
    config = write_config(RESULTS_DIR / config_name, upstream_port, port, store_dir, keyed, access_log)
    serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    proc = children.start([*pin.gateway, sys.executable, "-m", "modelrouter", *serve], log)
    wait_ready(proc, port, "/health", timeout, target, log)
    return proc, port


def start_measured_gateway(
    children: Children,
    pin: Pinning,
    upstream_port: int,
    timeout: float,
    target: str,
    access_log: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, dict[str, Any]]:
    """``start_gateway`` plus its idle RSS, taken before any request."""
    proc, port = start_gateway(children, pin, upstream_port, timeout, target, access_log)
    time.sleep(0.5)  # let startup allocations settle before calling it "idle"
    idle, _, nprocs = rss_mb(proc.pid)  # taskset execs the command, so this is the gateway's own pid
    print(f"{target} up on port {port} (pid {proc.pid}, {nprocs} process(es)), idle RSS {idle:.1f} MB")
    return proc, port, {"idle_mb": round(idle, 1), "processes": nprocs}


def measure(
    wrk: str,
    pin: Pinning,
    ports: dict[str, int],
    watch: dict[str, int],
    duration: float,
    api_keys: dict[str, str],
    rounds: int = 1,
) -> tuple[list[WrkRun], list[str]]:
    """Every scenario against every target, interleaved so slow drift (thermal, noise) hits all alike; then
    ``rounds - 1`` more rounds of the gateways in TARGET_SCENARIO. ``api_keys`` maps the targets that need a
    client key to it."""
    runs: list[WrkRun] = []
    problems: list[str] = []
    for sc in SCENARIOS:
        for what, port in ports.items():
            key = api_keys.get(what)
            # A short unrecorded warm-up: connection pools, caches and lazy imports are not what we measure.
            warmup = run_wrk(wrk, pin.load, port, sc, what, min(1.0, duration), {}, key)
            run = run_wrk(wrk, pin.load, port, sc, what, duration, watch, key)
            run.warmup_requests = warmup.requests  # the gateway+obs's access log check counts these too
            if key and run.non_2xx_3xx:
                run.errors.append("keys + limits must refuse nothing here (429: a limit hit; 401: key not accepted)")
            runs.append(run)
            cpu = " ".join(f"{name} {pct:.0f}%" for name, pct in run.cpu_pct.items())
            flag = "   <-- " + "; ".join(run.errors) if run.errors else ""
            print(
                f"  {sc.name:<15} {what:<12} {run.rps:>10,.0f} req/s  p50 {_fmt(run.p50_ms, '.3f'):>7} ms"
                f"  p99 {_fmt(run.p99_ms, '.3f'):>7} ms  cpu: {cpu}{flag}"
            )
            problems += [f"{sc.name} / {what}: {e}" for e in run.errors]
    sc = next(s for s in SCENARIOS if s.name == TARGET_SCENARIO)
    order = [t for t in ROUND_TARGETS if t in ports]
    for number in range(1, rounds):
        # Alternating order (A B C, C B A, ...): slow drift then weighs on every target alike.
        for what in order if number % 2 == 0 else order[::-1]:
            port, key = ports[what], api_keys.get(what)
            warmup = run_wrk(wrk, pin.load, port, sc, what, min(1.0, duration), {}, key)
            run = run_wrk(wrk, pin.load, port, sc, what, duration, watch, key)
            run.warmup_requests, run.round = warmup.requests, number
            runs.append(run)
            print(f"  {sc.name:<15} {what:<12} {run.rps:>10,.0f} req/s  (round {number + 1} of {rounds})")
            problems += [f"{sc.name} / {what} / round {number + 1}: {e}" for e in run.errors]
    return runs, problems


def run_bench(args: argparse.Namespace, children: Children) -> int:
    wrk = ensure_wrk()
    pin = plan_pinning(not args.no_pin)
    RESULTS_DIR.mkdir(exist_ok=True)
    print(f"modelrouter bench: {args.duration:g} s per run, pinning {pin.note}")

    upstream, upstream_port = start_upstream(children, pin)
    ports = {"direct": upstream_port}
    watch = {"upstream": upstream.pid}
    rss: dict[str, Any] = {}  # per gateway target: idle, after-load and peak RSS
    api_keys: dict[str, str] = {}
    access_log: Path | None = None
    if not args.direct_only:
        bare, bare_port = start_bare(children, pin, upstream_port, args.startup_timeout)
        ports["bare"] = bare_port
        watch["bare"] = bare.pid  # taskset execs, so this is uvicorn's own pid
        print(f"bare proxy up on port {bare_port} (pid {bare.pid})")
        # gateway+obs right after the gateway in every scenario: the two compared most closely run closest in time.
        access_log = children.tempdir("modelrouter-bench-accesslog-") / "access.log"
        all_log = children.tempdir("modelrouter-bench-accesslog-") / "access-all.log"
        gateways = (("gateway", None), (OBS_TARGET, access_log), (AUTH_TARGET, None), (ALL_TARGET, all_log))
        for target, log_file in gateways:
            proc, port, rss[target] = start_measured_gateway(
                children, pin, upstream_port, args.startup_timeout, target, log_file
            )
            ports[target] = port
            watch[target] = proc.pid
        api_keys[AUTH_TARGET] = api_keys[ALL_TARGET] = AUTH_KEY

    observability = {"gateway": False, OBS_TARGET: True, AUTH_TARGET: False, ALL_TARGET: True}
    problems = [
        p for what, port in ports.items() for p in sanity_check(port, what, api_keys.get(what), observability.get(what))
    ]
    shout(problems)
    runs, run_problems = measure(wrk, pin, ports, watch, args.duration, api_keys, args.rounds)
    problems += run_problems
    for what, stats in rss.items():
        after, peak, nprocs = rss_mb(watch[what])
        stats.update(after_load_mb=round(after, 1), peak_mb=round(peak, 1), processes=nprocs)
    obs_checks: dict[str, Any] | None = None
    obs_problems: list[str] = []
    if access_log is not None:
        obs_checks, obs_problems = check_obs_gateway(ports[OBS_TARGET], access_log, runs)
        obs_checks["errors"] = obs_problems
        problems += obs_problems

    rows = build_rows(runs)
    gw_rss = rss.get("gateway")
    verdicts = check_targets(rows, gw_rss, obs_failed=bool(obs_problems))
    print()
    print_table(rows)
    if gw_rss:
        print(
            f"\ngateway RSS: idle {gw_rss['idle_mb']:.1f} MB, after load {gw_rss['after_load_mb']:.1f} MB, "
            f"peak {gw_rss['peak_mb']:.1f} MB ({gw_rss['processes']} process(es))"
        )
    print()
    print_targets(verdicts)
    volume, notes = auth_volume_lines(runs, args.duration, args.quick)
    info = info_lines(rows, rss.get(AUTH_TARGET), gw_rss, rss.get(OBS_TARGET), obs_checks) + volume
    info.append(f"the gateways' upstream client: {UPSTREAM_CLIENT} (BENCH_CLIENT; the bare proxy's is aiohttp)")
    for line in info:
        print(f"INFO  {line}")
    for line in notes:
        print(f"NOTE  {line}")

    result = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "duration_s": args.duration,
        "pinning": pin.note,
        "upstream_client": UPSTREAM_CLIENT,
        "cpus": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0],
        "clean": not problems,
        "problems": problems,
        "rows": rows,
        "gateway_rss": gw_rss,
        "gateway_auth_rss": rss.get(AUTH_TARGET),
        "gateway_obs_rss": rss.get(OBS_TARGET),
        "obs_checks": obs_checks,
        "targets": verdicts,
        "info": info,
        "notes": notes,
        "runs": [asdict(r) for r in runs],
    }
    out = RESULTS_DIR / "latest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(ROOT)}")

    if problems:
        shout(problems)
        return EXIT_FAILED
    if args.strict and any(v["status"] == "MISS" for v in verdicts):
        return EXIT_MISSED
    return EXIT_OK


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(signum)  # unwind through main's finally, which kills the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    children = Children()
    try:
        if args.instructions:
            sys.modules.setdefault("bench", sys.modules[__name__])  # instructions.py imports from "bench"
            from instructions import run_instructions

            return run_instructions(children, args.requests, args.stream, args.startup_timeout * 10)
        if args.redis:
            sys.modules.setdefault("bench", sys.modules[__name__])
            from shared_state import run_redis

            return run_redis(children, args.duration, args.rounds, args.startup_timeout)
        if args.local:
            sys.modules.setdefault("bench", sys.modules[__name__])
            from local_chat import run_local

            return run_local(children, args.rounds, args.tokens, args.startup_timeout)
        if args.messages:
            sys.modules.setdefault("bench", sys.modules[__name__])
            from messages_api import run_messages

            return run_messages(children, args.duration, args.rounds, args.startup_timeout)
        if args.peer == "litellm":
            sys.modules.setdefault("bench", sys.modules[__name__])
            from peer_litellm import run_peer_litellm

            return run_peer_litellm(children, args.duration, args.rounds, args.startup_timeout)
        return run_bench(args, children)
    except BenchError as exc:
        print(f"\nbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        print(f"\nbench: interrupted ({exc}), stopping child processes", file=sys.stderr)
        return 128 + exc.signum
    finally:
        # Ignore further signals while cleaning up, so a second Ctrl-C cannot orphan the children.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        children.close()


if __name__ == "__main__":
    sys.exit(main())
