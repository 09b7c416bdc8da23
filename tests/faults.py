"""A scripted fault upstream: a raw asyncio HTTP/1.1 server on loopback whose behaviour is switched at runtime.

Raw sockets rather than aiohttp.web, because some faults are below HTTP: a refused connect, a reset in the
middle of a body, bytes that are not HTTP at all. The server speaks enough of the OpenAI API for the gateway
(``POST /v1/chat/completions`` as JSON or SSE, ``GET /v1/models`` for health probes) and counts what it got, per
mode, so tests can assert how many requests reached a failing backend.

Modes (``FaultServer.set_mode``):

    ok                 answer normally
    refuse             close the listening socket (and every open connection): connects are refused
    reset_mid_body     send headers and part of the body, then reset the connection (RST)
    hang               read the request, never answer (until the peer gives up)
    status_500         500 with an OpenAI-shaped error
    status_429         429 with ``Retry-After: retry_after``
    stall_first_token  200 with SSE headers, then nothing
    garbage            bytes that are not HTTP, then close
    huge_length        200 with ``Content-Length: huge_bytes`` (a chat completion padded to that size), any POST
    huge_chunked       the same answer chunked, without a length
    huge_error         500 with a chunked error body of ``huge_bytes``

The huge modes write their body in 1 MiB pieces for as long as the peer reads (never holding it whole);
``huge_type`` is their 2xx content type (e.g. image/png for an image server answering the file itself).

``probe_mode`` (default: the same as ``mode``) lets health probes see another behaviour than API requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .servers import BackgroundLoop, free_port

MODES = ("ok", "refuse", "reset_mid_body", "hang", "status_500", "status_429", "stall_first_token", "garbage")
# Apart from MODES, which tests run every fault through (a huge body is no fault of every request path).
HUGE_MODES = ("huge_length", "huge_chunked", "huge_error")
HUGE_PIECE = 1024 * 1024
PROBE_PATH = "/v1/models"


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic() when the request head was read
    mode: str
    method: str
    path: str
    stream: bool


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class FaultServer:
    """Start with ``start()``, stop with ``stop()``; everything runs on the tests' background loop.

    ``requests[mode]`` counts API requests (everything but health probes) received while in ``mode``;
    ``probes[mode]`` counts health probes (``GET /v1/models``); ``hits`` lists all of them in order.
    """

    def __init__(self, bg: BackgroundLoop, name: str = "fault", mode: str = "ok", *, retry_after: int = 30) -> None:
        if mode not in (*MODES, *HUGE_MODES):
            raise ValueError(f"unknown mode {mode!r}")
        self.bg = bg
        self.name = name
        self.mode = mode
        self.probe_mode: str | None = None
        self.retry_after = retry_after
        self.huge_bytes = 2 * 1024**3  # body size of the huge modes
        self.huge_type = "application/json"
        self.huge_sent = 0  # body bytes the huge modes got written (into the socket buffers, at least)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: Counter[str] = Counter()
        self.probes: Counter[str] = Counter()
        self.hits: list[Hit] = []
        self.connections = 0  # accepted TCP connections, all modes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (from the test thread) ------------------------------------------------------------------
    def start(self) -> FaultServer:
        self.bg.run(self._apply(self.mode))
        return self

    def set_mode(self, mode: str, *, probe_mode: str | None = None) -> None:
        known = (*MODES, *HUGE_MODES)
        if mode not in known or (probe_mode is not None and probe_mode not in known):
            raise ValueError(f"unknown mode {mode!r}/{probe_mode!r}")
        self.bg.run(self._apply(mode, probe_mode))

    def stop(self) -> None:
        self.bg.run(self._stop())

    def api_requests(self, *modes: str) -> int:
        """API requests received in any of ``modes`` (all modes if none given)."""
        return sum(n for m, n in self.requests.items() if not modes or m in modes)

    def hits_since(self, t: float, *, probes: bool = False) -> list[Hit]:
        return [h for h in self.hits if h.at >= t and (h.path == PROBE_PATH) == probes]

    # -- on the loop -------------------------------------------------------------------------------------
    async def _apply(self, mode: str, probe_mode: str | None = None) -> None:
        self.mode = mode
        self.probe_mode = probe_mode
        if mode == "refuse":
            self._unlisten()
            self._drop_connections()
        elif self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()

    async def _stop(self) -> None:
        self._unlisten()
        self._drop_connections()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if not await self._answer(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:
            pass  # stopped, or switched to `refuse`
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request in the current mode; False when the connection is to be dropped."""
        probe = req.method == "GET" and req.path == PROBE_PATH
        mode = (self.probe_mode or self.mode) if probe else self.mode
        payload = req.json()
        stream = isinstance(payload, dict) and payload.get("stream") is True
        self.hits.append(Hit(time.monotonic(), mode, req.method, req.path, stream))
        (self.probes if probe else self.requests)[mode] += 1

        if mode == "refuse":  # a request raced with the switch: behave like a dead server
            return False
        if mode == "garbage":
            writer.write(b"\x00\x16\x03\x01 this is not HTTP at all \xff\xfe\r\n\r\n")
            await writer.drain()
            return False
        if mode == "hang":
            await _until_peer_closes(reader)
            return False
        if mode == "stall_first_token":
            _write_head(writer, 200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
            await writer.drain()
            await _until_peer_closes(reader)
            return False
        if mode == "status_500":
            body = _error("the backend is broken", "server_error")
            _write_response(writer, 500, body)
            await writer.drain()
            return True
        if mode in HUGE_MODES and not probe:
            return await self._huge(writer, mode, payload)
        if mode == "status_429":
            body = _error("slow down", "rate_limit_error")
            _write_response(writer, 429, body, {"Retry-After": str(self.retry_after)})
            await writer.drain()
            return True

        # ok and reset_mid_body share the answer; reset_mid_body breaks it off half way.
        if probe:
            status, body, ctype = 200, self._models(), "application/json"
        elif req.method == "POST" and req.path == "/v1/chat/completions" and isinstance(payload, dict):
            if stream:
                return await self._sse(writer, payload, reset=mode == "reset_mid_body")
            status, body, ctype = 200, self._completion(payload), "application/json"
        else:
            status, body, ctype = 404, _error(f"no route {req.method} {req.path}", "invalid_request_error"), None
        if mode == "reset_mid_body":
            _write_head(writer, status, {"Content-Type": ctype or "application/json", "Content-Length": str(len(body))})
            writer.write(body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.02)  # let the gateway read the headers first: the break is mid-body
            _reset(writer)
            return False
        _write_response(writer, status, body)
        await writer.drain()
        return True

    async def _sse(self, writer: asyncio.StreamWriter, payload: dict[str, Any], *, reset: bool) -> bool:
        _write_head(writer, 200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"})
        created = int(time.time())
        events = [{"role": "assistant", "content": ""}, *({"content": f"tok{i} "} for i in range(3))]
        for i, delta in enumerate([*events, None]):
            chunk = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": payload.get("model"),
                "choices": [
                    {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": None if delta else "stop"}
                ],
            }
            _write_chunk(writer, b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await writer.drain()
            if reset and i == 1:
                await asyncio.sleep(0.02)
                _reset(writer)
                return False
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def _models(self) -> bytes:
        return json.dumps({"object": "list", "data": [{"id": self.name, "object": "model"}]}).encode()

    async def _huge(self, writer: asyncio.StreamWriter, mode: str, payload: Any) -> bool:
        size = self.huge_bytes
        if mode == "huge_error":
            status, ctype = 500, "application/json"
            head, tail = b'{"error": {"message": "', b'", "type": "server_error", "param": null, "code": null}}'
        else:
            status, ctype = 200, self.huge_type
            model = json.dumps(payload.get("model") if isinstance(payload, dict) else None).encode()
            head = b'{"id": "chatcmpl-huge", "object": "chat.completion", "created": 0, "model": ' + model
            head += b', "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
            tail = b'"}, "logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, '
            tail += b'"completion_tokens": 3, "total_tokens": 8}}'
        framing = {"Content-Length": str(size)} if mode == "huge_length" else {"Transfer-Encoding": "chunked"}
        _write_head(writer, status, {"Content-Type": ctype, **framing})
        chunked = mode != "huge_length"
        filler = b"a" * HUGE_PIECE
        left = max(size - len(head) - len(tail), 0)
        pieces = [head]
        while True:
            while left and sum(map(len, pieces)) < HUGE_PIECE:
                n = min(left, HUGE_PIECE)
                pieces.append(filler[:n])
                left -= n
            if not left:
                pieces.append(tail)
            data = b"".join(pieces)
            pieces = []
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
            await writer.drain()  # raises once the peer dropped the connection: the answer was cut off
            self.huge_sent += len(data)
            if not left:
                break
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return True

    def _completion(self, payload: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": payload.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"hello from {self.name}"},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        ).encode()

    def __repr__(self) -> str:
        return f"<FaultServer {self.name} {self.mode} {self.url} requests={dict(self.requests)}>"


# -- HTTP/1.1 by hand --------------------------------------------------------------------------------------

_REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the peer closed between requests
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return _Request(method, target.split("?", 1)[0], headers, body)


def _write_head(writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def _write_response(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    _write_head(
        writer, status, {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    )
    writer.write(body)


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _error(message: str, type_: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": None}}).encode()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _until_peer_closes(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass
