"""The adapter interface: how one backend dialect is spoken.

An adapter turns the client's OpenAI-shaped request into the upstream's request and the upstream's answer back
into the OpenAI shape. The OpenAI adapter does (almost) nothing, which is what keeps the common path fast; other
dialects (Ollama now, Anthropic/Gemini later) translate. Adapters are stateless singletons.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..endpoints import Endpoint
from ..errors import InvalidRequest, UpstreamEventTooLarge, UpstreamInvalidResponse

__all__ = ["MAX_EVENT_BYTES", "Adapter", "NativeEvents", "SSEPassThrough", "SSEReader", "StreamTranslator", "image_of"]

# The default of ``server.max_event_bytes``, for translators made outside a gateway.
MAX_EVENT_BYTES = 8 * 1024 * 1024


class StreamTranslator:
    """Turns upstream body bytes into client bytes, one complete event at a time. Feeding may return b"" while
    an event is incomplete; nothing half-formed is ever sent, so an error event can always follow cleanly. A stream
    the gateway must not pass on raises a ``GatewayError`` (``UpstreamEventTooLarge``, ``UpstreamInvalidResponse``)
    or ``ValueError``/``KeyError``/``TypeError`` for what its dialect does not allow."""

    def feed(self, chunk: bytes) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        """Called once after the upstream body ended normally; returns whatever is left to send."""
        return b""


class SSEPassThrough(StreamTranslator):
    """Forwards server-sent events unchanged, cut on event boundaries (a blank line).

    Linear in the stream's length, whatever its chunking: the pieces of an unfinished event are kept as they came
    and joined once, when it ends, and only the bytes that just arrived (and the three before them, where a
    boundary may start) are searched. An event still unfinished after ``max_event`` bytes raises
    ``UpstreamEventTooLarge``: an upstream streaming without blank lines would otherwise hold a core and
    unbounded memory.

    ``json_events`` (the gateway's chat and completions streams) makes the stream show it is what it claims
    before anything reaches the client: events are held until the first one with data, which must be JSON or
    ``[DONE]``, and a line that is no SSE field (an HTML page, a proxy's text) raises
    ``UpstreamInvalidResponse``. Comments and data-less events before it are sent with it, so the first-byte
    timeout covers the first real event. Once it passed, events are not looked at again (the hot path)."""

    __slots__ = ("_held", "_max", "_parts", "_size", "_unchecked")

    def __init__(self, max_event: int = MAX_EVENT_BYTES, *, json_events: bool = False) -> None:
        self._parts: list[bytes] = []  # the unfinished event after the last boundary, as it arrived
        self._size = 0  # their length
        self._max = max_event
        self._unchecked = json_events
        self._held = b""  # complete events held until the first data event passed the check

    def feed(self, chunk: bytes) -> bytes:
        end = _boundary(chunk)
        parts = self._parts
        if not parts:
            if end == len(chunk):
                out = chunk  # the common case: the chunk is whole events, passed on without a copy
            elif end < 0:
                if chunk:
                    parts.append(chunk)
                    self._size = len(chunk)
                    if self._size > self._max - len(self._held):
                        raise self._too_large()
                return b""
            else:
                out = chunk[:end]
                self._hold(chunk[end:])
        else:
            if end < 0 and chunk:
                # Not in the chunk: perhaps across the join ("...\r\n" + "\r\n..."), at most 3 bytes back.
                prefix = _last3(parts)
                across = _boundary(prefix + chunk[:3])
                end = across - len(prefix) if across >= 0 else -1
            if end < 0:
                self._hold(chunk)
                return b""
            whole = end == len(chunk)
            last = chunk if whole else chunk[:end]
            # Each byte of a long event is copied once, here; an event cut in two (the usual) is one concatenation.
            out = parts[0] + last if len(parts) == 1 else b"".join([*parts, last])
            parts.clear()
            self._size = 0
            if not whole:
                self._hold(chunk[end:])
        return self._check(out) if self._unchecked else out

    def _hold(self, piece: bytes) -> None:
        self._parts.append(piece)
        self._size = size = self._size + len(piece)
        if size > self._max - len(self._held):
            raise self._too_large()

    def end(self) -> bytes:
        # A last event without its blank line still counts (some servers omit it before closing).
        rest = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        out = rest + b"\n\n" if rest.strip() else b""
        if self._unchecked:
            out = self._check(out)
            if self._unchecked:
                raise UpstreamInvalidResponse("the backend ended its stream before sending any event")
        return out

    def _check(self, out: bytes) -> bytes:
        held = self._held + out if self._held else out
        start = 0
        # One event at a time, from the front: the first one usually has data, and normalising and splitting all
        # of ``held`` (a whole stream, when the backend sent it at once) measured ~35k instructions per stream.
        while (end := _first_boundary(held, start)) >= 0:
            event = held[start:end].replace(b"\r\n", b"\n")
            start = end
            data: list[bytes] = []
            for line in event.split(b"\n"):
                if not line or line[:1] == b":":
                    continue  # a comment (keep-alive) or the blank line itself
                name, _, value = line.partition(b":")
                if name == b"data":
                    data.append(value[1:] if value[:1] == b" " else value)
                elif name not in (b"event", b"id", b"retry"):
                    raise UpstreamInvalidResponse("the backend sent a stream that is not server-sent events")
            if data:
                joined = b"\n".join(data)
                if joined != b"[DONE]":
                    try:
                        orjson.loads(joined)
                    except orjson.JSONDecodeError:
                        raise UpstreamInvalidResponse("the backend sent a stream event that is not JSON") from None
                self._unchecked = False
                self._held = b""
                return held
        if len(held) > self._max:
            raise self._too_large()
        self._held = held
        return b""

    def _too_large(self) -> UpstreamEventTooLarge:
        return UpstreamEventTooLarge(f"the backend sent a stream event longer than {self._max} bytes")


class SSEReader:
    """Server-sent events parsed, for a translator: ``feed`` returns the ``(event name, data)`` of every event
    completed by the bytes given. Linear in the stream's length (only new bytes are searched for a boundary); an
    event unfinished after ``max_event`` bytes raises ``UpstreamEventTooLarge``; ``end`` raises ``ValueError`` if
    the stream stopped inside an event."""

    __slots__ = ("_buf", "_max", "_searched")

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_event
        self._searched = 0  # bytes of _buf known to hold no boundary

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        buf = self._buf
        buf += chunk
        start = max(self._searched - 3, 0)
        end = _boundary(bytes(buf[start:]))
        if end < 0:
            self._searched = len(buf)
            if len(buf) > self._max:
                raise UpstreamEventTooLarge(f"the backend sent a stream event longer than {self._max} bytes")
            return []
        end += start
        complete = bytes(buf[:end])
        del buf[:end]
        self._searched = 0
        if len(buf) > self._max:
            raise UpstreamEventTooLarge(f"the backend sent a stream event longer than {self._max} bytes")
        return [event for block in _split_events(complete) if (event := _parse_event(block)) is not None]

    def end(self) -> None:
        if self._buf.strip():
            raise ValueError("the stream ended inside an event")


def _split_events(data: bytes) -> list[bytes]:
    return data.replace(b"\r\n", b"\n").split(b"\n\n")


def _parse_event(block: bytes) -> tuple[str, bytes] | None:
    name, data = "message", []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        value = value[1:] if value[:1] == b" " else value
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value)
    if not data and name == "message":
        return None
    return name, b"\n".join(data)


class NativeEvents(StreamTranslator):
    """A stream the client gets as the backend sent it (cut on event boundaries, so that an error event can follow
    cleanly), while ``metered`` - the translation the usage tap reads - runs beside it and is dropped."""

    __slots__ = ("_events", "_metered")

    def __init__(self, metered: StreamTranslator, max_event: int) -> None:
        self._metered = metered
        self._events = SSEPassThrough(max_event)

    def feed(self, chunk: bytes) -> bytes:
        self._metered.feed(chunk)
        return self._events.feed(chunk)

    def end(self) -> bytes:
        self._metered.end()
        return self._events.end()


def image_of(part: dict[str, Any]) -> tuple[str, str, str]:
    """An OpenAI ``image_url`` part as ``(kind, media type, data)``: ``("base64", type, data)`` for a data URL,
    ``("url", "", url)`` for any other. Dialects that take images (Anthropic, Gemini) build their blocks from it."""
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise InvalidRequest("an image_url part needs a url", param="messages")
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        return "base64", head[5:].split(";", 1)[0] or "image/png", data
    return "url", "", url


def _last3(parts: list[bytes]) -> bytes:
    """The last three bytes of ``parts`` joined (a boundary may start there and end in the next chunk)."""
    tail = b""
    for part in reversed(parts):
        tail = part[-3 + len(tail) :] + tail if len(tail) < 3 else tail
        if len(tail) >= 3:
            break
    return tail


def _first_boundary(buf: bytes, start: int) -> int:
    """Where the first event in ``buf`` from ``start`` ends (after its blank line), or -1: the end of the first
    ``\\n\\n`` once every CRLF is read as LF. Such a blank line holds ``\\n\\n`` (LF LF, CRLF LF) or ``\\n\\r\\n``
    (LF CRLF, CRLF CRLF), so the earlier of the two finds it; the second is searched only up to the first."""
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\n\r\n", start, lf + 2 if lf >= 0 else len(buf))
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 3
    return lf + 2 if lf >= 0 else -1


def _boundary(buf: bytes) -> int:
    """Where the last complete event in ``buf`` ends (after its blank line), or -1 if none does."""
    end = buf.rfind(b"\n\n")
    end = end + 2 if end >= 0 else -1
    crlf = buf.rfind(b"\r\n\r\n")
    if crlf >= 0 and crlf + 4 > end:
        end = crlf + 4
    return end


class Adapter:
    name = "base"
    #: what the active health check asks for when the config names no path
    health_path = "/v1/models"
    #: the content type of what ``stream_translator`` produces
    stream_content_type = b"text/event-stream"
    #: headers every request to this dialect carries, unless the instance's ``headers`` name them
    default_headers: dict[str, str] = {}
    #: whether ``request_url`` may change the URL by request (Gemini: a stream is another method)
    varies_url = False
    #: the front-door dialect this backend speaks natively (a request of that front door goes to it unchanged),
    #: and where (None: the endpoint's own URL)
    native: str | None = None
    native_path: str | None = None

    def native_meter(
        self, endpoint: Endpoint, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES
    ) -> StreamTranslator:
        """What turns this backend's native events into chat chunks for the usage count (they are not sent)."""
        return self.stream_translator(endpoint, payload, max_event)

    def request_url(self, url: str, payload: dict[str, Any]) -> str:
        """The URL of one request, from its endpoint's (called only when ``varies_url``)."""
        return url

    def upstream_status(self, status: int) -> int:
        """The status an upstream error counts as (for retries, breakers and the client): its own by default."""
        return status

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

    def stream_translator(
        self, endpoint: Endpoint, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES
    ) -> StreamTranslator:
        """The translator of one stream; ``max_event`` bounds what it holds of one incomplete event."""
        return SSEPassThrough(max_event, json_events=True)  # every SSE endpoint (chat, completions) streams JSON

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)
