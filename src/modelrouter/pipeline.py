"""One request, from a parsed body to an answer: route -> select instance -> adapt -> send -> adapt back.

The front door (``front/asgi.py``) parses and validates the HTTP request and hands this module a payload; this
module returns a ``Response`` or a ``StreamResponse`` and never touches ASGI. The routing table is read once per
request, so a config swap mid-request cannot mix two configs.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .adapters.base import MAX_EVENT_BYTES, StreamTranslator
from .auth import Principal
from .config.model import RetryConfig
from .endpoints import Endpoint
from .errors import (
    GatewayError,
    InvalidRequest,
    NoUsableInstance,
    RateLimited,
    UpstreamConnectError,
    UpstreamInvalid,
    UpstreamInvalidResponse,
    UpstreamResponseTooLarge,
    UpstreamStatusError,
    UpstreamTimeout,
    echo,
)
from .fallback import StaleCaches
from .front.multipart import Form
from .metrics import Metrics
from .observe import RequestTrace, Span
from .postprocess import EmbeddingsB64, RerankShape
from .redaction import ContentMasks
from .routing.instance import Instance
from .routing.router import Pool, RoutingTable
from .speedups import JSON_INVALID, JSON_UNKNOWN, JSON_WITHOUT_USAGE, json_kind
from .upstream.base import Transport, UpstreamRequest, UpstreamResponse
from .usage import Meter, StreamUsageTap, add_usage, lacks_usage, with_usage

__all__ = ["ClientInfo", "Pipeline", "Response", "StreamResponse"]

log = logging.getLogger("modelrouter.pipeline")

_JSON = b"application/json"
# Answers whose usage the gateway counts when the upstream reports none, and the header that then says so.
_COUNTED = frozenset({"chat", "completions", "embeddings"})
_ESTIMATED = (b"x-modelrouter-usage", b"estimated")
# Answers up to this size have their usage read after the request, in a batch, when only observability needs
# it; larger ones at once (holding many large answers for a batch would cost memory).
_DEFER_USAGE_MAX = 16 * 1024
# Largest upstream error body read: it only becomes the client's error message (normalised, or passed on), and
# an error page has no reason to be long. Beyond it the body is dropped and the upstream's status kept.
_MAX_ERROR_BODY = 1024 * 1024
# Endpoints whose answer the gateway passes on untranslated, and which some servers answer with the file itself
# (an image, an audio file) rather than JSON: such an answer is streamed through like speech, never held whole
# (images may be tens of megabytes). Text answers (JSON, transcripts as text/srt/vtt) are read, under the cap.
_BINARY_PASSTHROUGH = frozenset({"transcriptions", "translations", "image_generations", "image_edits"})
_BINARY_TYPES = ("image/", "audio/", "video/", "application/octet-stream")


@dataclass(slots=True)
class ClientInfo:
    ip: str | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    principal: Principal | None = None  # the client's API key, when auth is on
    meter: Meter | None = None  # set when limits, usage records or observability need this request's facts
    trace: RequestTrace | None = None  # set when tracing is on

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class StreamResponse:
    """A streamed answer. ``aclose`` must be called on every path (the front door does it in ``finally``); it
    releases the upstream connection and the instance's in-flight count exactly once."""

    __slots__ = (
        "_closed",
        "_first",
        "_instance",
        "_out",
        "_resp",
        "_translator",
        "headers",
        "meter",
        "sent_at",
        "span",
        "sse",
        "status",
    )

    def __init__(
        self,
        resp: UpstreamResponse,
        instance: Instance,
        translator: StreamTranslator | None,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._resp = resp
        self._instance = instance
        self._translator = translator
        self._closed = False
        self._first = b""
        self._out = self._produce()
        self.status = resp.status
        self.headers = headers
        # SSE streams end with an error event when the upstream fails; binary streams just break off.
        self.sse = translator is not None
        # Set (with sent_at) when metrics are on: the stream's upstream duration goes into it when it ends.
        self.meter: Meter | None = None
        self.sent_at = 0.0
        self.span: Span | None = None  # the upstream call's trace span, when tracing

    async def prime(self) -> None:
        """Read until the first bytes for the client exist (or the body ended). Until then nothing has reached
        the client, so a backend that stalls or breaks before its first token can still be failed over."""
        async for out in self._out:
            self._first = out
            # From the first event on, only the idle timeout bounds each wait (first_byte covered this one).
            self._resp.first_event()
            return

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._first:
            yield self._first
            self._first = b""
        async for out in self._out:
            yield out

    async def _produce(self) -> AsyncIterator[bytes]:
        translator = self._translator
        try:
            if translator is None:
                async for chunk in self._resp.iter_chunks():
                    yield chunk
                return
            try:
                async for chunk in self._resp.iter_chunks():
                    out = translator.feed(chunk)
                    if out:
                        yield out
                out = translator.end()
            except (ValueError, KeyError, TypeError) as exc:
                # The upstream sent something its dialect does not allow (bad JSON line, early end).
                if isinstance(exc, orjson.JSONDecodeError):
                    raise UpstreamInvalidResponse(f"the backend sent a stream that is not JSON: {exc}") from None
                raise UpstreamInvalid(f"the backend sent an invalid stream: {exc}") from None
            if out:
                yield out
        except GatewayError as exc:
            self._instance.breaker.record(False, probe=False)
            if self.span is not None:
                self.span.end(exc)
            raise

    def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._resp.close()
            self._instance.release()
            if self.meter is not None:
                self.meter.answer_s = time.perf_counter() - self.sent_at
            if self.span is not None:
                self.span.end()  # no-op if a broken stream already ended it with its error


class Pipeline:
    def __init__(self, table: RoutingTable, transport: Transport) -> None:
        self.table = table
        self.transport = transport
        self.stale = StaleCaches()
        self.masks: ContentMasks | None = None  # request/response masking rules, when configured
        # Limits with `scope: instance`: (endpoint, model, instance id) -> a refusal, or None to go ahead.
        self.instance_limits: Callable[[Endpoint, str, str], RateLimited | None] | None = None
        self.metrics: Metrics | None = None  # upstream timings, retries and fallbacks, when metrics are on
        self.max_event_bytes = MAX_EVENT_BYTES  # server.max_event_bytes: what a stream may hold of one event

    def swap(self, table: RoutingTable) -> None:
        """Install a new routing table; requests already running keep the one they started with."""
        self.table = table

    async def forward(
        self, endpoint: Endpoint, payload: dict[str, Any] | Form, client: ClientInfo
    ) -> Response | StreamResponse:
        """Try the model's instances, then its fallback models, until one answers; see docs/resilience.md."""
        table = self.table
        model = payload.get("model")
        if model is None:
            # Only endpoints where OpenAI makes `model` optional get here (the front door checked the rest).
            model = table.only_model(endpoint.service)
            if model is None:
                raise InvalidRequest(
                    "Invalid request: missing required parameter 'model' (this service serves several models)",
                    param="model",
                    code="missing_parameter",
                )
        principal = client.principal
        # A restricted key learns only of the names it may use (as in GET /v1/models).
        may_use = principal.may_use if principal is not None and (principal.models or principal.services) else None
        pool = table.resolve(endpoint.service, model, may_use)
        if principal is not None:
            principal.check(endpoint.service, model, pool.model)
        meter = client.meter
        if meter is not None:
            meter.model = pool.model

        stale = self.stale.get(pool) if isinstance(payload, dict) and payload.get("stream") is not True else None
        stale_key = stale.key(endpoint, payload) if stale is not None and isinstance(payload, dict) else None
        if self.masks is not None and isinstance(payload, dict):
            self.masks.mask_request(payload)
        call = _Call(endpoint, payload, model, client)
        retry = pool.retry
        deadline = None if retry.deadline is None else time.monotonic() + retry.deadline
        tried: list[Instance] = []
        failure: GatewayError | None = None
        metrics = self.metrics
        trace = client.trace
        for current in (pool, *table.fallback_pools(pool)) if pool.fallbacks else (pool,):
            key = _hash_key(current.hash_on, payload, client) if current.balancer.needs_key else None
            for _ in range(current.retry.attempts):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if trace is None:
                    instance = current.select(key, tried)
                else:
                    with trace.child("routing") as span:
                        instance = current.select(key, tried)
                        span.set("modelrouter.model", current.model)
                        span.set("modelrouter.instance", instance.name if instance is not None else "")
                if instance is None:
                    break
                if tried and metrics is not None:
                    metrics.count(metrics.retries, (endpoint.service, pool.model))
                tried.append(instance)
                if (
                    self.instance_limits is not None
                    and (refusal := self.instance_limits(endpoint, call.model, instance.id)) is not None
                ):
                    failure = refusal  # this instance is at its limit: another may not be
                    continue
                try:
                    result = await self._attempt(call, instance, current.retry, deadline)
                except GatewayError as exc:
                    if not _retryable(exc, current.retry):
                        raise
                    failure = exc
                    continue
                if stale is not None and stale_key is not None and type(result) is Response and result.status < 300:
                    stale.put(stale_key, result)
                if current is not pool and metrics is not None:
                    metrics.count(metrics.fallbacks, (endpoint.service, pool.model))
                return result
        # Every instance (and fallback model) failed, or none was usable.
        if stale is not None and stale_key is not None and (cached := stale.lookup(stale_key)) is not None:
            return cached
        default = pool.settings.default_response
        if default is not None and not call.wants_stream:
            return Response(default.status, _default_headers(default.headers), orjson.dumps(default.body))
        if failure is not None:
            raise failure
        pools = (pool, *table.fallback_pools(pool)) if pool.fallbacks else (pool,)
        raise NoUsableInstance(
            f"no usable instance for model '{echo(model)}' ({_why_unusable(pool)})", retry_after=_usable_in(pools)
        )

    async def _attempt(
        self, call: _Call, instance: Instance, retry: RetryConfig, deadline: float | None
    ) -> Response | StreamResponse:
        """One try on one instance. Raises GatewayError; the caller decides whether another try is worth it."""
        endpoint, payload = call.endpoint, call.payload
        url = instance.urls.get(endpoint.name)
        if url is None:
            raise InvalidRequest(
                f"The model '{echo(call.model)}' is served by a {instance.adapter.name} backend, which has no "
                f"{endpoint.path} endpoint",
                param="model",
                code="unsupported_endpoint",
            )
        body: Any
        if isinstance(payload, Form):
            content_type, length, body = payload.encode({"model": instance.upstream_model})
            headers = {**instance.headers, "Content-Type": content_type, "Content-Length": str(length)}
        else:
            body = instance.adapter.request_body(endpoint, payload, instance.upstream_model)
            headers = instance.json_headers
        timeouts = instance.timeouts
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.001)
            if timeouts.total is None or timeouts.total > left:
                timeouts = timeouts.model_copy(update={"total": left})
        meter = call.client.meter
        trace = call.client.trace
        span = None
        if trace is not None:
            span = trace.child("upstream")
            span.set("modelrouter.instance", instance.name)
            headers = span.inject(dict(headers))
        request = UpstreamRequest("POST", url, headers, body, timeouts)

        breaker = instance.breaker
        probe = breaker.on_send()
        instance.acquire()
        if meter is not None:
            meter.attempts += 1
        started = time.perf_counter()
        try:
            resp = await self.transport.send(request)
            to_headers = time.perf_counter() - started
            instance.observe_latency(to_headers)
        except BaseException as exc:
            if meter is not None:
                meter.upstream_s += time.perf_counter() - started
            if span is not None:
                span.end(exc)
            instance.release()
            if isinstance(exc, GatewayError):
                breaker.record(False, probe)
                log.warning("%s: %s", instance.id, exc.message)
                exc.message = f"{exc.message} (model '{echo(call.model)}')"
            elif probe:
                breaker.release_probe()  # cancelled (client gone): no verdict on the backend
            raise

        streaming = False
        try:
            status = resp.status
            if span is not None:
                span.set("http.response.status_code", status)
            if status >= 400:
                breaker.record(not _backend_failure(status), probe)
                if status in (429, 503):
                    _cool_down(instance, resp, retry)
                try:
                    raw = await resp.read(_MAX_ERROR_BODY)
                    ctype = resp.content_type
                except UpstreamResponseTooLarge:
                    # The status is what matters (retries and breakers go by it); the body would only become
                    # the message of the client's error.
                    raw, ctype = b"upstream answered an error body over 1 MiB (not passed on)", "text/plain"
                raise UpstreamStatusError(status, raw, ctype, _passed_headers(resp))
            binary = endpoint.output == "binary" or (
                endpoint.name in _BINARY_PASSTHROUGH and _is_binary(resp.content_type)
            )
            if binary or (call.wants_stream and instance.adapter.is_stream(resp.content_type)):
                translator = None
                out_headers = resp.header_items()
                if isinstance(payload, dict) and not binary:
                    translator = instance.adapter.stream_translator(endpoint, payload, self.max_event_bytes)
                    if meter is not None or call.supply_usage:
                        tap = StreamUsageTap(
                            translator,
                            strip=meter is not None and meter.strip_usage,
                            text=endpoint.name == "completions",
                            tools=bool(payload.get("tools") or payload.get("functions")),
                            supply=payload if call.supply_usage else None,
                        )
                        translator = tap
                        if meter is not None:
                            meter.tap = tap
                    out_headers = [*_SSE_HEADERS, *_passed_headers(resp)]
                stream = StreamResponse(resp, instance, translator, out_headers)
                streaming = True
                try:
                    await stream.prime()
                    first = time.perf_counter() - started
                    if meter is not None:
                        meter.upstream_s += first
                        meter.ttft_s = first
                        if self.metrics is not None:  # observed in the batch, once the stream ended
                            meter.upstream_labels = instance.labels
                            meter.answer_s = first  # until aclose has the whole duration
                            stream.meter, stream.sent_at = meter, started
                except BaseException as exc:
                    streaming = False  # released below, like any failed attempt
                    if isinstance(exc, GatewayError):
                        # _produce counted it as a plain failure; a probe must also give back its slot.
                        if probe:
                            breaker.record(False, probe)
                        log.warning("%s: %s", instance.id, exc.message)
                    elif probe:
                        breaker.release_probe()
                    raise
                breaker.record(True, probe)
                stream.span = span  # ended when the stream ends, with its error if it breaks off
                if meter is not None:
                    meter.instance = instance.name
                    meter.status = resp.status
                return stream
            try:
                raw = await resp.read(instance.max_response_bytes)
            except GatewayError as exc:
                breaker.record(False, probe)
                log.warning("%s: %s", instance.id, exc.message)
                raise
            except asyncio.CancelledError:
                if probe:
                    breaker.release_probe()
                raise
            # The verdict on the backend waits until its answer was checked below (no await in between).
        finally:
            if not streaming:
                resp.close()
                instance.release()
                total = time.perf_counter() - started
                if meter is not None:
                    meter.upstream_s += total
                if span is not None:
                    span.end(sys.exc_info()[1])

        if meter is not None:
            if self.metrics is not None:  # observed in the batch, with the request's counts (observe.py)
                meter.upstream_labels = instance.labels
                meter.answer_s = total
            meter.ttft_s = to_headers
            meter.instance = instance.name
            meter.status = resp.status
        # A 2xx of a JSON endpoint must be JSON; no-content statuses have no body to check.
        check = resp.status < 300 and resp.status not in (204, 205)
        if isinstance(payload, Form):
            # Multipart endpoints may answer text (transcriptions as text/srt/vtt): checked when they claim JSON.
            if check and _claims_json(resp.content_type) and not _is_json(raw):
                raise self._invalid(instance, probe, call, "not valid JSON")
            breaker.record(True, probe)
            return Response(resp.status, resp.header_items(), raw)
        estimated = False
        try:
            translated = instance.adapter.response_body(endpoint, payload, raw)
            if call.post is not None:
                translated = call.post.apply(translated if translated is not None else raw)
                estimated = isinstance(call.post, RerankShape) and call.post.estimated
            # An answer without usage (some servers never report it) gets the gateway's count, marked as such.
            counted = None
            if check and translated is None:
                # Passed through byte for byte, so nothing parsed it on the way (a translation, the embeddings
                # and rerank post-processing do): the whole body must be checked, as garbage may be anywhere in
                # it (a peek at the first and last byte passes a truncated or spliced answer). json_kind scans it
                # without building objects, ~3x faster than orjson.loads (docs/resilience.md), and tells whether
                # the usage is there; only an answer that lacks it is parsed, to add it.
                kind = json_kind(raw)
                if kind == JSON_INVALID:
                    raise _NotJSON
                if kind == JSON_UNKNOWN or (kind == JSON_WITHOUT_USAGE and endpoint.name in _COUNTED):
                    data = orjson.loads(raw)
                    if endpoint.name in _COUNTED and isinstance(data, dict):
                        counted = add_usage(endpoint.name, payload, data)
            elif endpoint.name in _COUNTED and translated is not None and lacks_usage(translated):
                counted = with_usage(endpoint.name, payload, translated)
            if counted is not None:
                translated, estimated = counted, True
        except (orjson.JSONDecodeError, _NotJSON):
            raise self._invalid(instance, probe, call, "not valid JSON") from None
        except GatewayError:
            breaker.record(False, probe)
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            breaker.record(False, probe)
            log.warning("%s: the backend sent an invalid answer: %s", instance.id, exc)
            raise UpstreamInvalid(f"the backend sent an invalid answer: {exc} (model '{echo(call.model)}')") from None
        breaker.record(True, probe)
        if self.masks is not None:
            translated = self.masks.mask_response(translated if translated is not None else raw)
        if meter is not None:
            # For metrics and the access log only, the usage is read in a batch, off the request path.
            meter.body = translated if translated is not None else raw
            if meter.needs_usage or len(meter.body) > _DEFER_USAGE_MAX:
                meter.read_body()  # limits and quotas settle with it as soon as the request ends
        if translated is None:
            return Response(resp.status, resp.header_items(), raw)
        if estimated:
            return Response(resp.status, [(b"content-type", _JSON), _ESTIMATED], translated)
        return Response(resp.status, [(b"content-type", _JSON)], translated)

    @staticmethod
    def _invalid(instance: Instance, probe: bool, call: _Call, what: str) -> UpstreamInvalidResponse:
        """A 2xx that is not what the endpoint answers: the instance is broken (a failure for its breaker), and
        the error is retryable, so the request fails over."""
        instance.breaker.record(False, probe)
        log.warning("%s: the backend sent a 2xx answer that is %s", instance.id, what)
        return UpstreamInvalidResponse(f"the backend sent an answer that is {what} (model '{echo(call.model)}')")


