"""OpenTelemetry tracing end to end: a real gateway under uvicorn, real loopback upstreams (``FakeOpenAI``) and the
official openai SDK (or httpx) as the client. Spans go to an in-memory exporter, except in the test of the default
provider, which exports over OTLP/http to a loopback collector.

What is checked: the span tree of a request (auth, limits, routing, upstream under one SERVER root), the client's
``traceparent`` continued and the upstream span's sent upstream, failover and error statuses, streams, interleaved
requests keeping their own parents, the ``OTEL_*`` configuration of the default provider, and tracing off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import openai
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelrouter.observability.tracing import OtelTracer, _exporters

from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer, UpstreamServer

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]

CHAT = "/v1/chat/completions"
ROOT = "POST /v1/chat/completions"
KEY = "mr-trace-key-0123456789abcdefghijklmnop"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
CLIENT_TRACESTATE = "vendor=abc,other=1"


@pytest.fixture(autouse=True)
def _no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tracer the gateway makes at start (replaced by the tests) must not try to reach a collector.
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.shutdown()


@pytest.fixture
def traced(start_gateway: StartGateway, exporter: InMemorySpanExporter) -> Callable[[dict[str, Any]], GatewayServer]:
    """traced(config) -> a gateway with tracing on, its spans going to ``exporter``."""

    def start(config: dict[str, Any]) -> GatewayServer:
        gw = start_gateway({**config, "observability": {"tracing": True}})
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        gw.gateway.telemetry._tracer = OtelTracer(provider)
        gw.gateway.reload(gw.gateway.config)  # a new bundle, with this tracer
        return gw

    return start


# --------------------------------------------------------------------------------------------------- helpers


def chat_config(*urls: str, model: str = "m", **top: Any) -> dict[str, Any]:
    """One chat model served by one instance per URL (round-robin tries them in this order)."""
    return {**top, "services": {"chat": {"instances": [{"name": model, "base_url": url} for url in urls]}}}


def sdk(gw: GatewayServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def hi() -> list[Any]:
    return [{"role": "user", "content": "hi"}]


def finished(exporter: InMemorySpanExporter, roots: int = 1) -> list[ReadableSpan]:
    """The finished spans once ``roots`` request spans have ended (the front door ends the root last, after the
    answer went out, so the client may be faster: poll, bounded)."""
    deadline = time.monotonic() + 10
    while True:
        spans = list(exporter.get_finished_spans())
        if sum(s.kind == SpanKind.SERVER for s in spans) >= roots:
            return spans
        if time.monotonic() > deadline:
            pytest.fail(f"{roots} request span(s) did not end; got {[s.name for s in spans]}")
        time.sleep(0.01)


def root_of(spans: list[ReadableSpan]) -> ReadableSpan:
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER]
    return root


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) as they appear in a traceparent."""
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def sent_traceparent(rec_headers: dict[str, str]) -> tuple[str, str] | None:
    """(trace id, parent span id) of the traceparent an upstream received, or None."""
    headers = {k.lower(): v for k, v in rec_headers.items()}
    value = headers.get("traceparent")
    if value is None:
        return None
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00"
    return trace_id, span_id


def assert_tree(spans: list[ReadableSpan]) -> ReadableSpan:
    """One root; every other span its child, in its trace; returns the root."""
    root = root_of(spans)
    trace_id, root_id = ids(root)
    for span in spans:
        if span is not root:
            assert ids(span)[0] == trace_id, span.name
            assert parent_id(span) == root_id, span.name
            assert span.end_time is not None
            assert root.end_time is not None
            assert span.end_time <= root.end_time
    return root


# ------------------------------------------------------------------------------------------------------ tests


