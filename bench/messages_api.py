"""The cost of the Anthropic front door: ``POST /v1/messages`` against ``POST /v1/chat/completions`` on one
gateway (the plain target's config) in front of the OpenAI-shaped fake upstream, in one run.

A Messages request is translated to chat on the way in and its answer back to a Messages answer on the way out;
chat passes through. Non-streaming at 32 connections, the two paths alternating for ``--rounds`` rounds; the
verdict takes the median: ``/v1/messages`` within 25 % of chat's req/s.

Entry point: ``bench/run --messages`` (see bench/README.md).
"""

from __future__ import annotations

import json
import statistics
import sys

# bench.py registers itself as "bench" before importing this module, so these are its own objects.
from bench import (
    RESULTS_DIR,
    BenchError,
    Children,
    Scenario,
    WrkRun,
    ensure_wrk,
    free_port,
    git_state,
    http_request,
    plan_pinning,
    run_wrk,
    sanity_check,
    start_upstream,
    wait_ready,
    write_config,
)

CHAT, MESSAGES = "chat", "messages"
MESSAGES_PATH = "/v1/messages"
MAX_COST_PCT = 25.0
SCENARIOS = {
    CHAT: Scenario("non-stream c32", stream=False, connections=32, threads=2),
    MESSAGES: Scenario("non-stream c32", stream=False, connections=32, threads=2, lua="messages.lua"),
}


def _check_messages(port: int) -> list[str]:
    """One Messages request, checked for content: a fast wrong answer must not pass as a fast one."""
    body = json.dumps({"model": "bench-model", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    status, _, raw = http_request(port, "POST", MESSAGES_PATH, body.encode())
    if status != 200:
        return [f"/v1/messages answered {status}: {raw[:200]!r}"]
    answer = json.loads(raw)
    if answer.get("type") != "message" or not answer.get("content") or answer["content"][0].get("type") != "text":
        return [f"/v1/messages answered something else than a message: {raw[:200]!r}"]
    return []


def run_messages(children: Children, duration: float, rounds: int, timeout: float) -> int:
    wrk = ensure_wrk()
    pin = plan_pinning(True)
    RESULTS_DIR.mkdir(exist_ok=True)
    print(f"modelrouter bench --messages: {duration:g} s per run, {rounds} round(s), pinning {pin.note}")
    upstream, upstream_port = start_upstream(children, pin)
    port = free_port()
    config = write_config(RESULTS_DIR / "bench-messages-config.yaml", upstream_port, port, children.tempdir("mr-msg-"))
    log = RESULTS_DIR / "gateway-messages.log"
    serve = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = children.start([*pin.gateway, sys.executable, "-m", "modelrouter", *serve], log)
    wait_ready(proc, port, "/health", timeout, "gateway", log)
    problems = sanity_check(port, "gateway", None, False) + _check_messages(port)
    if problems:
        raise BenchError("; ".join(problems))
    watch = {"gateway": proc.pid, "upstream": upstream.pid}
    paths = {CHAT: "/v1/chat/completions", MESSAGES: MESSAGES_PATH}
    runs: list[WrkRun] = []
    for n in range(rounds):
        for target in (CHAT, MESSAGES) if n % 2 == 0 else (MESSAGES, CHAT):
            scenario = SCENARIOS[target]
            run_wrk(wrk, pin.load, port, scenario, target, 1.0, watch, None, paths[target])  # warm-up
            run = run_wrk(wrk, pin.load, port, scenario, target, duration, watch, None, paths[target])
            run.round = n
            runs.append(run)
            cpu = run.cpu_pct.get("gateway", 0)
            print(f"  {scenario.name:<15} {target:<9} {run.rps:>9,.0f} req/s  p50 {run.p50_ms or 0:7.3f} ms"
                  f"  non-2xx {run.non_2xx_3xx}  cpu: gateway {cpu:.0f}%  (round {n + 1})")  # fmt: skip
            problems += [f"{target}: {e}" for e in run.errors]
            if run.non_2xx_3xx:
                problems.append(f"{target}: {run.non_2xx_3xx} answers were not 2xx")
    chat = [r for r in runs if r.target == CHAT]
    messages = [r for r in runs if r.target == MESSAGES]
    costs = [100 * (1 - m.rps / c.rps) for c, m in zip(chat, messages, strict=True) if c.rps and m.rps]
    verdicts = []
    if costs:
        cost = statistics.median(costs)
        verdict = "PASS" if cost <= MAX_COST_PCT else "MISS"
        verdicts.append(f"{verdict}  /v1/messages, non-stream c32: {cost:.1f} % fewer req/s than /v1/chat/completions "
                        f"(target <= {MAX_COST_PCT:g} %; rounds {', '.join(f'{c:.1f}' for c in costs)})")  # fmt: skip
    for line in verdicts:
        print(line)
    for problem in problems:
        print(f"PROBLEM  {problem}")
    out = RESULTS_DIR / "messages.json"
    summary = {"git": git_state(), "duration_s": duration, "rounds": rounds, "verdicts": verdicts, "problems": problems}
    out.write_text(json.dumps({**summary, "runs": [r.__dict__ | {"raw": ""} for r in runs]}, indent=2))
    print(f"results written to {out.relative_to(RESULTS_DIR.parent.parent)}")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover - run through bench/run
    sys.exit("run this through bench/run --messages")
