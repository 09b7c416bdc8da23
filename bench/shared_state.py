"""The cost of shared state: the auth+limits gateway with ``state.backend: redis`` against the same gateway with
limits in memory, in one run.

Both get bench/run's gateway+auth config (client keys, a key's requests/tokens per minute, a global and a per-IP
limit, so high that nothing is refused); ``gateway+redis`` adds a ``state`` section pointing at the Redis on
127.0.0.1:6379 (a key prefix of its own, removed afterwards). Non-streaming chat at 32 and at 1 connection, the
two targets alternating for ``--rounds`` rounds; the verdicts take the medians:

- gateway+redis costs at most 15 % of the memory gateway's req/s at 32 connections;
- its p50 at 1 connection is at most 0.1 ms above the memory gateway's.

Entry point: ``bench/run --redis`` (see bench/README.md). Needs a Redis server at 127.0.0.1:6379.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
from typing import Any

# bench.py registers itself as "bench" before importing this module, so these are its own objects.
from bench import (
    AUTH_KEY,
    HOST,
    RESULTS_DIR,
    SCENARIOS,
    BenchError,
    Children,
    EnvironmentProblem,
    Pinning,
    WrkRun,
    ensure_wrk,
    free_port,
    git_state,
    plan_pinning,
    run_wrk,
    sanity_check,
    start_upstream,
    wait_ready,
    write_config,
)

MEMORY, REDIS = "gateway+auth", "gateway+redis"
REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_COST_PCT = 15.0
MAX_P50_MS = 0.1


def _redis_pid() -> int | None:
    """The Redis server's pid (to count its CPU too), or None when there is no Redis to measure against."""
    try:
        import redis
    except ImportError as exc:
        raise EnvironmentProblem("the redis package is missing: .venv/bin/pip install -e '.[dev]'") from exc
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def _start(children: Children, pin: Pinning, upstream_port: int, timeout: float, prefix: str | None) -> tuple[Any, int]:
    name = "redis" if prefix else "memory"
    port = free_port()
    store = children.tempdir(f"modelrouter-bench-{name}-")
    config = write_config(RESULTS_DIR / f"bench-{name}-config.yaml", upstream_port, port, store, auth=True)
    if prefix is not None:
        with config.open("a") as out:
            out.write(f"state: {{backend: redis, url: {REDIS_URL!r}, prefix: {prefix!r}}}\n")
    log = RESULTS_DIR / f"gateway-{name}.log"
    serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    proc = children.start([*pin.gateway, sys.executable, "-m", "modelrouter", *serve], log)
    wait_ready(proc, port, "/health", timeout, REDIS if prefix else MEMORY, log)
    return proc, port