class _Call:
    """What one client request needs across its tries: prepared once, reused for every instance."""

    __slots__ = ("client", "endpoint", "model", "payload", "post", "supply_usage", "wants_stream")

    def __init__(self, endpoint: Endpoint, payload: dict[str, Any] | Form, model: str, client: ClientInfo) -> None:
        self.endpoint = endpoint
        self.payload = payload
        self.model = model
        self.client = client
        self.post: EmbeddingsB64 | RerankShape | None = None
        self.wants_stream = False
        self.supply_usage = False  # the client asked for stream usage: supplied if the upstream sends none
        if isinstance(payload, dict):
            if endpoint.name == "embeddings":
                self.post = EmbeddingsB64.prepare(payload)
            elif endpoint.name == "rerank":
                self.post = RerankShape.prepare(payload, model)
            self.wants_stream = endpoint.output == "sse" and payload.get("stream") is True
            options = payload.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            self.supply_usage = self.wants_stream and asked
            meter = client.meter
            if meter is not None and meter.needs_usage and self.wants_stream and not asked:
                # Ask for usage in the stream; as the client did not, its extra chunk is removed again.
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                meter.strip_usage = True


def _why_unusable(pool: Pool) -> str:
    now = time.monotonic()
    counts: dict[str, int] = {}
    for inst in pool.instances:
        why = (
            "unhealthy"
            if not inst.healthy
            else "cooling down after Retry-After"
            if inst.cooldown_until > now
            else f"circuit {inst.breaker.state.replace('_', '-')}"
        )
        counts[why] = counts.get(why, 0) + 1
    return ", ".join(f"{n} {why}" for why, n in counts.items()) or "no instances"


