"""The one exception tree of the gateway, and its mapping to OpenAI error objects.

Every failure a client can see is a ``GatewayError``; each subclass carries the HTTP status, the error ``type``
and an OpenAI-style machine ``code``. Errors from lower layers (aiohttp, JSON, multipart) are translated into this
tree at their boundary only (``upstream/aiohttp_transport.py``, ``dataplane/front.py``), never further up.

``type`` is only ever one of the API document's table (``ERROR_TYPES``), chosen by meaning: 404 is
``not_found_error``, 503 ``overloaded_error``, any other 5xx ``api_error``. The OpenAI SDKs pick their exception
class by HTTP status, so the types do not change what a client catches.

    GatewayError                 500 api_error
    ├── InternalError            500 api_error / internal_error (a fault of the gateway; the cause is logged)
    ├── InvalidRequest           400 invalid_request_error
    │   ├── BodyTooLarge         413 request_too_large
    │   └── RequestTimeout       408 request_timeout (the request body stopped coming; the connection is closed)
    ├── UnsupportedMediaType     415 invalid_request_error / unsupported_media_type
    ├── AuthenticationFailed     401 authentication_error / invalid_api_key
    ├── PermissionDenied         403 permission_error / model_not_allowed
    ├── RateLimited              429 rate_limit_error / rate_limit_exceeded (Retry-After, x-ratelimit-*)
    │   └── QuotaExceeded        429 rate_limit_error / insufficient_quota
    ├── NotFound                 404 not_found_error / unknown_url
    │   └── ModelNotFound        404 not_found_error / model_not_found
    ├── MethodNotAllowed         405 invalid_request_error / method_not_allowed
    ├── ShuttingDown             503 overloaded_error / shutting_down (a stream cut at the end of the drain)
    ├── NoUsableInstance         503 overloaded_error / service_unavailable
    │   └── UpstreamConnectError 503 overloaded_error / upstream_unreachable (no instance accepted the connection)
    ├── UpstreamInvalid          502 api_error / bad_gateway (broken or non-HTTP answer, reset after connect)
    │   ├── UpstreamInvalidResponse  502 api_error / upstream_invalid_response (JSON endpoint, non-JSON answer)
    │   ├── UpstreamEventTooLarge    502 api_error / upstream_event_too_large (event over server.max_event_bytes)
    │   └── UpstreamResponseTooLarge 502 api_error / upstream_response_too_large (answer over max_response_bytes)
    ├── UpstreamTimeout          504 api_error / upstream_timeout
    └── UpstreamStatusError      the upstream's own status and (normalised) error body
"""

from __future__ import annotations

import math
from typing import Any

import orjson

__all__ = [
    "ERROR_TYPES",
    "AuthenticationFailed",
    "BodyTooLarge",
    "GatewayError",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoUsableInstance",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "ShuttingDown",
    "UnsupportedMediaType",
    "UpstreamConnectError",
    "UpstreamEventTooLarge",
    "UpstreamInvalid",
    "UpstreamInvalidResponse",
    "UpstreamResponseTooLarge",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "echo",
    "error_body",
    "normalise_upstream_error",
    "type_for_status",
]


# The API document's table of error types: nothing else is ever sent as `type` by the gateway itself.
ERROR_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
)


def type_for_status(status: int) -> str:
    """The document's error type for an HTTP status, by meaning."""
    if status == 404:
        return "not_found_error"
    if status in (503, 529):  # 529: Anthropic's "overloaded"
        return "overloaded_error"
    if status >= 500:
        return "api_error"
    return _TYPE_BY_STATUS.get(status, "invalid_request_error")


# Longest client-supplied text an error message repeats back (model names, paths, content types, ...).
ECHO_CHARS = 200


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """``value`` as an error message may repeat it to the client: at most ``limit`` characters, and said so when
    cut. Every message that quotes a client's input goes through here: an unknown 1 MB model name must not
    come back as a 1 MB error (nor land in full in the logs that quote the message)."""
    text = value if type(value) is str else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers (e.g. ``Allow``, ``Retry-After``)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class InternalError(GatewayError):
    """A fault of the gateway itself; its message reveals nothing (the cause is in the log)."""

    code = "internal_error"


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class RequestTimeout(InvalidRequest):
    """The client stopped sending its request body for ``server.body_read_timeout``."""

    status = 408
    code = "request_timeout"

    def headers(self) -> list[tuple[bytes, bytes]]:
        # The rest of the body may still come: the connection cannot carry another request.
        return [(b"connection", b"close")]


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self._headers = headers or []

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers


