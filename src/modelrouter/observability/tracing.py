"""OpenTelemetry tracing (``observability.tracing: true``, ``pip install 'modelrouter[otel]'``).

Implements the ``Tracer``/``RequestTrace``/``Span`` hooks of observe.py: one SERVER span per API request (continuing
the client's W3C ``traceparent``), INTERNAL children for auth, limits and routing, and one CLIENT span per upstream
attempt whose context goes upstream in ``traceparent``. Only imported when tracing is on, so a gateway without it
neither imports OpenTelemetry nor pays anything per request.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .._version import __version__
from .meter import Meter

__all__ = ["OtelTracer"]

log = logging.getLogger("modelrouter")

# The W3C propagator directly rather than the global (configurable) one: the gateway promises traceparent in and
# out whatever else the application set up, and this one is a few string operations.
_PROPAGATOR = TraceContextTextMapPropagator()
_INTERNAL, _CLIENT, _SERVER = SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.SERVER


class _Span:
    """A step of a request (auth, limits, routing, upstream): an OpenTelemetry span behind the ``Span`` hook."""

    __slots__ = ("_ended", "_span")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._ended = False

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        # The context is built from this span explicitly: the request's task never makes it "current".
        _PROPAGATOR.inject(out, context=trace.set_span_in_context(self._span))
        return out

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:  # the pipeline may reach more than one end on some paths; the SDK would log a warning
            return
        self._ended = True
        if error is not None:
            _fail(self._span, error)
        self._span.end()

    def __enter__(self) -> _Span:
        return self

    def __exit__(self, *exc_info: object) -> None:
        error = exc_info[1] if len(exc_info) > 1 else None
        self.end(error if isinstance(error, BaseException) else None)


class _RequestTrace:
    """The request's SERVER span; children get it as their parent through an explicit context, because requests
    interleave on one event loop and the "current span" context variable cannot be trusted to be this one."""

    __slots__ = ("_context", "_span", "_tracer")

    def __init__(self, tracer: trace.Tracer, span: trace.Span) -> None:
        self._tracer = tracer
        self._span = span
        self._context = trace.set_span_in_context(span)

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def child(self, name: str) -> _Span:
        kind = _CLIENT if name == "upstream" else _INTERNAL
        return _Span(self._tracer.start_span(name, context=self._context, kind=kind))

    def end(self, status: int, meter: Meter | None) -> None:
        span = self._span
        try:
            if span.is_recording():  # sampled out: skip building attributes nobody keeps
                # Collected first and set at once: the SDK takes its attribute lock once, not per attribute.
                attributes: dict[str, str | int] = {}
                if status:
                    attributes["http.response.status_code"] = status
                # HTTP semconv: on a SERVER span only 5xx is an error; a 4xx is the client's mistake.
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                    attributes["error.type"] = str(status)
                if meter is not None:
                    if meter.model:
                        attributes["modelrouter.model"] = meter.model
                    if meter.instance:
                        attributes["modelrouter.instance"] = meter.instance
                    attributes["modelrouter.attempts"] = meter.attempts
                    if meter.prompt_tokens or meter.completion_tokens:
                        attributes["gen_ai.usage.input_tokens"] = meter.prompt_tokens
                        attributes["gen_ai.usage.output_tokens"] = meter.completion_tokens
                span.set_attributes(attributes)
        except Exception:  # tracing must never fail a request (this runs in the front door's finally)
            log.debug("tracing: could not annotate the request span", exc_info=True)
        finally:
            try:
                span.end()
            except Exception:
                log.debug("tracing: could not end the request span", exc_info=True)


class OtelTracer:
    """The ``Tracer`` hook on OpenTelemetry. Without ``tracer_provider``: the application's global provider if it
    set one, else a provider of our own configured by the standard ``OTEL_*`` variables. Never sets the global
    provider: that is the application's decision, not a library's."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._owned: SdkTracerProvider | None = None
        if tracer_provider is None:
            current = trace.get_tracer_provider()
            if isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
                tracer_provider = self._owned = _own_provider()
            else:
                tracer_provider = current
        self.provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("modelrouter", __version__)

    def start(self, scope: dict[str, Any], endpoint: str, request_id: str | None) -> _RequestTrace:
        traceparent: bytes | None = None
        tracestate: bytes | None = None
        for name, value in scope["headers"]:  # ASGI: lower-case names
            if name == b"traceparent":
                if traceparent is None:  # several: W3C says the first one counts
                    traceparent = value
            elif name == b"tracestate":  # several are one list (RFC 9110 field lines)
                tracestate = value if tracestate is None else tracestate + b"," + value
        if traceparent is not None:
            carrier = {"traceparent": traceparent.decode("latin-1")}
            if tracestate is not None:
                carrier["tracestate"] = tracestate.decode("latin-1")
            parent = _PROPAGATOR.extract(carrier)
        else:
            # An empty context, not the current one: whatever span the event loop left current is not this
            # request's parent.
            parent = Context()
        method: str = scope["method"]
        path: str = scope["path"]
        attributes: dict[str, str] = {
            "http.request.method": method,
            "url.path": path,
            "http.route": path,  # API paths are fixed (no parameters): the path is the route
            "modelrouter.endpoint": endpoint,
        }
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        if request_id:
            attributes["modelrouter.request_id"] = request_id
        span = self._tracer.start_span(f"{method} {path}", context=parent, kind=_SERVER, attributes=attributes)
        return _RequestTrace(self._tracer, span)

    def shutdown(self) -> None:
        """Flush and stop a provider this tracer made (an application's own provider is the application's)."""
        if self._owned is not None:
            self._owned.shutdown()


def _fail(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(StatusCode.ERROR, str(error) or type(error).__name__)


def _own_provider() -> SdkTracerProvider:
    """A provider like the OpenTelemetry SDK's autoconfiguration would make, but for the gateway only."""
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, the SDK's defaults
    if not OTELResourceDetector().detect().attributes.get(SERVICE_NAME):
        # Neither variable named the service: "modelrouter" beats the SDK's "unknown_service:python".
        resource = resource.merge(Resource({SERVICE_NAME: "modelrouter"}))
    # The sampler (OTEL_TRACES_SAMPLER, ..._ARG) and span limits are read from the environment by the SDK itself.
    provider = SdkTracerProvider(resource=resource)
    for exporter in _exporters(os.environ.get("OTEL_TRACES_EXPORTER", "otlp")):
        # Batched: exporting happens on the processor's thread, never on the request path.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporters(names: str) -> list[SpanExporter]:
    out: list[SpanExporter] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "console":
            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                log.warning("tracing: OTLP protocol %r is not supported; exporting with http/protobuf", protocol)
            # Imported here: only this exporter needs it. It reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS,
            # _TIMEOUT, _COMPRESSION and the certificate variables itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            out.append(OTLPSpanExporter())
        else:
            log.warning("tracing: unknown OTEL_TRACES_EXPORTER %r ignored (otlp, console or none)", name)
    return out
