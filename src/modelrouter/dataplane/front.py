"""The front door: a raw ASGI application for the data plane.

Raw ASGI rather than a framework because routing and request objects measured ~30 % of throughput here. This
module owns everything HTTP: path dispatch, body limits, content types, turning a ``GatewayError`` into an
error response (the one place that happens), and streaming with disconnect detection (a client that goes away
cancels the upstream request at once). Required fields and parameter ranges are checked by ``params.py``.

Why this module is long: one request is handled in one flat method on purpose (see FrontDoor), and the
helpers it inlines around (body reading, disconnect watching, streaming out, the error answer) are only its.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .. import console as console_assets
from ..access.admission import Ticket
from ..access.auth import Principal
from ..access.usage import estimate_prompt_tokens
from ..endpoints import ENDPOINTS_BY_PATH, Endpoint
from ..errors import (
    AuthenticationFailed,
    BodyTooLarge,
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    RequestTimeout,
    ShuttingDown,
    UnsupportedMediaType,
    echo,
)
from ..http.asgi import Message, Receive, Scope, Send
from ..http.client import client_ip
from ..http.multipart import ClientGone, Form, read_multipart
from ..observability.meter import Meter
from ..observability.observe import RequestTrace
from ..observability.telemetry import metrics_token_ok
from . import dialects
from .bundle import Bundle
from .context import ClientInfo
from .jsonbody import parse_object
from .params import check_form, check_json
from .pipeline import Pipeline
from .responses import Response, StreamResponse
from .timers import Alarm, clock

__all__ = ["FrontDoor"]

MESSAGES = ENDPOINTS_BY_PATH["/v1/messages"]
COUNT_TOKENS = "/v1/messages/count_tokens"

log = logging.getLogger("modelrouter.front")

_JSON_HEADERS = [(b"content-type", b"application/json")]


class FrontDoor:
    """The HTTP application. Subclasses add startup/shutdown work (the app factory's ``Gateway`` does).

    One request is handled in one flat method on purpose: every extra coroutine layer is re-entered on each
    resumption of the request (several per upstream exchange), and at thousands of requests per second a
    five-layer call chain measured several percent of throughput."""

    def __init__(
        self,
        pipeline: Pipeline,
        bundle: Bundle,
        *,
        startup: Callable[[], Awaitable[None]] | None = None,
        shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.pipeline = pipeline
        # What the config makes of every request (dataplane/bundle.py): replaced whole on reload, read once per
        # request.
        self.bundle = bundle
        self._startup = startup
        self._shutdown = shutdown
        # Readiness: cleared when draining for shutdown.
        self.accepting = True
        # The admin API (an ASGI app of its own) under /admin/; None: not served.
        self.admin: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self.openapi: Callable[[], bytes] | None = None  # GET /openapi.json, when the wiring provides it
        self.active = 0  # requests in progress (counted while observability is on)
        # Longest pause while reading a request body (server.body_read_timeout, read at start like the server
        # layer's client limits): then 408, connection closed.
        self.body_read_timeout = 30.0

    async def startup(self) -> None:
        """Called once before the first request."""
        if self._startup is not None:
            await self._startup()

    async def shutdown(self) -> None:
        """Called once after the server stopped taking requests."""
        if self._shutdown is not None:
            await self._shutdown()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        endpoint = ENDPOINTS_BY_PATH.get(scope["path"])
        if endpoint is None or scope["method"] != "POST":
            try:
                if scope["path"] == COUNT_TOKENS:
                    await self._count_tokens(scope, receive, send)
                else:
                    await self._other(endpoint, scope, receive, send)
            except Exception as exc:
                await _fail(send, scope, exc, None, MESSAGES if scope["path"] == COUNT_TOKENS else None)
            return
        bundle = self.bundle
        routed = endpoint  # what the gateway routes: the endpoint, or the one a front door of another API serves
        original: dict[str, Any] = {}  # a front door's request as its client sent it
        native: tuple[str, dict[str, Any]] | None = None
        form: Form | None = None
        watch: _DisconnectWatch | None = None
        ticket: Ticket | None = None
        status = 0
        obs = bundle.observe
        meter: Meter | None = None
        trace: RequestTrace | None = None
        principal: Principal | None = None
        ip: str | None = None
        started = 0.0
        if obs is not None:
            started = time.perf_counter()
            self.active += 1
        try:
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            content_type: bytes | None = None
            content_length: bytes | None = None
            authorization: bytes | None = None
            api_key: bytes | None = None
            request_id: bytes | None = None
            for k, v in headers:
                if k == b"content-type":
                    content_type = v
                elif k == b"content-length":
                    content_length = v
                elif k == b"authorization":
                    authorization = v
                elif k == b"x-api-key":
                    api_key = v
                elif k == b"x-request-id":
                    request_id = v
            accounting = bundle.accounting
            if obs is not None or accounting is not None:
                meter = Meter()
                if obs is not None:
                    if obs.request_id:
                        meter.request_id = _request_id(request_id) or obs.new_request_id()
                    if obs.tracer is not None:
                        trace = obs.tracer.start(scope, endpoint.name, meter.request_id)
            # Authenticate before reading the body: a caller without a valid key costs us nothing more.
            keys = bundle.keys
            if keys is not None:
                if trace is None:
                    principal = keys.authenticate_headers(authorization, api_key)
                else:
                    with trace.child("auth"):
                        principal = keys.authenticate_headers(authorization, api_key)

            payload: dict[str, Any] | Form
            # One alarm per request: first timing the body read, then (re-armed) watching for a disconnect.
            watch = _DisconnectWatch(receive, self.body_read_timeout)
            try:
                if endpoint.body == "json":
                    if content_type is not None and b"json" not in content_type.lower():
                        raise UnsupportedMediaType(
                            f"Content-Type must be application/json, not {echo(content_type.decode('latin-1'))}"
                        )
                    limit = bundle.max_body_bytes
                    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
                        raise BodyTooLarge(f"request body larger than the {limit} byte limit")
                    message = await receive()
                    body: bytes = message.get("body", b"")
                    if message.get("more_body", False):
                        body = await _read_rest(watch.receive, body, limit)
                    elif not body and message["type"] == "http.disconnect":
                        raise ClientGone()
                    elif len(body) > limit:
                        raise BodyTooLarge(f"request body larger than the {limit} byte limit")
                else:
                    limit = bundle.max_upload_bytes
                    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
                        raise BodyTooLarge(f"upload larger than the {limit} byte limit")
                    form = await read_multipart(
                        watch.receive,
                        content_type.decode("latin-1") if content_type else None,
                        max_bytes=limit,
                        spool_bytes=bundle.spool_bytes,
                    )
            except asyncio.CancelledError:
                if watch.body_timed_out():
                    raise RequestTimeout(
                        f"the request body stopped arriving for {self.body_read_timeout:g}s "
                        "(a body shorter than its Content-Length?)"
                    ) from None
                raise
            watch.watch_disconnect()
            if endpoint.body == "json":
                payload = parse_object(body)
                check_json(endpoint, payload, bundle.validate_parameters)
                if endpoint.serves is not None:  # another API's front door: routed as the endpoint it serves
                    original = payload
                    routed, payload = dialects.to_served(endpoint, payload)
                    native = (endpoint.dialect, original)
                    check_json(routed, payload, bundle.validate_parameters)
            else:
                assert form is not None
                payload = form
                check_form(endpoint, form, bundle.validate_parameters)

            client = scope.get("client")
            ip = client[0] if client else None
            if bundle.trusted_proxies and ip is not None:
                ip = client_ip(ip, headers, bundle.trusted_proxies)
                if trace is not None:
                    trace.set("client.address", ip)  # the client behind the trusted proxies, not the proxy
            info = ClientInfo(ip, headers, principal, meter, trace, native)
            if accounting is not None:
                assert meter is not None
                table = bundle.table
                if trace is None:
                    ticket = accounting.admit_now(endpoint, payload, ip, principal, table, meter)
                    if ticket is None:  # something in it may wait
                        ticket = await accounting.admit(endpoint, payload, ip, principal, table, meter)
                else:
                    with trace.child("limits"):
                        ticket = await accounting.admit(endpoint, payload, ip, principal, table, meter)
                if accounting.recorder is not None and content_length and content_length.isdigit():
                    ticket.bytes_in = int(content_length)  # only usage records keep it
            try:
                result = await self.pipeline.forward(bundle, routed, payload, info)
                if routed is not endpoint:
                    result = dialects.answer(endpoint, result, original, bundle.max_event_bytes)
                if type(result) is Response:
                    status = result.status
                    headers = [*result.headers, (b"content-length", b"%d" % len(result.body))]
                    if obs is not None and obs.headers:
                        assert meter is not None
                        headers = obs.response_headers(meter, started, headers)
                    await send({"type": "http.response.start", "status": result.status, "headers": headers})
                    await send({"type": "http.response.body", "body": result.body})
                    if meter is not None:
                        meter.bytes_out = len(result.body)
                else:
                    assert isinstance(result, StreamResponse)
                    status = result.status
                    if obs is not None and obs.headers:
                        assert meter is not None
                        result.headers = obs.response_headers(meter, started, list(result.headers))
                    try:
                        await _stream(send, result, meter, watch)
                    finally:
                        result.aclose()
            except asyncio.CancelledError:
                if watch.client_gone():
                    status = status or 499  # nginx's "client closed request"
                    return
                raise
        except ClientGone:
            status = status or 499
        except Exception as exc:
            status = await _fail(send, scope, exc, _id_header(meter), endpoint)
        finally:
            if watch is not None:
                watch.stop()
            if form is not None:
                form.close()
            if ticket is not None and bundle.accounting is not None:
                bundle.accounting.settle(ticket, status)
            if obs is not None:
                self.active -= 1
                assert meter is not None
                key_id = principal.id if principal is not None else None
                obs.finish(endpoint, meter, status, started, key_id, ip, trace, ticket is not None)

    async def _other(self, endpoint: Endpoint | None, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything but a POST to an API endpoint: listings, probes, wrong methods, unknown URLs."""
        path: str = scope["path"]
        method: str = scope["method"]
        bundle = self.bundle
        if endpoint is not None:
            raise MethodNotAllowed(f"{echo(method)} is not allowed on {echo(path)}; use POST", allow="POST")
        if path.startswith("/admin/") and self.admin is not None:
            await self.admin(scope, receive, send)
            return
        if path == "/metrics" and bundle.metrics_exposition is not None:
            _require_get(method, path)
            if not metrics_token_ok(bundle.metrics_token, _header(scope, b"authorization")):
                raise AuthenticationFailed("GET /metrics needs 'Authorization: Bearer <observability.metrics_token>'")
            body, content_type = bundle.metrics_exposition()
            await _send(send, 200, [(b"content-type", content_type.encode("latin-1"))], body)
            return
        if path in ("/v1/models", "/models") or path.startswith("/v1/models/"):
            _require_get(method, path)
            table = bundle.table
            principal = self._principal(bundle, scope)
            if principal is not None and (principal.models or principal.services):
                # A restricted key sees only what it may use; other names are "not found", as for OpenAI.
                visible = table.models_visible(principal.may_use)
                if path.startswith("/v1/models/"):
                    model_id = path[len("/v1/models/") :]
                    if model_id not in visible:
                        raise ModelNotFound(f"The model '{echo(model_id)}' does not exist", param="model")
                    await _send(send, 200, _JSON_HEADERS, table.model_object(model_id))
                else:
                    await _send(send, 200, _JSON_HEADERS, table.models_listing(visible))
            elif path.startswith("/v1/models/"):
                await _send(send, 200, _JSON_HEADERS, table.model_object(path[len("/v1/models/") :]))
            else:
                await _send(send, 200, _JSON_HEADERS, table.models_body)
        elif path == "/health":
            _require_get(method, path)
            await _send(send, 200, _JSON_HEADERS, b'{"status":"ok"}')
        elif path == "/ready":
            _require_get(method, path)
            if self.accepting and bundle.table.has_usable_instance():
                await _send(send, 200, _JSON_HEADERS, b'{"status":"ready"}')
            else:
                reason = "draining" if not self.accepting else "no usable instance"
                await _send(send, 503, _JSON_HEADERS, orjson.dumps({"status": "not ready", "reason": reason}))
        elif (console := bundle.config.console).enabled and (
            path == "/" or path == console.path or path.startswith(console.path + "/")
        ):
            await _console(send, method, path, console.path)
        elif path == "/openapi.json":
            # No auth: the document describes the API and grants nothing. Given by the wiring (app.py): it is
            # built from the admin route table, which is not the data plane's to import.
            _require_get(method, path)
            if self.openapi is None:
                raise NotFound(f"Invalid URL ({echo(method)} {echo(path)})")
            await _send(send, 200, _JSON_HEADERS, self.openapi())
        else:
            raise NotFound(f"Invalid URL ({echo(method)} {echo(path)})")

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/messages/count_tokens``: the gateway's estimate of a Messages request's input tokens (what
        its limits reserve), for the model's key and access rules; no backend is asked."""
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{echo(scope['method'])} is not allowed on {COUNT_TOKENS}; use POST", allow="POST")
        bundle = self.bundle
        principal = self._principal(bundle, scope)
        async with asyncio.timeout(self.body_read_timeout):  # the whole body, the first part included
            message = await receive()
            body: bytes = message.get("body", b"")
            if message.get("more_body", False):
                body = await _read_rest(receive, body, bundle.max_body_bytes)
        if len(body) > bundle.max_body_bytes:
            raise BodyTooLarge(f"request body larger than the {bundle.max_body_bytes} byte limit")
        payload = parse_object(body)
        for name in ("model", "messages"):
            if payload.get(name) is None:
                raise InvalidRequest(f"Invalid request: missing required parameter '{name}'", param=name)
        served, chat = dialects.to_served(MESSAGES, {**payload, "max_tokens": 1})
        check_json(served, chat, bundle.validate_parameters)
        bundle.table.resolve(served.service, str(chat["model"]), principal.may_use if principal is not None else None)
        await _send(send, 200, _JSON_HEADERS, orjson.dumps({"input_tokens": estimate_prompt_tokens(chat)}))

    @staticmethod
    def _principal(bundle: Bundle, scope: Scope) -> Principal | None:
        """The caller's key when auth is on (raises 401 without a valid one), else None."""
        keys = bundle.keys
        if keys is None:
            return None
        authorization = api_key = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                authorization = v
            elif k == b"x-api-key":
                api_key = v
        return keys.authenticate_headers(authorization, api_key)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.accepting = False
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            value: bytes = v
            return value
    return None


def _require_get(method: str, path: str) -> None:
    if method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"{echo(method)} is not allowed on {echo(path)}; use GET", allow="GET")