def _cleanup(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


def run_redis(children: Children, duration: float, rounds: int, timeout: float) -> int:
    redis_pid = _redis_pid()
    if redis_pid is None:
        raise EnvironmentProblem(f"no Redis answers at {REDIS_URL}; start one (redis-server) to measure gateway+redis")
    wrk = ensure_wrk()
    pin = plan_pinning(True)
    RESULTS_DIR.mkdir(exist_ok=True)
    prefix = f"mrbench:{secrets.token_hex(4)}:"
    print(
        f"modelrouter bench --redis: {duration:g} s per run, {rounds} round(s), pinning {pin.note}; "
        f"Redis pid {redis_pid}"
    )
    upstream, upstream_port = start_upstream(children, pin)
    try:
        memory, memory_port = _start(children, pin, upstream_port, timeout, None)
        shared, shared_port = _start(children, pin, upstream_port, timeout, prefix)
        ports = {MEMORY: memory_port, REDIS: shared_port}
        problems = [p for what, port in ports.items() for p in sanity_check(port, what, AUTH_KEY, False)]
        if problems:
            raise BenchError("; ".join(problems))
        watch = {MEMORY: memory.pid, REDIS: shared.pid, "redis-server": redis_pid, "upstream": upstream.pid}
        scenarios = [s for s in SCENARIOS if not s.stream]
        runs: list[WrkRun] = []
        for n in range(rounds):
            for scenario in scenarios:
                order = (MEMORY, REDIS) if n % 2 == 0 else (REDIS, MEMORY)
                for target in order:
                    run_wrk(wrk, pin.load, ports[target], scenario, target, 1.0, watch, AUTH_KEY)  # warm-up
                    run = run_wrk(wrk, pin.load, ports[target], scenario, target, duration, watch, AUTH_KEY)
                    run.round = n
                    runs.append(run)
                    cpu = " ".join(f"{k} {v:.0f}%" for k, v in run.cpu_pct.items() if v >= 1)
                    print(
                        f"  {scenario.name:<15} {target:<14} {run.rps:>9,.0f} req/s  p50 {run.p50_ms or 0:7.3f} ms"
                        f"  non-2xx {run.non_2xx_3xx}  cpu: {cpu}  (round {n + 1})"
                    )
                    problems += [f"{target} {scenario.name}: {e}" for e in run.errors]
                    if run.non_2xx_3xx:
                        problems.append(f"{target} {scenario.name}: {run.non_2xx_3xx} answers were not 2xx")
        verdicts = _verdicts(runs)
    finally:
        _cleanup(prefix)
    for line in verdicts:
        print(line)
    for problem in problems:
        print(f"PROBLEM  {problem}")
    out = RESULTS_DIR / "redis.json"
    out.write_text(
        json.dumps(
            {"git": git_state(), "duration_s": duration, "rounds": rounds, "verdicts": verdicts, "problems": problems,
             "runs": [r.__dict__ | {"raw": ""} for r in runs]},
            indent=2,
        )
    )  # fmt: skip
    print(f"results written to {out.relative_to(RESULTS_DIR.parent.parent)}")
    return 1 if problems else 0


def _verdicts(runs: list[WrkRun]) -> list[str]:
    def by(target: str, connections: int) -> list[WrkRun]:
        return [r for r in runs if r.target == target and r.connections == connections]

    lines = []
    costs = [100 * (1 - s.rps / m.rps) for m, s in zip(by(MEMORY, 32), by(REDIS, 32), strict=True) if m.rps and s.rps]
    if costs:
        cost = statistics.median(costs)
        verdict = "PASS" if cost <= MAX_COST_PCT else "MISS"
        rounds = ", ".join(f"{c:.1f}" for c in costs)
        lines.append(f"{verdict}  gateway+redis cost, non-stream c32: {cost:.1f} % fewer req/s than gateway+auth "
                     f"(target <= {MAX_COST_PCT:g} %; rounds {rounds})")  # fmt: skip
        cpu = [
            (
                s.cpu_pct.get(REDIS, 0) / s.rps,
                m.cpu_pct.get(MEMORY, 0) / m.rps,
                s.cpu_pct.get("redis-server", 0) / s.rps,
            )
            for m, s in zip(by(MEMORY, 32), by(REDIS, 32), strict=True)
            if m.rps and s.rps
        ]
        gateway_us = statistics.median(10_000 * c[0] for c in cpu)
        memory_us = statistics.median(10_000 * c[1] for c in cpu)
        redis_us = statistics.median(10_000 * c[2] for c in cpu)
        lines.append(f"INFO  CPU per request, non-stream c32: gateway+auth {memory_us:.0f} µs, gateway+redis "
                     f"{gateway_us:.0f} µs (+ redis-server {redis_us:.0f} µs)")  # fmt: skip
    p50s = [
        s.p50_ms - m.p50_ms
        for m, s in zip(by(MEMORY, 1), by(REDIS, 1), strict=True)
        if m.p50_ms is not None and s.p50_ms is not None
    ]
    if p50s:
        delta = statistics.median(p50s)
        verdict = "PASS" if delta <= MAX_P50_MS else "MISS"
        lines.append(f"{verdict}  gateway+redis p50, non-stream c1: {delta:+.3f} ms over gateway+auth "
                     f"(target <= +{MAX_P50_MS:g} ms)")  # fmt: skip
    return lines


if __name__ == "__main__":  # pragma: no cover - run through bench/run
    sys.exit("run this through bench/run --redis")
