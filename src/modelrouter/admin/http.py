"""Raw-ASGI plumbing for the admin API: the request as handlers see it, JSON in and out, and the errors only the
admin side raises. Raw ASGI rather than Starlette because a dozen JSON routes need little, and this keeps a
framework out of the gateway's dependencies (the /v1 hot path must not use one)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..dataplane.jsonbody import parse_object
from ..errors import AuthenticationFailed, GatewayError, InvalidRequest, UnsupportedMediaType
from ..http.asgi import Message, Receive, Scope, Send

__all__ = [
    "Conflict",
    "Download",
    "Message",
    "NotAuthenticated",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "StoreUnavailable",
    "send_download",
    "send_error",
    "send_json",
]

MAX_BODY_BYTES = 64 * 1024  # the largest admin request (a key with its model list) is a few kilobytes

# Answers carry tokens and key secrets: no cache, proxy or browser may keep them.
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class Conflict(GatewayError):
    """The request contradicts the current state: a username taken, a revoked key enabled again."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class NotAuthenticated(AuthenticationFailed):
    """No valid admin token. Says how to authenticate, as RFC 6750 asks of a bearer-token API."""

    code = "invalid_token"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b'Bearer realm="modelrouter-admin"')]


class StoreUnavailable(GatewayError):
    """Admin users, tokens and keys all live in the store; without it the admin API can do nothing."""

    status = 503
    type = "overloaded_error"
    code = "store_unavailable"


class Request:
    """What the admin API reads of one HTTP request. The body is read only when a handler asks for it."""

    __slots__ = ("_receive", "client_ip", "headers", "method", "path", "query_string")

    def __init__(self, scope: Scope, receive: Receive, client_ip: str | None) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        # First value wins when a header is repeated; lower-case names, as ASGI gives them.
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        self.headers = headers
        self.client_ip = client_ip
        self._receive = receive

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def query(self) -> Mapping[str, str]:
        return dict(parse_qsl(self.query_string.decode("latin-1")))

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body counts as ``{}``."""
        content_type = self.header(b"content-type")
        if content_type is not None and "json" not in content_type.lower():
            raise UnsupportedMediaType(f"Content-Type must be application/json, not {content_type}")
        body = await self._body()
        if not body.strip():
            return {}
        # The same parse, checks and limits as the /v1 API: a config value too deep to be serialised again
        # would otherwise fail when it is saved, or shown.
        return parse_object(body)

    async def _body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("the client went away while sending the body")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise InvalidRequest(f"request body larger than the {MAX_BODY_BYTES} byte limit", code="too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def send_json(send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(data)
    all_headers = [*_JSON_HEADERS, *(headers or ()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class Download:
    """A reply body that is a file to save rather than JSON (a CSV export): its bytes, type and file name."""

    content: bytes
    content_type: str
    filename: str


async def send_download(send: Send, status: int, download: Download) -> None:
    headers = [
        (b"content-type", download.content_type.encode()),
        (b"content-disposition", b'attachment; filename="%s"' % download.filename.encode()),
        (b"cache-control", b"no-store"),
        (b"content-length", b"%d" % len(download.content)),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": download.content})


async def send_error(send: Send, exc: GatewayError) -> None:
    body = exc.body()
    headers = [*_JSON_HEADERS, *exc.headers(), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