class QuotaExceeded(RateLimited):
    code = "insufficient_quota"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "unknown_url"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow.encode())]


class NoUsableInstance(GatewayError):
    status = 503
    type = "overloaded_error"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds until an instance is expected to take requests again (a Retry-After cool-down ending, a
        # breaker going half-open); None when nothing tells (unhealthy instances wait for a health probe).
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is None:
            return []
        # Whole seconds, rounded up (the header has no fractions): a client retrying earlier would find the
        # instance still unusable.
        return [(b"retry-after", b"%d" % max(1, math.ceil(self.retry_after)))]


class ShuttingDown(GatewayError):
    """The gateway stopped: a stream still running at the end of ``server.drain_timeout`` is cut with this."""

    status = 503
    type = "overloaded_error"
    code = "shutting_down"


class UpstreamConnectError(NoUsableInstance):
    """No connection could be made: the backend is not running, or not reachable."""

    code = "upstream_unreachable"


class UpstreamInvalid(GatewayError):
    status = 502
    type = "api_error"
    code = "bad_gateway"


class UpstreamReportedError(UpstreamInvalid):
    """The backend reported an error inside a stream it had started (Anthropic's ``error`` event): the stream
    ends with this error; before anything reached the client, the request fails over. An overloaded backend is a
    503 ``overloaded_error``, a rate-limited one a 429; anything else a 502 ``api_error``."""

    code = "upstream_error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(f"the backend reported an error: {message}")
        if kind == "overloaded_error":
            self.status, self.type = 503, "overloaded_error"
        elif kind == "rate_limit_error":
            self.status, self.type = 429, "rate_limit_error"


class UpstreamInvalidResponse(UpstreamInvalid):
    """A 2xx answer of a JSON endpoint that is not JSON (an HTML page, a truncated body, a stream whose first
    event is not JSON): the instance is broken, not the request, so it counts against it and fails over."""

    code = "upstream_invalid_response"


class UpstreamEventTooLarge(UpstreamInvalid):
    """A stream event (or NDJSON line) that had not ended after ``server.max_event_bytes``: the upstream is
    streaming without event boundaries, and holding more would let one stream take unbounded memory."""

    code = "upstream_event_too_large"


class UpstreamResponseTooLarge(UpstreamInvalid):
    """A non-streamed answer longer than the instance's ``max_response_bytes`` (said by its Content-Length, or
    found while reading): buffering it whole would let one answer take the gateway's memory. The instance is
    failing (a runaway generation, a misrouted download), so it counts against its breaker and fails over."""

    code = "upstream_response_too_large"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class UpstreamStatusError(GatewayError):
    """The upstream answered an error status; its body is passed on (normalised to the OpenAI shape)."""

    def __init__(
        self, status: int, body: bytes, content_type: str | None, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.raw = normalise_upstream_error(status, body, content_type)
        self._headers = headers or []
        super().__init__(f"upstream answered {status}")

    def body(self) -> bytes:
        return self.raw

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers


_TYPE_BY_STATUS = {
    401: "authentication_error",
    402: "rate_limit_error",  # "payment required": a hosted API's exhausted credit, a quota by meaning
    403: "permission_error",
    407: "authentication_error",
    429: "rate_limit_error",
}


def _message_of(data: Any) -> str | None:
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("message", "detail", "error", "msg"):
            if key in data:
                return _message_of(data[key]) or str(data[key])
    if isinstance(data, list) and data:
        return "; ".join(m for m in (_message_of(d) for d in data) if m)
    return None


def normalise_upstream_error(status: int, body: bytes, content_type: str | None) -> bytes:
    """Keep an OpenAI-shaped error body byte for byte; rewrite anything else into one.

    Upstreams answer errors in many dialects: OpenAI ``{"error": {...}}``, Ollama/TGI ``{"error": "text"}``,
    FastAPI ``{"detail": ...}``, plain text or an HTML page from a proxy.
    """
    data: Any = None
    if body[:1] in (b"{", b"["):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            if "type" in err and "param" in err and "code" in err:
                return body
            return orjson.dumps(
                {
                    "error": {
                        "message": err["message"],
                        "type": err.get("type") or type_for_status(status),
                        "param": err.get("param"),
                        "code": err.get("code"),
                    }
                }
            )
    message = _message_of(data) if data is not None else None
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        if content_type and "html" in content_type:
            text = f"upstream answered HTTP {status} with an HTML page"
        message = text[:1000] or f"upstream answered HTTP {status}"
    return error_body(message, type_for_status(status), None, None)
