"""A fast fake OpenAI upstream for the benchmark.

It must never be the bottleneck, so it is a raw asyncio Protocol (on uvloop when available) with every
response body built once at import; a request costs one header parse and one ``transport.write``.

Served (HTTP/1.1, keep-alive, pipelining, Content-Length or chunked request bodies):

* ``POST /v1/chat/completions`` - a fixed ~600-byte ``chat.completion``; when the body says
  ``"stream": true``, a chunked ``text/event-stream`` of 8 ``chat.completion.chunk`` events + ``[DONE]``.
* ``GET /v1/models`` and ``GET /health``.

Run: ``python bench/fake_upstream.py --port 9001`` (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import signal
import sys
from typing import Any, cast

MODEL = "bench-model"
CREATED = 1_732_550_400  # fixed, so every response is byte-identical and precomputed
MAX_HEAD = 64 * 1024  # larger header blocks are refused rather than buffered forever
MAX_BODY = 16 * 1024 * 1024

# Clients format JSON differently ("stream":true, "stream": true, ...); a regex on the raw bytes avoids a
# full JSON parse per request, which would cost more than everything else this server does.
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _response(status: str, content_type: str, body: bytes, *, close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n"
        "Server: modelrouter-bench-fake\r\n\r\n"
    )
    return head.encode() + body


_COMPLETION_BODY = _json(
    {
        "id": "chatcmpl-bench0000000000000000000000001",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench0001",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": (
                        "Hello! This is a fixed answer from the modelrouter benchmark's fake upstream. "
                        "It is as long as a real short reply, so the gateway moves a realistic payload."
                    ),
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 41,
            "total_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }
)


def _stream_events() -> list[bytes]:
    """8 SSE events shaped like OpenAI's: role delta, 6 content deltas, finish; then ``[DONE]``."""
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": word}, None) for word in ("Hello", "!", " How", " can", " I", " help?")]
    deltas.append(({}, "stop"))
    events = []
    for delta, finish in deltas:
        chunk = {
            "id": "chatcmpl-bench0000000000000000000000002",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": "fp_bench0001",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        events.append(b"data: " + _json(chunk) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked_stream() -> bytes:
    # One HTTP chunk per SSE event, as a real streaming server would frame them.
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/event-stream\r\n"
        b"Cache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n"
        b"Server: modelrouter-bench-fake\r\n\r\n"
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in _stream_events())
    return head + body + b"0\r\n\r\n"


_MODELS_BODY = _json(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]}
)


def _error(status: str, message: str, *, close: bool = False) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    body = _json({"error": error})
    return _response(status, "application/json", body, close=close)


COMPLETION = _response("200 OK", "application/json", _COMPLETION_BODY)
STREAM = _chunked_stream()
MODELS = _response("200 OK", "application/json", _MODELS_BODY)
HEALTH = _response("200 OK", "application/json", b'{"status":"ok"}')
NOT_FOUND = _error("404 Not Found", "not found")
BAD_METHOD = _error("405 Method Not Allowed", "method not allowed")
BAD_REQUEST = _error("400 Bad Request", "malformed HTTP request", close=True)
TOO_LARGE = _error("431 Request Header Fields Too Large", "request head too large", close=True)

_ROUTES: dict[bytes, dict[bytes, bytes]] = {
    b"/v1/chat/completions": {b"POST": COMPLETION},
    b"/v1/models": {b"GET": MODELS},
    b"/health": {b"GET": HEALTH},
}


class BadRequest(Exception):
    pass


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``pos``: ``(body, end offset)``, or None until it is complete."""
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        if size < 0 or size > MAX_BODY:
            raise BadRequest("bad chunk size")
        pos = eol + 2
        if size == 0:
            # Optional trailer fields, then the empty line that ends the message.
            if buf[pos : pos + 2] == b"\r\n":
                return b"".join(parts), pos + 2
            end = buf.find(b"\r\n\r\n", pos)
            return None if end < 0 else (b"".join(parts), end + 4)
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class FakeOpenAI(asyncio.Protocol):
    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            # Loop: one read may hold several pipelined requests, or only part of one.
            while self._transport is not None and self._handle_one():
                pass
        except BadRequest:
            self._reply(BAD_REQUEST, close=True)

    def _handle_one(self) -> bool:
        """Answer the first complete request in the buffer; False when more bytes are needed."""
        buf = self._buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) > MAX_HEAD:
                self._reply(TOO_LARGE, close=True)
            return False
        lines = bytes(buf[:head_end]).split(b"\r\n")
        request_line = lines[0].split(b" ")
        if len(request_line) != 3:
            raise BadRequest("bad request line")
        method, target, version = request_line
        content_length = 0
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadRequest("bad header")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    raise BadRequest("bad content-length") from None
                if not 0 <= content_length <= MAX_BODY:
                    raise BadRequest("bad content-length")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    keep_alive = False
                elif token == b"keep-alive":
                    keep_alive = True
        body_start = head_end + 4
        if chunked:
            decoded = _dechunk(buf, body_start)
            if decoded is None:
                return False
            body, end = decoded
        else:
            end = body_start + content_length
            if len(buf) < end:
                return False
            body = bytes(buf[body_start:end])
        del buf[:end]
        self._reply(self._route(method, target, body), close=not keep_alive)
        return True

    @staticmethod
    def _route(method: bytes, target: bytes, body: bytes) -> bytes:
        methods = _ROUTES.get(target.split(b"?", 1)[0])
        if methods is None:
            return NOT_FOUND
        response = methods.get(method)
        if response is None:
            return BAD_METHOD
        if response is COMPLETION and _STREAM_TRUE.search(body):
            return STREAM
        return response

    def _reply(self, response: bytes, *, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(response)
        if close:
            transport.close()
            self._transport = None


def _loopback(host: str) -> str:
    # The benchmark promises loopback-only traffic; refuse anything else rather than trust the caller.
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{host!r} is not a loopback address")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeOpenAI, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"fake upstream listening on http://{bound[0]}:{bound[1]} (completion {len(_COMPLETION_BODY)} B)")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
