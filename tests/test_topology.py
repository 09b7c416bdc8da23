"""Clients never learn the topology: instance names instead of URLs in headers and metrics, no credentials in
base_url, /metrics off the public port, echoed input cut short, and a Retry-After on every 503 that knows
when an instance is back."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import yaml

from modelrouter.config.load import ConfigError, parse_config

from .fakes import FakeOpenAI
from .servers import GatewayServer, free_port
from .test_lifecycle import wait_until

USER = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


def chat(gw: GatewayServer, model: str = "m", **headers: str) -> httpx2.Response:
    return httpx2.post(gw.url + CHAT, json={"model": model, "messages": USER}, headers=headers, timeout=10)


def hostport(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


# --- instance names --------------------------------------------------------------------------------------------


def test_clients_and_metrics_see_instance_names_never_urls(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url_a = start_upstream("a")
    _, url_b = start_upstream("b")
    _, url_c = start_upstream("c")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "instances": [
                        {"name": "m", "base_url": url_a},
                        {"name": "m", "base_url": url_b},
                        {"name": "m", "base_url": url_c, "id": "gpu-box-3"},
                    ],
                }
            }
        }
    )
    seen = {chat(gw).headers["x-modelrouter-instance"] for _ in range(6)}
    # The default is "<name>#<n>", n counting same-named instances from 1 (the third has an operator's id).
    assert seen == {"m#1", "m#2", "gpu-box-3"}
    metrics = httpx2.get(gw.url + "/metrics", timeout=10).text
    for url in (url_a, url_b, url_c):
        assert hostport(url) not in metrics
    for name in ("m#1", "m#2", "gpu-box-3"):
        assert f'instance="{name}"' in metrics


def test_base_url_credentials_are_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"services": {"chat": {"instances": [{"name": "m", "base_url": "http://bob:hunter2@10.0.0.5:8000"}]}}}
        )
    (problem,) = info.value.problems
    assert problem.startswith("services.chat.instances[0].base_url: must not carry credentials")
    assert "headers:" in problem
    assert "hunter2" not in problem  # the refusal must not print the secret once more


def test_instance_ids_must_be_unique_in_a_service() -> None:
    # An operator's id may not take the default name of another instance either: one header value, one series.
    instances = [{"name": "m", "base_url": "http://a"}, {"name": "x", "base_url": "http://b", "id": "m#1"}]
    with pytest.raises(ConfigError) as info:
        parse_config({"services": {"chat": {"instances": instances}}})
    assert any("'m#1' is already that of instances[0]" in p for p in info.value.problems)
    with pytest.raises(ConfigError):
        parse_config({"services": {"chat": {"instances": [{"name": "m", "base_url": "http://a", "id": "has space"}]}}})
    # The same id in two services is fine: the metrics label is (service, instance).
    parse_config(
        {
            "services": {
                "chat": {"instances": [{"name": "m", "base_url": "http://a", "id": "box"}]},
                "embedding": {"instances": [{"name": "e", "base_url": "http://a", "id": "box"}]},
            }
        }
    )


# --- /metrics off the public port ------------------------------------------------------------------------------


def test_metrics_listen_serves_metrics_on_a_second_address_only(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = start_upstream()
    port = free_port()
    gw = start_gateway(
        {
            "observability": {"metrics_listen": f"127.0.0.1:{port}"},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    assert chat(gw).status_code == 200
    assert httpx2.get(gw.url + "/metrics", timeout=10).status_code == 404
    scraped = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'modelrouter_requests_total{endpoint="chat",model="m",status="200"} 1.0' in scraped.text
    # Nothing else is served there: not the API, not the admin API.
    assert httpx2.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 404
    assert httpx2.post(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 405


def test_metrics_token_is_required_where_metrics_are_served(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = start_upstream()
    port = free_port()
    token = "scrape-token-0123456789"
    services = {"chat": {"instances": [{"name": "m", "base_url": url}]}}
    main = start_gateway({"observability": {"metrics_token": token}, "services": services})
    side = start_gateway(
        {"observability": {"metrics_listen": f"127.0.0.1:{port}", "metrics_token": token}, "services": services}
    )
    for where in (main.url + "/metrics", f"http://127.0.0.1:{port}/metrics"):
        assert httpx2.get(where, timeout=10).status_code == 401
        assert httpx2.get(where, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        good = httpx2.get(where, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert good.status_code == 200
        assert "modelrouter_build_info" in good.text
    assert side.gateway.metrics_listener is not None


def test_metrics_listen_refuses_a_bad_address() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"observability": {"metrics_listen": "9464"}})
    assert info.value.problems == [
        "observability.metrics_listen: must be host:port, e.g. 127.0.0.1:9464 (IPv6: [::1]:9464)"
    ]


def test_a_taken_metrics_address_is_an_error_not_a_silent_gap() -> None:
    # Gateway.startup awaits this: a startup that cannot bind fails (and `serve` exits), as for the main port.
    from modelrouter.observability.telemetry import MetricsListener

    listener = MetricsListener(lambda: None, lambda: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            asyncio.run(listener.start("127.0.0.1", taken.getsockname()[1]))


# --- Retry-After on 503 ----------------------------------------------------------------------------------------


def test_503_while_the_only_instance_cools_down_says_when_to_retry(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url = start_upstream()
    fake.fail(CHAT, 429, {"error": {"message": "slow down"}}, headers={"Retry-After": "30"})
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    first = chat(gw)
    assert (first.status_code, first.headers["retry-after"]) == (429, "30")  # the upstream's own, passed on
    second = chat(gw)
    assert second.status_code == 503
    assert second.json()["error"]["type"] == "overloaded_error"
    assert 29 <= int(second.headers["retry-after"]) <= 30
    assert len(fake.requests) == 1  # the cooling instance was left alone


def test_503_while_every_breaker_is_open_says_when_one_goes_half_open(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    a, url_a = start_upstream("a")
    b, url_b = start_upstream("b")
    for fake in (a, b):
        fake.fail(CHAT, 500, {"error": {"message": "boom"}})
    gw = start_gateway(
        {
            "breaker": {"consecutive_failures": 1, "open_for": 20},
            "retry": {"attempts": 2},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url_a}, {"name": "m", "base_url": url_b}]}},
        }
    )
    assert chat(gw).status_code == 500  # both tried, both breakers open now
    refused = chat(gw)
    assert refused.status_code == 503
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    assert "circuit open" in refused.json()["error"]["message"]


def test_503_without_a_known_wait_has_no_retry_after(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = start_upstream()
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    (instance,) = gw.gateway.table.all_instances()
    instance.healthy = False  # waits for a good health probe: no time is known
    refused = chat(gw)
    assert refused.status_code == 503
    assert "retry-after" not in refused.headers


# --- echoed input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", CHAT, {"model": "x" * 1_000_000, "messages": USER}),
        ("GET", "/v1/models/" + "x" * 10_000, None),
        ("GET", "/nowhere/" + "x" * 10_000, None),
        ("GET", "/v1/embeddings/" + "x" * 10_000, None),
    ],
)
def test_errors_repeat_client_input_cut_short(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    _, url = start_upstream()
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    reply = httpx2.request(method, gw.url + path, json=body, timeout=30)
    assert reply.status_code in (404, 405)
    message = reply.json()["error"]["message"]
    assert len(message) < 700, message[:300]
    assert "more characters)" in message


def test_content_type_and_restricted_model_are_cut_short(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = start_upstream()
    key = "sk-test-0123456789abcdef"
    gw = start_gateway(
        {
            "auth": {"enabled": True, "keys": [{"name": "k", "key": key, "models": ["m"]}]},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}, {"name": "big", "base_url": url}]}},
            "aliases": {"b" * 5000: "big"},
        }
    )
    auth = {"Authorization": f"Bearer {key}"}
    wrong = httpx2.post(
        gw.url + CHAT, content=b"{}", headers={**auth, "Content-Type": "text/" + "x" * 5000}, timeout=10
    )
    assert wrong.status_code == 415
    assert len(wrong.json()["error"]["message"]) < 400
    denied = httpx2.post(gw.url + CHAT, json={"model": "b" * 5000, "messages": USER}, headers=auth, timeout=10)
    assert denied.status_code == 403
    assert len(denied.json()["error"]["message"]) < 400


def test_metrics_listen_with_workers_adds_up_every_worker(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], tmp_path: Path
) -> None:
    _, upstream = start_upstream()
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "observability": {"metrics_listen": f"127.0.0.1:{metrics_port}"},
                "health_check": {"enabled": False},
                "store": {"data_dir": str(tmp_path / "data")},
                "services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}},
            }
        )
    )
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelrouter", "serve", "--config", str(config), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    scrape_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def workers_seen() -> set[str]:
        assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
        try:
            reply = httpx2.get(scrape_url, timeout=5)
        except httpx2.HTTPError:
            return set()
        return set(re.findall(r'modelrouter_build_info\{version="[^"]*",worker="(\d+)"\}', reply.text))

    try:
        wait_until(lambda: workers_seen() == {"0", "1"}, "both workers to serve metrics on the second address", 30)
        for _ in range(10):
            assert (
                httpx2.post(f"http://127.0.0.1:{port}{CHAT}", json={"model": "m", "messages": USER}).status_code == 200
            )
        assert httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404
        counted = 'modelrouter_requests_total{endpoint="chat",model="m",status="200"} 10.0'
        wait_until(
            lambda: all(counted in httpx2.get(scrape_url, timeout=5).text for _ in range(4)),
            "every scrape of the second address to count all requests",
            10,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            log.close()
    assert code == 0, (tmp_path / "gateway.log").read_text()
