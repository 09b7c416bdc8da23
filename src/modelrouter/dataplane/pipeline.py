"""One request, from a parsed body to an answer: route -> select instance -> adapt -> send -> adapt back.

The front door (``front.py``) parses and validates the HTTP request and hands this module a payload; this
module returns a ``Response`` or a ``StreamResponse`` and never touches ASGI. Everything config-made comes in the
request's ``Bundle`` (read once by the front door), so a config swap mid-request cannot mix two configs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from ..adapters.base import NativeEvents
from ..config.model import RetryConfig
from ..endpoints import Endpoint
from ..errors import (
    GatewayError,
    InvalidRequest,
    NoUsableInstance,
    UpstreamConnectError,
    UpstreamResponseTooLarge,
    UpstreamStatusError,
    echo,
)
from ..http.multipart import Form
from ..resilience.retry import backend_failure, cool_down, retryable, usable_in
from ..resilience.stale import StaleCaches
from ..routing.instance import Instance
from ..upstream.base import Transport, UpstreamRequest, UpstreamResponse
from .answers import ESTIMATED, claims_json, invalid, is_json, translate
from .attempt import Attempt
from .bundle import Bundle
from .context import Call, ClientInfo
from .responses import Response, StreamResponse
from .usage_tap import StreamUsageTap

__all__ = ["Pipeline"]

log = logging.getLogger("modelrouter.pipeline")

_JSON = b"application/json"
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


class Pipeline:
    """The request path past the front door. It holds only what outlives a config (the transport, the stale
    caches); what depends on the config comes with each request in its ``Bundle``."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.stale = StaleCaches()

    async def forward(
        self, bundle: Bundle, endpoint: Endpoint, payload: dict[str, Any] | Form, client: ClientInfo
    ) -> Response | StreamResponse:
        """Try the model's instances, then its fallback models, until one answers; see docs/resilience.md."""
        table = bundle.table
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
        if bundle.masks is not None and isinstance(payload, dict):
            bundle.masks.mask_request(payload)
        call = Call(bundle, endpoint, payload, model, client)
        retry = pool.retry
        deadline = None if retry.deadline is None else time.monotonic() + retry.deadline
        tried: list[Instance] = []
        failure: GatewayError | None = None
        metrics = bundle.metrics
        instance_limits = bundle.instance_limits
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
                    instance_limits is not None
                    and (refusal := await instance_limits(endpoint, call.model, instance.id)) is not None
                ):
                    failure = refusal  # this instance is at its limit: another may not be
                    continue
                try:
                    result = await self._attempt(call, instance, current.retry, deadline)
                except GatewayError as exc:
                    if not retryable(exc, current.retry):
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
        hint = "" if pool.unavailable is None else f". {pool.unavailable}"  # how to bring the model up
        if failure is not None:
            if hint and isinstance(failure, UpstreamConnectError):  # down, not yet found unhealthy
                failure.message += hint
            raise failure
        pools = (pool, *table.fallback_pools(pool)) if pool.fallbacks else (pool,)
        instances = [inst for p in pools for inst in p.instances]
        why = f"no usable instance for model '{echo(model)}' ({pool.why_unusable()}){hint}"
        raise NoUsableInstance(why, retry_after=usable_in(instances))

    async def _attempt(
        self, call: Call, instance: Instance, retry: RetryConfig, deadline: float | None
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
        if instance.adapter.varies_url and isinstance(payload, dict):
            url = instance.adapter.request_url(url, payload)
        body: Any
        if isinstance(payload, Form):
            content_type, length, body = payload.encode({"model": instance.upstream_model})
            headers = {**instance.headers, "Content-Type": content_type, "Content-Length": str(length)}
        else:
            if (native := call.native_for(instance.adapter)) is not None:
                # The backend speaks the front door's dialect: the client's own request, only the model renamed.
                body = orjson.dumps({**native, "model": instance.upstream_model})
                url = instance.urls.get("native", url)
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

        attempt = Attempt(instance, meter, span)
        try:
            resp = await self.transport.send(request)
        except BaseException as exc:
            if meter is not None:
                meter.upstream_s += attempt.elapsed()
            if isinstance(exc, GatewayError):
                attempt.judge(False, exc)
                log.warning("%s: %s", instance.id, exc.message)
                exc.message = f"{exc.message} (model '{echo(call.model)}')"
            attempt.finish(exc)  # cancelled (client gone): abandoned, no verdict on the backend
            raise
        to_headers = attempt.elapsed()
        instance.observe_latency(to_headers)
        if span is not None:
            span.set("http.response.status_code", resp.status)
        try:
            if resp.status >= 400:
                await self._refused(call, attempt, resp, retry)
            binary = endpoint.output == "binary" or (
                endpoint.name in _BINARY_PASSTHROUGH and _is_binary(resp.content_type)
            )
            if binary or (call.wants_stream and instance.adapter.is_stream(resp.content_type)):
                return await self._stream(call, attempt, resp, binary)
            # Read here rather than in _answer: one coroutine layer fewer for every resumption of the read.
            try:
                raw = await resp.read(instance.max_response_bytes)
            except GatewayError as exc:
                log.warning("%s: %s", instance.id, exc.message)
                raise
            finally:
                resp.close()
                total = attempt.elapsed()
                if meter is not None:
                    meter.upstream_s += total
            return self._answer(call, attempt, resp, raw, to_headers, total)
        except BaseException as exc:
            if attempt.finished:  # a stream that broke before its first output closed itself
                raise
            resp.close()
            if isinstance(exc, GatewayError):
                attempt.judge(False, exc)
            attempt.finish(exc)
            raise

    @staticmethod
    async def _refused(call: Call, attempt: Attempt, resp: UpstreamResponse, retry: RetryConfig) -> None:
        """An error status: the breaker's verdict by what it says of the backend, a cool-down on 429/503, and the
        error the client gets (raised)."""
        status = attempt.instance.adapter.upstream_status(resp.status)
        attempt.judge(not backend_failure(status), status)
        if status in (429, 503):
            cool_down(attempt.instance, resp.header_items(), retry)
        try:
            raw = await resp.read(_MAX_ERROR_BODY)
            ctype = resp.content_type
        except UpstreamResponseTooLarge:
            # The status is what matters (retries and breakers go by it); the body would only become the message
            # of the client's error.
            raw, ctype = b"upstream answered an error body over 1 MiB (not passed on)", "text/plain"
        raise UpstreamStatusError(status, raw, ctype, _passed_headers(resp.header_items()))

    @staticmethod
    async def _stream(call: Call, attempt: Attempt, resp: UpstreamResponse, binary: bool) -> StreamResponse:
        """A streamed answer, read up to its first output: until then it can still fail over."""
        endpoint, payload, meter = call.endpoint, call.payload, call.client.meter
        translator = None
        out_headers = resp.header_items()  # read once: a transport builds the list on each call
        adapter = attempt.instance.adapter
        passed = call.native_for(adapter) is not None
        if isinstance(payload, dict) and not binary:
            make = adapter.native_meter if passed else adapter.stream_translator
            translator = make(endpoint, payload, call.bundle.max_event_bytes)
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
            out_headers = [*_SSE_HEADERS, *_passed_headers(out_headers)]
        if translator is not None and passed:
            # The client gets the backend's own events; the translation still runs, for the usage tap.
            translator = NativeEvents(translator, call.bundle.max_event_bytes)
        stream = StreamResponse(resp, attempt, translator, out_headers)
        stream.native = passed and translator is not None
        try:
            await stream.prime()
        except GatewayError as exc:
            log.warning("%s: %s", attempt.instance.id, exc.message)
            raise
        finally:
            first = attempt.elapsed()
            if meter is not None:
                meter.upstream_s += first
        if meter is not None:
            meter.ttft_s = first
            if call.bundle.metrics is not None:  # observed in the batch, once the stream ended
                meter.upstream_labels = attempt.instance.labels
                meter.answer_s = first  # until the stream's close has the whole duration
                stream.timed = True
            meter.instance = attempt.instance.name
            meter.status = resp.status
        return stream

    @staticmethod
    def _answer(
        call: Call, attempt: Attempt, resp: UpstreamResponse, raw: bytes, to_headers: float, total: float
    ) -> Response:
        """A non-streamed answer, read: checked, translated, and the attempt finished."""
        payload, meter, instance = call.payload, call.client.meter, attempt.instance
        # A 2xx of a JSON endpoint must be JSON; no-content statuses have no body to check.
        check = resp.status < 300 and resp.status not in (204, 205)
        headers: list[tuple[bytes, bytes]]
        if isinstance(payload, Form):
            # Multipart endpoints may answer text (transcriptions as text/srt/vtt): checked when they claim JSON.
            if check and claims_json(resp.content_type) and not is_json(raw):
                raise invalid(instance, call, "not valid JSON")
            translated: bytes | None = None
            headers = resp.header_items()
        else:
            translated, estimated = translate(call, instance, raw, check)
            masks = call.bundle.masks
            if masks is not None:
                translated = masks.mask_response(translated if translated is not None else raw)
            if translated is None:
                headers = resp.header_items()
            elif estimated:
                headers = [(b"content-type", _JSON), ESTIMATED]
            else:
                headers = [(b"content-type", _JSON)]
        attempt.judge(True)
        attempt.finish()
        body = translated if translated is not None else raw
        if meter is not None:
            if call.bundle.metrics is not None:  # observed in the batch, with the request's counts (observe.py)
                meter.upstream_labels = instance.labels
                meter.answer_s = total
            meter.ttft_s = to_headers
            meter.instance = instance.name
            meter.status = resp.status
            if not isinstance(payload, Form):
                # For metrics and the access log only, the usage is read in a batch, off the request path.
                meter.body = body
                if meter.needs_usage or len(body) > _DEFER_USAGE_MAX:
                    meter.read_body()  # limits and quotas settle with it as soon as the request ends
        if call.native_for(instance.adapter) is not None and 200 <= resp.status < 300:
            return Response(resp.status, headers, body, raw)
        return Response(resp.status, headers, body)


def _is_binary(content_type: str | None) -> bool:
    """Whether a content type is a file's (image, audio, video, octet-stream) rather than JSON or text."""
    return content_type is not None and content_type.lstrip().lower().startswith(_BINARY_TYPES)


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


def _passed_headers(items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Of a backend's headers (``header_items()``, which a transport builds on each call), those passed on."""
    return [(k, v) for k, v in items if k.startswith(_PASSED_HEADER_PREFIXES)]


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
