"""The one exception tree of the gateway, and its mapping to OpenAI error objects.

Every failure a client can see is a ``GatewayError``; each subclass carries the HTTP status and the OpenAI
``type``/``code``. Errors from lower layers (aiohttp, JSON, multipart) are translated into this tree at their
boundary only (``upstream/aiohttp_transport.py``, ``front/body.py``), never further up.

    GatewayError
    ├── InvalidRequest           400 invalid_request_error
    │   └── BodyTooLarge         413
    ├── UnsupportedMediaType     415
    ├── AuthenticationFailed     401 authentication_error / invalid_api_key
    ├── PermissionDenied         403 permission_error
    ├── RateLimited              429 rate_limit_error (Retry-After, x-ratelimit-*)
    │   └── QuotaExceeded        429 insufficient_quota
    ├── NotFound                 404 (unknown URL)
    │   └── ModelNotFound        404 model_not_found
    ├── MethodNotAllowed         405
    ├── NoUsableInstance         503 service_unavailable
    │   └── UpstreamConnectError 503 (no instance accepted the connection)
    ├── UpstreamInvalid          502 (broken or non-HTTP answer, reset after connect)
    ├── UpstreamTimeout          504
    └── UpstreamStatusError      the upstream's own status and (normalised) error body
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "AuthenticationFailed",
    "BodyTooLarge",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoUsableInstance",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "UnsupportedMediaType",
    "UpstreamConnectError",
    "UpstreamInvalid",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "error_body",
    "normalise_upstream_error",
]


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class GatewayError(Exception):
    status = 500
    type = "server_error"
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


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


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
    type = "insufficient_quota"
    code = "insufficient_quota"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
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
    type = "server_error"
    code = "service_unavailable"


class UpstreamConnectError(NoUsableInstance):
    """No connection could be made: the backend is not running, or not reachable."""

    code = "upstream_unreachable"


class UpstreamInvalid(GatewayError):
    status = 502
    type = "server_error"
    code = "bad_gateway"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "server_error"
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
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
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
                        "type": err.get("type") or _TYPE_BY_STATUS.get(status, "server_error"),
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
    return error_body(message, _TYPE_BY_STATUS.get(status, "server_error"), None, None)