def test_one_request_traces_auth_limits_routing_and_upstream(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    fake, url = start_upstream("a")
    gw = traced(chat_config(url, auth={"enabled": True, "keys": [{"name": "team", "key": KEY}]}))

    raw = sdk(gw, KEY).chat.completions.with_raw_response.create(model="m", messages=hi())
    assert raw.parse().choices[0].message.content == "hello from a"

    spans = finished(exporter)
    assert sorted(s.name for s in spans) == sorted([ROOT, "auth", "limits", "routing", "upstream"])
    root = assert_tree(spans)
    kinds = {s.name: s.kind for s in spans}
    assert kinds == {
        ROOT: SpanKind.SERVER,
        "auth": SpanKind.INTERNAL,
        "limits": SpanKind.INTERNAL,
        "routing": SpanKind.INTERNAL,
        "upstream": SpanKind.CLIENT,
    }
    assert all(s.status.status_code == StatusCode.UNSET for s in spans)

    (instance,) = gw.gateway.table.all_instances()
    attrs = dict(root.attributes or {})
    assert attrs == {
        "http.request.method": "POST",
        "url.path": CHAT,
        "http.route": CHAT,
        "client.address": "127.0.0.1",
        "modelrouter.endpoint": "chat",
        "modelrouter.request_id": raw.headers["x-request-id"],
        "http.response.status_code": 200,
        "modelrouter.model": "m",
        "modelrouter.instance": instance.name,
        "modelrouter.attempts": 1,
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 3,
    }
    (routing,) = named(spans, "routing")
    assert dict(routing.attributes or {}) == {"modelrouter.model": "m", "modelrouter.instance": instance.name}
    (upstream,) = named(spans, "upstream")
    assert dict(upstream.attributes or {}) == {"modelrouter.instance": instance.name, "http.response.status_code": 200}

    # The upstream was told it is a child of the upstream span, in the request's trace.
    (rec,) = fake.requests
    assert sent_traceparent(rec.headers) == ids(upstream)
    assert ids(upstream)[0] == ids(root)[0]


def test_the_request_span_continues_the_clients_traceparent(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    fake, url = start_upstream("a")
    gw = traced(chat_config(url))

    sdk(gw).chat.completions.create(
        model="m",
        messages=hi(),
        extra_headers={"traceparent": CLIENT_TRACEPARENT, "tracestate": CLIENT_TRACESTATE},
    )

    spans = finished(exporter)
    # No auth, no limits: no spans for them.
    assert sorted(s.name for s in spans) == sorted([ROOT, "routing", "upstream"])
    root = assert_tree(spans)
    assert ids(root)[0] == CLIENT_TRACE
    assert root.parent is not None
    assert root.parent.is_remote
    assert parent_id(root) == CLIENT_SPAN
    (upstream,) = named(spans, "upstream")
    headers = {k.lower(): v for k, v in fake.last.headers.items()}
    assert sent_traceparent(fake.last.headers) == (CLIENT_TRACE, ids(upstream)[1])
    assert headers["tracestate"] == CLIENT_TRACESTATE  # passed along the trace


def test_an_invalid_client_traceparent_starts_a_new_trace(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    fake, url = start_upstream("a")
    gw = traced(chat_config(url))

    sdk(gw).chat.completions.create(model="m", messages=hi(), extra_headers={"traceparent": "00-zz-not-a-trace"})

    root = assert_tree(finished(exporter))
    assert root.parent is None
    assert sent_traceparent(fake.last.headers) is not None
    assert sent_traceparent(fake.last.headers)[0] == ids(root)[0]  # type: ignore[index]


def test_behind_a_trusted_proxy_the_client_address_is_the_real_client(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    _, url = start_upstream("a")
    gw = traced(chat_config(url, auth={"trusted_proxies": ["127.0.0.0/8"]}))

    sdk(gw).chat.completions.create(model="m", messages=hi(), extra_headers={"X-Forwarded-For": "203.0.113.9"})

    root = assert_tree(finished(exporter))
    assert root.attributes is not None
    assert root.attributes["client.address"] == "203.0.113.9"
    # Without keys or limits the usage is otherwise read after the request; a trace still gets it.
    assert root.attributes["gen_ai.usage.input_tokens"] == 5
    assert root.attributes["gen_ai.usage.output_tokens"] == 3


def test_failover_gives_one_upstream_span_per_attempt_the_failed_one_an_error(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    bad, bad_url = start_upstream("bad")
    good, good_url = start_upstream("good")
    bad.fail(CHAT, 500, {"error": {"message": "GPU fell off", "type": "server_error"}})
    gw = traced(chat_config(bad_url, good_url, retry={"on_status": [500]}))

    out = sdk(gw).chat.completions.create(model="m", messages=hi())
    assert out.choices[0].message.content == "hello from good"

    spans = finished(exporter)
    root = assert_tree(spans)
    first, second = named(spans, "upstream")
    assert len(named(spans, "routing")) == 2
    by_url = {i.base_url: i.name for i in gw.gateway.table.all_instances()}

    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["modelrouter.instance"] == by_url[bad_url]
    assert first.attributes["http.response.status_code"] == 500
    assert first.status.status_code == StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert first.attributes["error.type"] == "UpstreamStatusError"

    assert second.attributes["modelrouter.instance"] == by_url[good_url]
    assert second.attributes["http.response.status_code"] == 200
    assert second.status.status_code == StatusCode.UNSET

    assert root.status.status_code == StatusCode.UNSET
    assert root.attributes is not None
    assert root.attributes["modelrouter.attempts"] == 2
    assert root.attributes["modelrouter.instance"] == by_url[good_url]
    # Each upstream saw its own attempt's span as its parent.
    assert sent_traceparent(bad.last.headers) == ids(first)
    assert sent_traceparent(good.last.headers) == ids(second)


def test_a_stream_is_traced_and_its_spans_end(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    fake, url = start_upstream("a")
    gw = traced(chat_config(url))

    stream = sdk(gw).chat.completions.create(
        model="m", messages=hi(), stream=True, stream_options={"include_usage": True}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "tok0 tok1 tok2 "

    spans = finished(exporter)
    assert sorted(s.name for s in spans) == sorted([ROOT, "routing", "upstream"])
    root = assert_tree(spans)
    (upstream,) = named(spans, "upstream")
    assert upstream.status.status_code == StatusCode.UNSET
    assert root.status.status_code == StatusCode.UNSET
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["gen_ai.usage.input_tokens"] == 5
    assert root.attributes["gen_ai.usage.output_tokens"] == 3
    assert sent_traceparent(fake.last.headers) == ids(upstream)


def test_only_server_errors_mark_the_request_span_as_an_error(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    picky, picky_url = start_upstream("picky")
    broken, broken_url = start_upstream("broken")
    picky.fail(CHAT, 400, {"error": {"message": "bad messages", "type": "invalid_request_error", "param": None}})
    broken.fail(CHAT, 500, {"error": {"message": "GPU fell off", "type": "server_error"}})
    gw = traced(
        {
            "services": {
                "chat": {
                    "instances": [
                        {"name": "picky", "base_url": picky_url},
                        {"name": "broken", "base_url": broken_url},
                    ]
                }
            }
        }
    )
    client = sdk(gw)

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="picky", messages=hi())
    spans = finished(exporter)
    root = assert_tree(spans)
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 400
    assert root.status.status_code == StatusCode.UNSET  # the client's mistake, not the server's
    (upstream,) = named(spans, "upstream")
    assert upstream.status.status_code == StatusCode.ERROR  # a CLIENT span: a 4xx answer is an error
    exporter.clear()

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=hi())
    root = assert_tree(finished(exporter))
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 500
    assert root.attributes["error.type"] == "500"
    assert root.status.status_code == StatusCode.ERROR


def test_a_refused_key_ends_the_trace_at_auth(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    fake, url = start_upstream("a")
    gw = traced(chat_config(url, auth={"enabled": True, "keys": [{"name": "team", "key": KEY}]}))

    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "mr-wrong-key-0123456789abcdefghijklmnopq").chat.completions.create(model="m", messages=hi())

    spans = finished(exporter)
    assert sorted(s.name for s in spans) == sorted([ROOT, "auth"])
    root = assert_tree(spans)
    (auth,) = named(spans, "auth")
    assert auth.status.status_code == StatusCode.ERROR
    assert [e.name for e in auth.events] == ["exception"]
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 401
    assert root.status.status_code == StatusCode.UNSET
    assert fake.requests == []


def test_interleaved_requests_keep_their_own_parents(
    start_upstream: StartUpstream, traced: Callable[[dict[str, Any]], GatewayServer], exporter: InMemorySpanExporter
) -> None:
    fake, url = start_upstream("a")
    fake.delay = 0.05  # keeps the requests in flight together on the gateway's one event loop
    gw = traced(chat_config(url))
    count = 12
    traces = [f"{i + 1:032x}" for i in range(count)]

    def call(trace_id: str) -> int:
        reply = httpx2.post(
            gw.url + CHAT,
            json={"model": "m", "messages": hi()},
            headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"},
            timeout=10,
        )
        return reply.status_code

    with ThreadPoolExecutor(count) as pool:
        assert list(pool.map(call, traces)) == [200] * count

    spans = finished(exporter, roots=count)
    by_trace: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(ids(span)[0], []).append(span)
    assert sorted(by_trace) == traces
    for group in by_trace.values():
        assert sorted(s.name for s in group) == sorted([ROOT, "routing", "upstream"])
        assert_tree(group)
    # And every upstream request carried its own request's trace, parented on its own upstream span.
    upstream_ids = {ids(s) for s in spans if s.name == "upstream"}
    assert {sent_traceparent(r.headers) for r in fake.requests} == upstream_ids


def test_tracing_off_costs_nothing_and_sends_no_traceparent(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(chat_config(url))
    assert gw.gateway.observe is not None  # metrics and request ids are on by default
    assert gw.gateway.observe.tracer is None
    assert gw.gateway.telemetry._tracer is None

    sdk(gw).chat.completions.create(model="m", messages=hi(), extra_headers={"traceparent": CLIENT_TRACEPARENT})
    assert sent_traceparent(fake.last.headers) is None


# --------------------------------------------------------------------------------- the default provider, OTLP


class Collector:
    """An OTLP/http trace receiver on loopback: the spans and resources of every export it got."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        return app

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests.append(message)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def spans(self) -> list[tuple[dict[str, str], str, int]]:
        """(resource attributes, span name, span kind) of every span received."""
        out = []
        for message in self.requests:
            for resource_spans in message.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out += [(resource, s.name, s.kind) for s in scope_spans.spans]
        return out


def test_the_default_provider_exports_over_otlp_as_the_otel_variables_say(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    bg: BackgroundLoop,
    servers: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = Collector()
    servers.append(receiver := UpstreamServer(bg, collector.app()).start())
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")  # the default: otlp
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    fake, url = start_upstream("a")
    # The gateway's own tracer, made by telemetry.py from the config, not replaced.
    gw = start_gateway({**chat_config(url), "observability": {"tracing": True}})
    tracer = gw.gateway.telemetry._tracer
    assert isinstance(tracer, OtelTracer)
    try:
        sdk(gw).chat.completions.create(model="m", messages=hi())
        assert sent_traceparent(fake.last.headers) is not None
        deadline = time.monotonic() + 10
        while not any(name == ROOT for _r, name, _k in collector.spans()):
            assert time.monotonic() < deadline, "no request span reached the collector"
            assert isinstance(tracer.provider, TracerProvider)
            tracer.provider.force_flush(5000)
            time.sleep(0.01)
    finally:
        tracer.shutdown()

    spans = collector.spans()
    assert sorted(name for _r, name, _k in spans) == sorted([ROOT, "routing", "upstream"])
    resource = spans[0][0]
    assert resource["service.name"] == "modelrouter"
    assert resource["deployment.environment"] == "test"
    # A library does not take over the application's global provider.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_otel_service_name_and_exporter_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    tracer = OtelTracer()
    assert isinstance(tracer.provider, TracerProvider)
    assert tracer.provider.resource.attributes["service.name"] == "gateway-eu"
    tracer.shutdown()

    assert _exporters("none") == []
    (console,) = _exporters(" Console , none")
    assert isinstance(console, ConsoleSpanExporter)
    assert _exporters("zipkin") == []  # unknown: warned about and ignored


def test_an_application_provider_is_used_when_it_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    tracer = OtelTracer()
    assert tracer.provider is provider
    tracer.shutdown()  # not ours: left running
    assert provider.get_tracer("x").start_span("still works").is_recording()