def _usable_in(pools: tuple[Pool, ...]) -> float | None:
    """Seconds until the first instance of ``pools`` is expected to be usable again (a cool-down ending, a
    breaker going half-open), for the 503's Retry-After; None when no instance's wait is known. A client told
    when to come back does not retry in a tight loop, nor give up on a backend that is back in seconds."""
    now = time.monotonic()
    waits = [w for p in pools for inst in p.instances if (w := inst.usable_in(now)) is not None]
    return min(waits) if waits else None


def _is_binary(content_type: str | None) -> bool:
    """Whether a content type is a file's (image, audio, video, octet-stream) rather than JSON or text."""
    return content_type is not None and content_type.lstrip().lower().startswith(_BINARY_TYPES)


class _NotJSON(Exception):
    """An answer the compiled scan found not to be JSON (what orjson.JSONDecodeError says when it parses)."""


def _is_json(raw: bytes) -> bool:
    kind = json_kind(raw)
    if kind != JSON_UNKNOWN:
        return kind != JSON_INVALID
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def _claims_json(content_type: str | None) -> bool:
    """Whether a content type says JSON (application/json, application/*+json), parameters aside."""
    if content_type is None:
        return False
    mime = content_type.partition(";")[0].strip().lower()
    return mime.endswith(("/json", "+json"))


