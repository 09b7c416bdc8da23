"""Whatever a reload can turn on works after that reload, as if the gateway had started with it: keys and their
usage records, limits, quotas (counted on from the store), metrics, the access log and tracing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer
from .test_chat import raw_request

KEY = "mr-reload-key-0123456789abcdefghijklmnop"
USER = [{"role": "user", "content": "hi"}]
StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[..., GatewayServer]


@pytest.fixture(autouse=True)
def _no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")  # tracing turned on by a reload must not reach for a collector


def _wait(condition: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)


def test_a_reload_that_turns_features_on_makes_them_work(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path, bg: BackgroundLoop
) -> None:
    fake, url = start_upstream("a")
    base: dict[str, Any] = {
        "store": {"data_dir": str(tmp_path)},
        "observability": {
            "metrics": False,
            "request_id": False,
            "headers": {"instance": False, "overhead": False, "server_timing": False},
        },
        "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
    }
    gw = start_gateway(base, config_source="file")  # as `modelrouter serve --config FILE` runs
    assert gw.gateway.accounting is None
    assert gw.gateway.recorder is None
    assert gw.gateway.observe is None
    access_log = tmp_path / "access.log"
    gw.reload(
        {
            **base,
            "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY}]},
            "usage": {"flush_interval": 0.1},
            "limits": [{"scope": "global", "rate": 2, "period": 60}],
            "observability": {"metrics": True, "access_log": True, "access_log_path": str(access_log), "tracing": True},
        }
    )
    client = _client(gw)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="mr-nope", max_retries=0).models.list()
    client.chat.completions.create(model="m", messages=USER)
    list(client.chat.completions.create(model="m", messages=USER, stream=True))
    with pytest.raises(openai.RateLimitError):  # the limit counts from the reload on
        client.chat.completions.create(model="m", messages=USER)

    # Usage records: both answered requests, for the key, with their tokens.
    store = gw.gateway.store
    assert store is not None
    assert _wait(lambda: len(bg.run(store.query_usage())) == 2), bg.run(store.query_usage())
    records = sorted(bg.run(store.query_usage()), key=lambda r: r.ts)
    assert [(r.key_id, r.status) for r in records] == [("config:k", 200), ("config:k", 200)]
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(5, 3), (5, 3)]

    # Tracing: the upstream saw a trace context.
    assert fake.requests[-1].headers.get("traceparent", "").startswith("00-")

    # Metrics and the access log.
    metrics = raw_request(gw.url, "GET", "/metrics")
    assert metrics.status == 200
    assert b"modelrouter_requests_total" in metrics.body
    assert _wait(lambda: access_log.exists() and len(access_log.read_text().splitlines()) >= 3)
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert [line["status"] for line in lines[:3]] == [200, 200, 429]


def test_quotas_turned_on_by_a_reload_count_what_the_store_recorded_today(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, url = start_upstream("a")
    services = {"chat": {"instances": [{"name": "m", "base_url": url}]}}
    store = {"data_dir": str(tmp_path)}
    keyed = {"enabled": True, "keys": [{"name": "k", "key": KEY}]}
    first = start_gateway({"store": store, "auth": keyed, "usage": {"flush_interval": 0.05}, "services": services})
    for _ in range(2):
        _client(first).chat.completions.create(model="m", messages=USER)
    first.stop()  # its usage records are written on the way out

    # The same store, a gateway with no keys at first; then a reload turns on keys with a daily quota of 3.
    second = start_gateway({"store": store, "services": services}, config_source="file")
    assert second.gateway.accounting is None
    quota = {"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": {"daily_requests": 3}}]}
    second.reload({"store": store, "auth": quota, "services": services})
    client = _client(second)
    # The seed runs in the background; until it has, a request could slip through: wait for it.
    assert _wait(lambda: second.gateway.accounting is not None and not second.gateway._tasks)
    client.chat.completions.create(model="m", messages=USER)  # the third today
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=USER)
    assert refused.value.code == "insufficient_quota"
