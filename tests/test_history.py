"""The traffic history the console charts (GET /admin/api/metrics/history): percentiles read from histogram
buckets, deltas between samples, and, against a real gateway, store and loopback upstreams, the points that
requests sent with the openai SDK make — per model and per instance — with the upstream's tokens and a failing
instance's error rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from modelrouter.observability.history import History, quantile
from modelrouter.observability.meter import Ended, Meter
from modelrouter.observability.metrics import Metrics

from .fakes import FakeOpenAI
from .servers import GatewayServer

PASSWORD = "history-test-password-1"


def test_quantiles_interpolate_within_a_bucket() -> None:
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(0.05)  # half way up the first bucket
    assert quantile(0.5, bounds, [0, 4, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.99, bounds, [50, 0, 50, 0]) == pytest.approx(0.2 + 0.2 * 49 / 50)
    assert quantile(0.99, bounds, [1, 0, 0, 9]) == 0.4  # in +Inf: the last finite bound, not infinity


def _ended(model: str, status: int, seconds: float, prompt: int = 0, completion: int = 0) -> Ended:
    meter = Meter()
    meter.model = model
    meter.prompt_tokens, meter.completion_tokens = prompt, completion
    meter.upstream_labels = ("chat", "a")
    meter.ttft_s, meter.answer_s = seconds / 2, seconds
    return ("chat", meter, status, seconds, 0.0, "store:1", None)


def test_a_point_holds_what_changed_since_the_last_sample() -> None:
    metrics = Metrics()
    metrics.model_names = frozenset({"m"})
    now = [1000.0]
    history = History(lambda: metrics, lambda: [(("chat", "a"), 0.25)], interval=10, keep=3, clock=lambda: now[0])
    metrics.ended([_ended("m", 200, 0.3, 10, 20)])  # before the baseline: not in any point
    assert history.sample() is None
    now[0] += 10
    metrics.ended([_ended("m", 200, 0.02, 5, 5)] * 8 + [_ended("m", 503, 0.02)] + [_ended("m", 400, 0.02)])
    point = history.sample()
    assert point is not None
    model = point["models"]["m"]
    assert model["requests"] == 10
    assert model["rps"] == 1.0
    assert model["error_rate"] == 0.1  # the 5xx share
    assert model["client_error_rate"] == 0.1
    assert 10 < model["p50_ms"] <= 25  # 20 ms, in the 10-25 ms bucket
    assert model["prompt_tokens"] == 40
    assert model["tokens_per_min"] == 80 * 60 / 10
    assert point["models"]["*"]["requests"] == 10
    instance = point["instances"]["a"]
    assert instance["service"] == "chat"
    assert instance["requests"] == 10
    assert 5 < instance["ttft_p50_ms"] <= 10
    assert instance["error_rate"] == 0.25
    now[0] += 10
    quiet = history.sample()
    assert quiet is not None
    assert "m" not in quiet["models"]  # nothing happened
    assert quiet["instances"]["a"]["requests"] == 0
    assert [p["t"] for p in history.since(1010.0)] == [1020.0]
    for _ in range(3):
        now[0] += 10
        history.sample()
    assert len(history.points) == 3  # keep bounds it


@pytest.fixture
def gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> tuple[FakeOpenAI, GatewayServer]:
    _, good_url = start_upstream("good")
    bad, bad_url = start_upstream("bad")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "usage": {"enabled": True},
            "health_check": {"enabled": False},
            "observability": {"history_interval": 0.2},
            "retry": {"attempts": 1},
            "services": {
                "chat": {
                    "instances": [
                        {"name": "qwen", "id": "qwen-1", "base_url": good_url},
                        {"name": "broken", "id": "broken-1", "base_url": bad_url},
                    ]
                }
            },
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD, "viewer"))
    return bad, gw


def _history(gw: GatewayServer, token: str, since: float | None = None) -> dict[str, Any]:
    params = {"since": str(since)} if since is not None else {}
    reply = httpx2.get(
        gw.url + "/admin/api/metrics/history", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_requests_show_in_the_history_per_model_and_instance(gateway: tuple[FakeOpenAI, GatewayServer]) -> None:
    bad, gw = gateway
    login = httpx2.post(gw.url + "/admin/api/login", json={"username": "ops", "password": PASSWORD}, timeout=5)
    token = login.json()["token"]
    assert httpx2.get(gw.url + "/admin/api/metrics/history", timeout=5).status_code == 401
    first = _history(gw, token)
    assert first["enabled"] is True
    assert first["interval"] == 0.2
    started = time.time()

    bad.fail("/v1/chat/completions", 500, {"error": {"message": "down", "type": "server_error"}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(5):
        client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    deadline = time.monotonic() + 10
    while True:
        points = _history(gw, token, since=started)["data"]
        requests = sum(p["models"].get("qwen", {}).get("requests", 0) for p in points)
        failed = sum(p["models"].get("broken", {}).get("requests", 0) for p in points)
        if (requests, failed) == (5, 5) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (requests, failed) == (5, 5)  # every request in exactly one point
    assert all(p["t"] > started for p in points)
    qwen = [p["models"]["qwen"] for p in points if "qwen" in p["models"]]
    assert sum(m["prompt_tokens"] for m in qwen) == 25  # the upstream's usage: 5 + 3 per answer
    assert sum(m["completion_tokens"] for m in qwen) == 15
    assert all(m["error_rate"] == 0 for m in qwen)
    broken = [p["models"]["broken"] for p in points if "broken" in p["models"]]
    assert all(m["error_rate"] == 1.0 for m in broken)
    assert sum(p["instances"]["qwen-1"]["requests"] for p in points) == 5
    assert any(p["instances"]["qwen-1"]["ttft_p50_ms"] is not None for p in points)
    assert points[-1]["instances"]["broken-1"]["error_rate"] == 1.0  # the breaker window: every attempt failed
    assert "127.0.0.1" not in str(points)  # clients never learn the topology, admins see instance names


def test_no_history_without_metrics(
    start_gateway: Callable[..., GatewayServer], tmp_path: Any, start_upstream: Callable[..., tuple[FakeOpenAI, str]]
) -> None:
    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "usage": {"enabled": True},
            "observability": {"history_interval": 0},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD, "viewer"))
    token = httpx2.post(gw.url + "/admin/api/login", json={"username": "ops", "password": PASSWORD}, timeout=5).json()
    body = _history(gw, token["token"])
    assert body["enabled"] is False
    assert body["data"] == []
