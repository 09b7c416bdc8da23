"""The gateway's cost on a real local model: tokens per second of the local pack's chat model (SmolLM2-135M via
llama.cpp, modelrouter.local.chat) streamed directly and through the gateway, in one run.

One client at a time (a model on two cores is decode-bound: more clients only share the same tokens/s), each
request streaming ``--tokens`` completion tokens (``ignore_eos`` so every answer is the same length, temperature
0); the two targets alternate for ``--rounds`` rounds of ``REQUESTS`` requests. Tokens/s is completion tokens over
the time from sending the request to the stream's end; the time to the first token is reported beside it. The
verdict: through the gateway at most 2 % fewer tokens/s than direct (medians of the rounds).

Entry point: ``bench/run --local`` (see bench/README.md). Needs the local pack (``pip install -e '.[local]'``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import httpx

# bench.py registers itself as "bench" before importing this module, so these are its own objects.
from bench import HOST, RESULTS_DIR, BenchError, Children, free_port, git_state, wait_ready

REQUESTS = 4
MAX_COST_PCT = 2.0
MODEL = "smollm2-135m-instruct"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def _stream_once(url: str, model: str, tokens: int) -> tuple[int, float, float]:
    """(completion tokens, seconds to the stream's end, seconds to the first content)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    used = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as answer:
        if answer.status_code != 200:
            raise BenchError(f"{url} answered {answer.status_code}: {answer.read()[:300]!r}")
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", ())):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                used = int(chunk["usage"]["completion_tokens"])
    total = time.perf_counter() - started
    if used == 0 or first is None:
        raise BenchError(f"{url}: a stream without content or usage")
    return used, total, first


def _write_config(chat_port: int, port: int, store: str) -> str:
    path = RESULTS_DIR / "local-gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "server": {"host": HOST, "port": port},
                "store": {"data_dir": store},
                "services": {"chat": {"instances": [{"name": MODEL, "base_url": f"http://{HOST}:{chat_port}"}]}},
            }
        )
    )
    return str(path)


def run_local(children: Children, rounds: int, tokens: int, startup_timeout: float) -> int:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    chat_port, gw_port = free_port(), free_port()
    log = RESULTS_DIR / "local-chat.log"
    chat = children.start(
        [sys.executable, "-m", "modelrouter.local.chat", "--host", HOST, "--port", str(chat_port), "--threads", "2"],
        log,
    )
    wait_ready(chat, chat_port, "/health", startup_timeout * 6, "local chat model", log)
    config = _write_config(chat_port, gw_port, str(children.tempdir("modelrouter-bench-local-")))
    gw_log = RESULTS_DIR / "local-gateway.log"
    gw = children.start([sys.executable, "-m", "modelrouter", "serve", "--config", config], gw_log)
    wait_ready(gw, gw_port, "/health", startup_timeout, "gateway", gw_log)
    targets = {"direct": f"http://{HOST}:{chat_port}", "gateway": f"http://{HOST}:{gw_port}"}
    for url in targets.values():
        _stream_once(url, MODEL, 16)  # warm-up: the prompt cache, the connection pools
    per_round: dict[str, list[float]] = {t: [] for t in targets}
    ttft: dict[str, list[float]] = {t: [] for t in targets}
    for n in range(rounds):
        for target, url in targets.items() if n % 2 == 0 else reversed(targets.items()):
            runs = [_stream_once(url, MODEL, tokens) for _ in range(REQUESTS)]
            per_round[target].append(sum(r[0] for r in runs) / sum(r[1] for r in runs))
            ttft[target].extend(r[2] for r in runs)
        print(f"round {n + 1}: " + ", ".join(f"{t} {v[-1]:.1f} tok/s" for t, v in per_round.items()), flush=True)
    direct, through = statistics.median(per_round["direct"]), statistics.median(per_round["gateway"])
    cost = (1 - through / direct) * 100
    verdict = "PASS" if cost <= MAX_COST_PCT else "MISS"
    ttft_ms = {t: round(statistics.median(v) * 1000, 1) for t, v in ttft.items()}
    print(f"\ndirect {direct:.1f} tok/s, through the gateway {through:.1f} tok/s: cost {cost:+.2f} % ", end="")
    print(f"(target <= {MAX_COST_PCT} %) {verdict}")
    print(f"time to first token (median): direct {ttft_ms['direct']} ms, gateway {ttft_ms['gateway']} ms")
    result: dict[str, Any] = {
        "git": git_state(),
        "tokens_per_request": tokens,
        "rounds": per_round,
        "direct_tok_s": round(direct, 2),
        "gateway_tok_s": round(through, 2),
        "cost_pct": round(cost, 2),
        "ttft_ms": ttft_ms,
        "verdict": verdict,
    }
    (RESULTS_DIR / "local.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if verdict == "PASS" else 3
