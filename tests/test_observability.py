"""Metrics, the access log, request ids and the x-modelrouter-*/Server-Timing headers, through a real gateway,
real loopback upstreams and the openai SDK. Every metric family is checked by causing the event and scraping
``/metrics`` before and after: the series must move by exactly the right amount."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .fakes import FakeOpenAI
from .servers import GatewayServer

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
USER = [{"role": "user", "content": "hi"}]


def scrape(gw: GatewayServer) -> Series:
    reply = httpx2.get(gw.url + "/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    out: Series = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def delta(before: Series, after: Series, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def sdk(gw: GatewayServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, **kwargs)


@pytest.fixture
def two(start_upstream: Callable[..., tuple[FakeOpenAI, str]]) -> tuple[FakeOpenAI, str, FakeOpenAI, str]:
    a, url_a = start_upstream("a")
    b, url_b = start_upstream("b")
    return a, url_a, b, url_b


def test_requests_durations_tokens_and_upstream_timings(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url, _, _ = two
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    instance = "m#1"  # the public name: never the URL (clients must not learn the topology)
    before = scrape(gw)
    sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    after = scrape(gw)
    assert delta(before, after, "modelrouter_requests_total", endpoint="chat", model="m", status="200") == 1
    assert delta(before, after, "modelrouter_request_duration_seconds_count", endpoint="chat", model="m") == 1
    assert delta(before, after, "modelrouter_request_duration_seconds_sum", endpoint="chat", model="m") > 0
    # The fake upstream reports 5 prompt and 3 completion tokens.
    assert delta(before, after, "modelrouter_tokens_total", model="m", key="none", kind="prompt") == 5
    assert delta(before, after, "modelrouter_tokens_total", model="m", key="none", kind="completion") == 3
    for name in ("modelrouter_upstream_duration_seconds_count", "modelrouter_upstream_ttft_seconds_count"):
        assert delta(before, after, name, service="chat", instance=instance) == 1
    assert (
        delta(
            before, after, "modelrouter_upstream_duration_seconds_bucket", service="chat", instance=instance, le="+Inf"
        )
        == 1
    )
    assert value(after, "modelrouter_instance_in_flight", service="chat", instance=instance) == 0
    assert value(after, "modelrouter_instance_healthy", service="chat", instance=instance) == 1
    assert value(after, "modelrouter_instance_breaker_state", service="chat", instance=instance) == 0
    assert value(after, "modelrouter_build_info", version=__import__("modelrouter").__version__) == 1

    # A name nobody configured is not a label value: it is counted as "none" (it never resolved).
    with pytest.raises(openai.NotFoundError):
        sdk(gw).chat.completions.create(model="../../etc/passwd", messages=USER)  # type: ignore[arg-type]
    later = scrape(gw)
    assert delta(after, later, "modelrouter_requests_total", endpoint="chat", model="none", status="404") == 1
    assert not any("passwd" in str(labels) for _, labels in later)


def test_streams_count_ttft_duration_and_tokens(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url, _, _ = two
    fake.stream_events = 4
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    instance = "m#1"
    before = scrape(gw)
    chunks = list(
        sdk(gw).chat.completions.create(
            model="m",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert chunks[-1].usage is not None
    after = scrape(gw)
    assert delta(before, after, "modelrouter_requests_total", endpoint="chat", model="m", status="200") == 1
    assert delta(before, after, "modelrouter_upstream_ttft_seconds_count", service="chat", instance=instance) == 1
    assert delta(before, after, "modelrouter_upstream_duration_seconds_count", service="chat", instance=instance) == 1
    assert delta(before, after, "modelrouter_tokens_total", model="m", key="none", kind="completion") == 4
    # Without a key or limits the gateway does not change the client's request to ask for usage.
    list(sdk(gw).chat.completions.create(model="m", messages=USER, stream=True))  # type: ignore[arg-type]
    assert "stream_options" not in json.loads(fake.requests[-1].body)


def test_failover_retries_and_fallbacks(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    a, url_a, _, url_b = two
    a.fail("/v1/chat/completions", 500, {"error": {"message": "boom", "type": "server_error"}})
    gw = start_gateway(
        {
            "retry": {"on_status": [500]},
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "models": {"small": {"fallbacks": ["big"]}},
                    "instances": [
                        {"name": "m", "base_url": url_a},
                        {"name": "m", "base_url": url_b},
                        {"name": "small", "base_url": url_a},
                        {"name": "big", "base_url": url_b},
                    ],
                }
            },
        }
    )
    before = scrape(gw)
    answers = [sdk(gw).chat.completions.create(model="m", messages=USER).choices[0].message.content for _ in range(4)]  # type: ignore[arg-type]
    assert set(answers) == {"hello from b"}
    after = scrape(gw)
    # Round robin sends two of the four to a first; each of those is retried on b.
    assert delta(before, after, "modelrouter_retries_total", service="chat", model="m") == 2
    assert delta(before, after, "modelrouter_requests_total", endpoint="chat", model="m", status="200") == 4
    assert sdk(gw).chat.completions.create(model="small", messages=USER).choices[0].message.content == "hello from b"  # type: ignore[arg-type]
    later = scrape(gw)
    assert delta(after, later, "modelrouter_fallbacks_total", service="chat", model="small") == 1


def test_rate_limit_refusals_by_scope(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url, _, _ = two
    gw = start_gateway(
        {
            "limits": [{"scope": "ip", "rate": 1, "period": 3600}],
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    before = scrape(gw)
    sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    after = scrape(gw)
    assert delta(before, after, "modelrouter_rate_limited_total", scope="ip") == 2
    assert delta(before, after, "modelrouter_requests_total", endpoint="chat", model="m", status="429") == 2


def test_breaker_health_in_flight_and_active_gauges(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    a, url_a, b, url_b = two
    a.fail("/v1/chat/completions", 500, {"error": {"message": "boom", "type": "server_error"}})
    gw = start_gateway(
        {
            "breaker": {"consecutive_failures": 2, "open_for": 60},
            "services": {
                "chat": {"instances": [{"name": "m", "base_url": url_a}, {"name": "slow", "base_url": url_b}]},
            },
        }
    )
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    series = scrape(gw)
    assert value(series, "modelrouter_instance_breaker_state", service="chat", instance="m#1") == 2
    assert value(series, "modelrouter_instance_breaker_state", service="chat", instance="slow#1") == 0

    b.delay = 1.0
    done = threading.Event()
    threading.Thread(
        target=lambda: (sdk(gw).chat.completions.create(model="slow", messages=USER), done.set()),  # type: ignore[arg-type]
        daemon=True,
    ).start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        series = scrape(gw)
        if value(series, "modelrouter_instance_in_flight", service="chat", instance="slow#1") == 1:
            break
        time.sleep(0.02)
    assert value(series, "modelrouter_instance_in_flight", service="chat", instance="slow#1") == 1
    assert value(series, "modelrouter_active_requests") == 1
    assert done.wait(5)
    series = scrape(gw)
    assert value(series, "modelrouter_instance_in_flight", service="chat", instance="slow#1") == 0
    assert value(series, "modelrouter_active_requests") == 0


def test_usage_record_drops_and_config_version(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url, _, _ = two
    # A buffer of one record that is flushed only after a minute: the 2nd and 3rd records are dropped.
    gw = start_gateway(
        {
            "usage": {"enabled": True, "buffer": 1, "flush_interval": 60, "batch": 100},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        },
        config_source="store",
    )
    before = scrape(gw)
    assert value(before, "modelrouter_config_version") == 1
    for _ in range(3):
        sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    after = scrape(gw)
    assert delta(before, after, "modelrouter_usage_records_dropped_total") == 2
    control = gw.gateway.control
    assert control is not None
    doc = control.document()
    doc["aliases"] = {"gpt-4o": "m"}
    gw.bg.run(control.change(doc, author="test", comment="alias", based_on=1))
    assert value(scrape(gw), "modelrouter_config_version") == 2


def test_request_id_headers_and_access_log(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    _, url, _, _ = two
    log_path = tmp_path / "access.log"
    key = "mr-observed-key-0123456789abcdefghij"
    gw = start_gateway(
        {
            "auth": {"enabled": True, "keys": [{"name": "team", "key": key}]},
            "observability": {"access_log": True, "access_log_path": str(log_path)},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    secret_prompt = "the-prompt-must-never-be-logged"
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": secret_prompt}], extra_headers={"X-Request-ID": "trace-me-42"}
    )
    assert raw.headers["x-request-id"] == "trace-me-42"
    assert raw.headers["x-modelrouter-instance"] == "m#1"
    overhead = float(raw.headers["x-modelrouter-overhead-ms"])
    assert 0 <= overhead < 1000
    timing = raw.headers["server-timing"]
    assert timing.startswith(f"gateway;dur={overhead:.3f}, upstream;dur=")
    generated = client.chat.completions.with_raw_response.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert len(generated.headers["x-request-id"]) == 16
    # An unusable client id (spaces) is replaced; an error answer carries the id too.
    bad = httpx2.post(
        gw.url + "/v1/chat/completions",
        json={"model": "nope", "messages": USER},
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": "has spaces in it"},
        timeout=10,
    )
    assert bad.status_code == 404
    assert bad.headers["x-request-id"] != "has spaces in it"
    assert len(bad.headers["x-request-id"]) == 16

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log_path.read_text().splitlines() if log_path.exists() else []) < 3:
        time.sleep(0.05)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [
        "trace-me-42",
        generated.headers["x-request-id"],
        bad.headers["x-request-id"],
    ]
    first = lines[0]
    assert first["key_id"] == "config:team"
    assert (first["endpoint"], first["model"], first["instance"], first["status"]) == (
        "chat",
        "m",
        "m#1",
        200,
    )
    assert (first["prompt_tokens"], first["completion_tokens"], first["retries"]) == (5, 3, 0)
    assert first["latency_ms"] >= first["upstream_ms"] > 0
    assert lines[2]["status"] == 404
    text = log_path.read_text()
    assert secret_prompt not in text
    assert key not in text
    assert key[-8:] not in text


def test_everything_switched_off(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url, _, _ = two
    off = {
        "metrics": False,
        "request_id": False,
        "headers": {"instance": False, "overhead": False, "server_timing": False},
    }
    gw = start_gateway({"observability": off, "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    assert gw.gateway.observe is None  # nothing is paid per request
    raw = sdk(gw).chat.completions.with_raw_response.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert not {"x-request-id", "x-modelrouter-instance", "x-modelrouter-overhead-ms", "server-timing"} & set(
        raw.headers
    )
    assert httpx2.get(gw.url + "/metrics", timeout=10).status_code == 404
    # Switched on again by a reload, without a restart; counters start from what this process counted.
    gw.reload(
        {"health_check": {"enabled": False}, "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}}
    )
    sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert value(scrape(gw), "modelrouter_requests_total", endpoint="chat", model="m", status="200") == 1


def test_access_log_without_keys_still_has_token_counts(
    two: tuple[FakeOpenAI, str, FakeOpenAI, str], start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    """Without keys or limits the usage is read after the request, in a batch: the line must still carry it."""
    _, url, _, _ = two
    log_path = tmp_path / "access.log"
    gw = start_gateway(
        {
            "observability": {"access_log": True, "access_log_path": str(log_path)},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    for _ in range(3):
        sdk(gw).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log_path.read_text().splitlines() if log_path.exists() else []) < 3:
        time.sleep(0.05)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(line["prompt_tokens"], line["completion_tokens"], line["key_id"]) for line in lines] == [(5, 3, None)] * 3
    series = scrape(gw)
    assert value(series, "modelrouter_tokens_total", model="m", key="none", kind="prompt") == 15


@pytest.mark.parametrize("path", ["compiled", "pure-python"])
def test_access_log_lines_survive_any_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """A batch is serialised in one go: strings that look like the cut between lines (quotes, braces,
    newlines, '},{"ts":') must stay inside their own line, and times come out in milliseconds; whether the
    compiled helper writes the lines or orjson does."""
    from modelrouter import speedups
    from modelrouter.observability import observe
    from modelrouter.observability.meter import Ended, Meter
    from modelrouter.observability.observe import AccessLog

    if path == "compiled" and speedups.json_lines is None:
        pytest.skip("modelrouter._speedups is not built (no C compiler at install time)")
    if path == "pure-python":
        monkeypatch.setattr(observe, "compiled_json_lines", None)

    def ended(text: str, at: float) -> Ended:
        meter = Meter()
        meter.request_id = meter.model = text
        meter.attempts, meter.upstream_s, meter.prompt_tokens, meter.bytes_out = 2, 0.01, 3, 99
        return ("chat", meter, 200, 0.0123456, at, None, "10.0.0.1")

    log_path = tmp_path / "access.log"
    log = AccessLog(str(log_path))
    nasty = ['},{"ts":1}', 'a"b\\c', "line\nbreak", "ünïcødé ✓", "}{", ""]
    now = time.perf_counter()
    log.write([ended(text, now) for text in nasty])
    last = Meter()
    last.ttft_s = 0.25
    log.write([("embeddings", last, 499, 0.5, now + 1, "k1", None)])
    log.close()
    lines = log_path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["request_id"] for r in records[:-1]] == nasty
    assert [r["model"] for r in records[:-1]] == nasty
    first = records[0]
    assert abs(first["ts"] - time.time()) < 5
    assert records[-1]["ts"] - first["ts"] == pytest.approx(1, abs=0.002)
    # Milliseconds to the microsecond (truncated).
    assert (first["latency_ms"], first["upstream_ms"], first["ttft_ms"]) == (12.345, 10.0, None)
    assert (first["retries"], first["prompt_tokens"], first["bytes_out"]) == (1, 3, 99)
    final = records[-1]
    assert (final["status"], final["key_id"], final["ttft_ms"], final["retries"]) == (499, "k1", 250.0, 0)
    assert (final["endpoint"], final["client_ip"], final["model"]) == ("embeddings", None, None)
    assert list(first) == [
        "ts", "request_id", "client_ip", "key_id", "endpoint", "model", "instance", "status", "latency_ms",
        "upstream_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "retries", "bytes_out",
    ]  # fmt: skip


def test_a_mixed_batch_is_counted_per_label_exactly() -> None:
    """Metrics.ended reuses a series while consecutive requests share labels: any change of endpoint, model,
    status or key must still land in the right series."""
    from modelrouter.observability.meter import Ended, Meter
    from modelrouter.observability.metrics import Metrics

    metrics = Metrics()
    metrics.model_names = frozenset({"m1", "m2"})

    def ended(endpoint: str, model: str | None, status: int, key: str | None, tokens: tuple[int, int]) -> Ended:
        meter = Meter()
        meter.model = model
        meter.prompt_tokens, meter.completion_tokens = tokens
        return (endpoint, meter, status, 0.003, 0.0, key, None)

    batch = [
        ended("chat", "m1", 200, "k1", (1, 2)),
        ended("chat", "m1", 200, "k1", (1, 2)),
        ended("chat", "m1", 200, "k2", (10, 20)),
        ended("chat", "m1", 200, "k1", (1, 2)),
        ended("chat", "m1", 429, "k1", (0, 0)),
        ended("chat", "m2", 200, "k1", (100, 200)),
        ended("embeddings", "m2", 200, "k1", (5, 0)),
        ended("chat", "unknown", 200, None, (7, 7)),
        ended("chat", None, 400, None, (0, 0)),
        ended("chat", "m1", 200, "k1", (1, 2)),
    ]
    metrics.ended(batch[:6])
    metrics.ended(batch[6:])
    counts = {labels: series[:-1] for labels, series in metrics.requests.series.items()}
    assert {labels: sum(c) for labels, c in counts.items()} == {
        ("chat", "m1", "200"): 5,
        ("chat", "m1", "429"): 1,
        ("chat", "m2", "200"): 1,
        ("embeddings", "m2", "200"): 1,
        ("chat", "other", "200"): 1,
        ("chat", "none", "400"): 1,
    }
    assert metrics.requests.series[("chat", "m1", "200")][-1] == pytest.approx(5 * 0.003)
    assert metrics.tokens == {
        ("m1", "k1"): [4, 8],
        ("m1", "k2"): [10, 20],
        ("m2", "k1"): [105, 200],
        ("other", "none"): [7, 7],
    }
