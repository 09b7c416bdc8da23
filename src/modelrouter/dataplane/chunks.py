"""What the front doors of other APIs (``messages_api.py``, ``responses_api.py``) share: reading the gateway's own
chat stream (OpenAI ``chat.completion.chunk`` events, ending with ``[DONE]``) one event at a time, and an error
event in it (a backend's, passed through) raised as the gateway's error."""

from __future__ import annotations

from typing import Any

import orjson

from ..adapters.base import MAX_EVENT_BYTES, SSEReader, StreamTranslator
from ..errors import GatewayError

__all__ = ["FromChatChunks", "StreamError"]


class FromChatChunks(StreamTranslator):
    """Calls ``_chunk(data)`` for every chunk and ``_complete()`` once at ``[DONE]`` (or at the end of a stream
    that started without one); subclasses return their own API's events. ``_usage`` is the last usage seen."""

    __slots__ = ("_events", "_started", "_usage")

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._events = SSEReader(max_event)
        self._started = False
        self._usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for _name, data in self._events.feed(chunk):
            if data == b"[DONE]":
                out.append(self._complete())
            elif data:
                event = orjson.loads(data)
                if "error" in event and not event.get("choices"):
                    raise StreamError(event["error"])
                if event.get("usage"):
                    self._usage = event["usage"]
                out.append(self._chunk(event))
        return b"".join(out)

    def end(self) -> bytes:
        self._events.end()
        return self._complete() if self._started else b""

    def _chunk(self, data: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def _complete(self) -> bytes:
        raise NotImplementedError


class StreamError(GatewayError):
    """An error event in the gateway's own stream (a backend broke off): the front door passes it on in its API's
    shape."""

    def __init__(self, error: Any) -> None:
        error = error if isinstance(error, dict) else {}
        super().__init__(str(error.get("message") or "the stream failed"))
        self.type = str(error.get("type") or "api_error")