async def _read_rest(receive: Receive, first: bytes, limit: int) -> bytes:
    """The rest of a body that came in several ASGI messages."""
    chunks = [first]
    size = len(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body larger than the {limit} byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# A watcher task costs about as much as all the rest of our per-request work, and most requests are answered in
# a few milliseconds; so watching for a disconnect starts only once a request has been running this long.
_WATCH_AFTER = 0.02


class _DisconnectWatch(Alarm):
    """First the body-read idle timeout: while the body is read, the request's task is cancelled if no part of
    it comes for ``timeout`` seconds (``body_timed_out`` tells). Then (``watch_disconnect``) it cancels the task
    when the client disconnects (so the upstream request is dropped and its connection and counters released at
    once); ``gone`` tells that cancellation apart from a shutdown. One alarm for both: every per-request object
    shows on the hot path."""

    __slots__ = ("_receive", "_task", "_timeout", "_watcher", "expired", "gone")

    def __init__(self, receive: Receive, timeout: float) -> None:
        super().__init__(clock())
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._timeout = timeout
        self._watcher: asyncio.Task[None] | None = None
        self.expired = False
        self.gone = False
        self.set(self._clock.time() + timeout)

    async def receive(self) -> Message:
        """``receive`` for reading the body: each message pushes the deadline back (an idle timeout)."""
        message = await self._receive()
        self.at = self._clock.time() + self._timeout  # still armed: the clock reads ``at`` when it ticks
        return message

    def watch_disconnect(self) -> None:
        """The body is read: from now on, watch for the client going away."""
        self._timeout = 0.0
        # Still armed (it rings only while the task waits in ``receive``, and then the read ends in a timeout):
        # moving ``at`` is enough.
        self.at = self._clock.time() + _WATCH_AFTER

    def ring(self) -> None:
        if self._timeout:
            # Reading the body, which stopped coming. The task waits in ``receive`` (the only await while
            # reading), so the cancellation lands there.
            self.expired = True
            self._task.cancel()
        else:
            self._watcher = self._clock.loop.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                self._task.cancel()
                return

    def body_timed_out(self) -> bool:
        """After a CancelledError while reading the body: True if it was the timeout's (then undone)."""
        return self.expired and self._task.uncancel() == 0

    def client_gone(self) -> bool:
        """After a CancelledError: True if it was ours (the client left), and the cancellation is then undone."""
        return self.gone and self._task.uncancel() == 0

    def stop(self) -> None:
        self.clear()
        if self._watcher is not None:
            self._watcher.cancel()


async def _stream(send: Send, stream: StreamResponse, meter: Meter | None, watch: _DisconnectWatch) -> None:
    try:
        await send({"type": "http.response.start", "status": stream.status, "headers": stream.headers})
        async for chunk in stream.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if meter is not None:
                if meter.first_at is None:
                    meter.first_at = time.monotonic()
                meter.bytes_out += len(chunk)
    except GatewayError as exc:
        if not stream.sse:
            raise ClientGone() from None  # a binary body cannot carry an error; leave it cut short
        log.warning("stream broke off after the first byte: %s", exc.message)
        await send({"type": "http.response.body", "body": stream.error_event(exc), "more_body": True})
    except asyncio.CancelledError:
        # Not the client leaving (the watch cancels for that): the server cutting streams that outlived the
        # drain. An SSE client is told why, as for a broken upstream, instead of seeing the stream just stop.
        if stream.sse and not watch.gone:
            cut = ShuttingDown("the gateway is shutting down: the stream was cut at the end of its drain timeout")
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": stream.error_event(cut), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        raise
    finally:
        stream.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _console(send: Send, method: str, path: str, prefix: str) -> None:
    """The web console's files (console/); ``/`` and the bare console path redirect to its page."""
    _require_get(method, path)
    if path in ("/", prefix):
        location = (prefix + "/").encode("latin-1")
        await _send(send, 302, [(b"location", location), *console_assets.HEADERS], b"")
        return
    found = console_assets.asset(path[len(prefix) :])
    if found is None:
        raise NotFound(f"Invalid URL ({echo(method)} {echo(path)})")
    body, content_type = found
    await _send(send, 200, [(b"content-type", content_type), *console_assets.HEADERS], body)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _fail(
    send: Send,
    scope: Scope,
    exc: Exception,
    request_id: list[tuple[bytes, bytes]] | None = None,
    endpoint: Endpoint | None = None,
) -> int:
    """Answer ``exc`` as an OpenAI error (or in the shape of ``endpoint``'s API); its status. Called in an
    ``except`` block: anything but a GatewayError is logged with its traceback and answered as a 500 that reveals
    nothing."""
    if not isinstance(exc, GatewayError):
        log.exception("unexpected error handling %s %s", scope.get("method"), scope.get("path"))
        exc = InternalError("internal error in the gateway (see its log)")
    body = dialects.error_body(endpoint, exc) if endpoint is not None and endpoint.serves is not None else None
    await _send_error(send, exc, request_id, body)
    return exc.status


def _request_id(value: bytes | None) -> str | None:
    """A client's X-Request-ID, if it is a sane token (it goes into logs and response headers)."""
    if value is None or not 0 < len(value) <= 128:
        return None
    text = value.decode("latin-1")
    return text if text.isprintable() and " " not in text else None


def _id_header(meter: Meter | None) -> list[tuple[bytes, bytes]]:
    if meter is None or meter.request_id is None:
        return []
    return [(b"x-request-id", meter.request_id.encode("latin-1"))]


async def _send_error(
    send: Send, exc: GatewayError, request_id: list[tuple[bytes, bytes]] | None = None, body: bytes | None = None
) -> None:
    headers = exc.headers()
    if request_id:  # the gateway's id; an upstream's own (an error passed through) is kept under another name
        headers = [(b"x-upstream-request-id", v) if k == b"x-request-id" else (k, v) for k, v in headers]
    try:
        await _send(send, exc.status, [*_JSON_HEADERS, *headers, *(request_id or ())], body or exc.body())
    except RuntimeError:
        # The response had already started (cannot happen for the paths above, but never mask the cause).
        log.warning("could not send error after response start: %r", exc)
