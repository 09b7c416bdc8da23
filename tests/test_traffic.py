"""Rate limits, token limits, quotas, concurrency caps and usage records, through the openai SDK."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from .fakes import FakeOpenAI
from .servers import GatewayServer

KEY = "mr-traffic-key-0123456789abcdefghijklmn"
USER = [{"role": "user", "content": "hi"}]


def _client(gw: GatewayServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def _start(start_upstream, start_gateway, **extra: Any) -> tuple[FakeOpenAI, GatewayServer]:
    fake, url = start_upstream("a")
    config: dict[str, Any] = {"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}, **extra}
    return fake, start_gateway(config)


def test_global_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(start_upstream, start_gateway) -> None:
    _, gw = _start(start_upstream, start_gateway, limits=[{"scope": "global", "rate": 2, "period": 60}])
    client = _client(gw)
    for _ in range(2):
        client.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=USER)
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert refused.value.body["type"] == "rate_limit_error"  # type: ignore[index]


def test_limits_by_ip_and_user_scope_count_separately(start_upstream, start_gateway) -> None:
    _, gw = _start(start_upstream, start_gateway, limits=[{"scope": "user", "rate": 1, "period": 60}])
    client = _client(gw)
    client.chat.completions.create(model="m", messages=USER, user="alice")
    client.chat.completions.create(model="m", messages=USER, user="bob")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=USER, user="alice")


def _keyed(start_upstream, start_gateway, quotas: dict[str, Any]) -> tuple[FakeOpenAI, GatewayServer]:
    return _start(
        start_upstream, start_gateway, auth={"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": quotas}]}
    )


def test_tpm_refuses_once_real_usage_reaches_the_limit(start_upstream, start_gateway) -> None:
    # The fake reports 8 tokens a request; estimates (max_tokens=1) are smaller: real usage must be what counts.
    _, gw = _keyed(start_upstream, start_gateway, {"tokens_per_minute": 30})
    client = _client(gw)
    for _ in range(4):  # 32 tokens used: over the limit
        client.chat.completions.create(model="m", messages=USER, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=USER, max_tokens=1)
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "30"


def test_tpm_counts_streamed_usage_and_hides_the_usage_chunk(start_upstream, start_gateway) -> None:
    fake, gw = _keyed(start_upstream, start_gateway, {"tokens_per_minute": 30})
    client = _client(gw)
    for _ in range(4):  # each stream reports 5 + 3 = 8 tokens in its usage chunk
        chunks = list(client.chat.completions.create(model="m", messages=USER, max_tokens=1, stream=True))
        assert chunks
        # The client did not ask for usage: the chunk the gateway asked for is not passed on.
        assert all(c.usage is None and c.choices for c in chunks)
        assert fake.last.json["stream_options"] == {"include_usage": True}
    with pytest.raises(openai.RateLimitError):
        list(client.chat.completions.create(model="m", messages=USER, max_tokens=1, stream=True))


def test_client_that_asks_for_stream_usage_still_gets_it(start_upstream, start_gateway) -> None:
    _, gw = _keyed(start_upstream, start_gateway, {"tokens_per_minute": 1000})
    chunks = list(
        _client(gw).chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8


def test_daily_request_quota_is_insufficient_quota(start_upstream, start_gateway) -> None:
    _, gw = _keyed(start_upstream, start_gateway, {"daily_requests": 2})
    client = _client(gw)
    for _ in range(2):
        client.chat.completions.create(model="m", messages=USER)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=USER)
    assert refused.value.code == "insufficient_quota"
    assert "retry-after" in refused.value.response.headers


def test_max_concurrent_requests_per_key(start_upstream, start_gateway) -> None:
    fake, gw = _keyed(start_upstream, start_gateway, {"max_concurrent": 1})
    fake.delay = 0.5
    results: list[Any] = []

    def slow() -> None:
        results.append(_client(gw).chat.completions.create(model="m", messages=USER))

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 2
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError):
        _client(gw).chat.completions.create(model="m", messages=USER)
    thread.join(5)
    assert len(results) == 1
    # The slot is free again once the first request ended.
    assert _client(gw).chat.completions.create(model="m", messages=USER)


def _cli(data_dir: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "modelrouter", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _works(gw: GatewayServer, key: str) -> bool:
    resp = httpx2.post(
        gw.url + "/v1/chat/completions",
        json={"model": "m", "messages": USER},
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    return resp.status_code == 200


def test_keys_from_the_cli_are_honoured_within_a_second(start_upstream, start_gateway, tmp_path: Path) -> None:
    _, gw = _start(start_upstream, start_gateway, auth={"enabled": True}, store={"data_dir": str(tmp_path)})
    out = _cli(tmp_path, "keys", "create", "cli-key")
    secret = next(line.split()[1] for line in out.splitlines() if line.startswith("secret:"))
    created = time.monotonic()
    assert _wait(lambda: _works(gw, secret), 1.5), "a key created by the CLI was not accepted"
    assert time.monotonic() - created < 1.5
    key_id = next(line.split()[0] for line in _cli(tmp_path, "keys", "list").splitlines() if "cli-key" in line)
    _cli(tmp_path, "keys", "revoke", key_id)
    assert _wait(lambda: not _works(gw, secret), 1.5), "a key revoked by the CLI still worked"


def test_usage_records_reach_the_store(start_upstream, start_gateway, tmp_path: Path, bg) -> None:
    _, gw = _start(
        start_upstream,
        start_gateway,
        auth={"enabled": True, "keys": [{"name": "k", "key": KEY}]},
        store={"data_dir": str(tmp_path)},
        usage={"flush_interval": 0.1},
    )
    client = _client(gw)
    client.chat.completions.create(model="m", messages=USER)
    list(client.chat.completions.create(model="m", messages=USER, stream=True))
    store = gw.gateway.store
    assert store is not None

    def records() -> list[Any]:
        return bg.run(store.query_usage())

    assert _wait(lambda: len(records()) == 2, 3)
    by_endpoint = sorted(records(), key=lambda r: r.ts)
    for record in by_endpoint:
        assert record.key_id == "config:k"
        assert record.model == "m"
        assert record.status == 200
        assert record.prompt_tokens == 5
        assert record.completion_tokens == 3
        assert record.instance
        assert record.instance == "m#1"  # the public name, as in x-modelrouter-instance
        assert record.latency_ms is not None
        assert record.latency_ms > 0
    assert by_endpoint[1].ttft_ms is not None


def test_instance_limits_send_requests_to_another_instance_then_refuse(start_upstream, start_gateway) -> None:
    a, url_a = start_upstream("a")
    b, url_b = start_upstream("b")
    gw = start_gateway(
        {
            "limits": [{"scope": "instance", "rate": 2, "period": 60}],
            "services": {
                "chat": {
                    "load_balance": "random",
                    "instances": [{"name": "m", "base_url": url_a}, {"name": "m", "base_url": url_b}],
                }
            },
        }
    )
    client = _client(gw, "x")
    for _ in range(4):  # two per instance: whichever the balancer picks, the full one is skipped
        client.chat.completions.create(model="m", messages=USER)
    assert len(a.requests) == 2
    assert len(b.requests) == 2
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=USER)
    assert "retry-after" in refused.value.response.headers


def test_daily_quota_survives_a_restart(start_upstream, start_gateway, tmp_path: Path) -> None:
    fake, url = start_upstream("a")
    config = {
        "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": {"daily_requests": 3}}]},
        "store": {"data_dir": str(tmp_path)},
        "usage": {"flush_interval": 0.05},
        "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
    }
    first = start_gateway(config)
    for _ in range(2):
        _client(first).chat.completions.create(model="m", messages=USER)
    first.stop()  # flushes the usage records to the store
    second = start_gateway(config)
    _client(second).chat.completions.create(model="m", messages=USER)  # the third of today
    with pytest.raises(openai.RateLimitError) as refused:
        _client(second).chat.completions.create(model="m", messages=USER)
    assert refused.value.code == "insufficient_quota"
    assert len(fake.requests) == 3
