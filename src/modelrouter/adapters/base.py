"""The adapter interface: how one backend dialect is spoken.

An adapter turns the client's OpenAI-shaped request into the upstream's request and the upstream's answer back
into the OpenAI shape. The OpenAI adapter does (almost) nothing, which is what keeps the common path fast; other
dialects (Ollama now, Anthropic/Gemini later) translate. Adapters are stateless singletons.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..endpoints import Endpoint

__all__ = ["Adapter", "SSEPassThrough", "StreamTranslator"]


class StreamTranslator:
    """Turns upstream body bytes into client bytes, one complete event at a time. Feeding may return b"" while
    an event is incomplete; nothing half-formed is ever sent, so an error event can always follow cleanly."""

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        """Called once after the upstream body ended normally; returns whatever is left to send."""
        return b""


class SSEPassThrough(StreamTranslator):
    """Forwards server-sent events unchanged, cut on event boundaries (a blank line)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        end = buf.rfind(b"\n\n")
        end = end + 2 if end >= 0 else -1
        crlf = buf.rfind(b"\r\n\r\n")
        if crlf >= 0 and crlf + 4 > end:
            end = crlf + 4
        if end < 0:
            self._buf = buf
            return b""
        if end == len(buf):
            self._buf = b""
            return buf
        self._buf = buf[end:]
        return buf[:end]

    def end(self) -> bytes:
        # A last event without its blank line still counts (some servers omit it before closing).
        rest, self._buf = self._buf, b""
        return rest + b"\n\n" if rest.strip() else b""


class Adapter:
    name = "base"
    #: what the active health check asks for when the config names no path
    health_path = "/v1/models"
    #: the content type of what ``stream_translator`` produces
    stream_content_type = b"text/event-stream"

    def path(self, endpoint: Endpoint) -> str | None:
        """Upstream path for an endpoint, or None if this dialect cannot serve it."""
        raise NotImplementedError

    def request_body(self, endpoint: Endpoint, payload: dict[str, Any], upstream_model: str) -> bytes:
        raise NotImplementedError

    def response_body(self, endpoint: Endpoint, payload: dict[str, Any], body: bytes) -> bytes | None:
        """Translate a successful (2xx) JSON answer; None means "pass the upstream bytes and headers through"."""
        return None

    def is_stream(self, content_type: str | None) -> bool:
        """Whether an upstream answer with this content type is a stream to translate."""
        return content_type is not None and content_type.startswith("text/event-stream")

    def stream_translator(self, endpoint: Endpoint, payload: dict[str, Any]) -> StreamTranslator:
        return SSEPassThrough()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