def _backend_failure(status: int) -> bool:
    """Whether an error status says the backend is in trouble (a client's own 4xx says nothing about it)."""
    return status >= 500 or status in (408, 429)


def _retryable(exc: GatewayError, retry: RetryConfig) -> bool:
    # Only failures before any byte reached the client get here: attempts return before streaming starts.
    if isinstance(exc, UpstreamStatusError):
        return exc.status in retry.on_status
    return isinstance(exc, UpstreamConnectError | UpstreamTimeout | UpstreamInvalid)


def _cool_down(instance: Instance, resp: UpstreamResponse, retry: RetryConfig) -> None:
    """Honour Retry-After (seconds or an HTTP date) by keeping requests away from the instance until then."""
    for k, v in resp.header_items():
        if k == b"retry-after":
            seconds = _retry_after_seconds(v.decode("latin-1"))
            if seconds is not None and seconds > 0:
                instance.cooldown_until = time.monotonic() + min(seconds, retry.max_retry_after)
            return


def _retry_after_seconds(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _default_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if not any(k == b"content-type" for k, _ in out):
        out.append((b"content-type", _JSON))
    return out


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

# Upstream headers that matter to a client even when the body is the gateway's own (errors, SSE): when to retry,
# rate-limit state, and the request id to quote in a bug report.
_PASSED_HEADER_PREFIXES = (b"retry-after", b"x-ratelimit-", b"x-request-id")


def _passed_headers(resp: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in resp.header_items() if k.startswith(_PASSED_HEADER_PREFIXES)]


def _hash_key(hash_on: str, payload: dict[str, Any] | Form, client: ClientInfo) -> str | None:
    if hash_on == "user":
        user = payload.get("user")
        if isinstance(user, str) and user:
            return user
    elif hash_on.startswith("header:"):
        value = client.header(hash_on[7:].lower().encode())
        if value:
            return value
    return client.ip
