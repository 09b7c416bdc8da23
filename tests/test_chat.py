"""Chat and legacy completions through the gateway, end to end over loopback HTTP.

The client is the official ``openai`` SDK wherever the SDK can make the call (strict response validation, no
retries), and a raw HTTP client (``http.client`` or a socket) where exact bytes, timing, malformed requests or a
disconnect matter. Upstreams are the scripted fakes from ``fakes.py`` or small aiohttp apps defined here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from aiohttp import web

from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer, UpstreamServer, free_port

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]

CHAT = "/v1/chat/completions"
ERROR_KEYS = {"message", "type", "param", "code"}


# --------------------------------------------------------------------------------------------------- helpers


def sdk(gw: GatewayServer, *, strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=10, _strict_response_validation=strict
    )


def chat_gateway(
    start_gateway: StartGateway, url: str, *, upstream_model: str = "up-chat", **service: Any
) -> GatewayServer:
    """A gateway with one chat instance `m-chat` (alias `gpt-4o`) at ``url``."""
    return start_gateway(
        {
            "aliases": {"gpt-4o": "m-chat"},
            "services": {
                "chat": {
                    **service,
                    "instances": [{"name": "m-chat", "base_url": url, "upstream_model": upstream_model}],
                }
            },
        }
    )


@dataclass
class Raw:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    base_url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> Raw:
    """One request with http.client; never raises on an HTTP status. A dict/list body is sent as JSON."""
    u = urlsplit(base_url)
    hdrs = dict(headers or {})
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Raw(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def assert_error_shape(body: bytes | Any) -> dict[str, Any]:
    """The OpenAI error object: exactly {"error": {message, type, param, code}}, message a non-empty string."""
    data = json.loads(body) if isinstance(body, bytes | str) else body
    assert isinstance(data, dict)
    assert set(data) == {"error"}, data
    err = data["error"]
    assert set(err) == ERROR_KEYS, err
    assert isinstance(err["message"], str)
    assert err["message"]
    assert isinstance(err["type"], str)
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    return err


def wait_for(predicate: Callable[[], bool], timeout: float = 1.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def inflight(gw: GatewayServer) -> list[int]:
    return [inst.inflight for inst in gw.gateway.table.all_instances()]


def assert_no_inflight(gw: GatewayServer) -> None:
    assert wait_for(lambda: not any(inflight(gw)), 1.0), inflight(gw)


def sse_events(body: bytes) -> list[bytes]:
    """Split an SSE body into events (without their terminating blank line)."""
    assert body.endswith(b"\n\n"), body[-50:]
    return body[:-2].split(b"\n\n")


def event_data(event: bytes) -> Any:
    assert event.startswith(b"data: "), event
    data = event[len(b"data: ") :]
    return data if data == b"[DONE]" else json.loads(data)


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def drain(stream: Iterable[Any], into: list[Any]) -> None:
    for item in stream:
        into.append(item)


@dataclass
class Scripted:
    """A tiny upstream answering every request with scripted bytes, recording what it got and when it sent.

    ``chunks`` makes it stream (chunked transfer) with ``gap`` seconds after each write; ``hold`` makes it wait up
    to that long before answering while watching for the gateway closing the connection (``closed_at``);
    ``abort`` drops the connection after the last chunk instead of ending the body properly."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    gap: float = 0.0
    hold: float = 0.0
    abort: bool = False
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    closed_at: float | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, await request.read()))
        if self.hold:
            deadline = time.monotonic() + self.hold
            while time.monotonic() < deadline:
                if request.transport is None or request.transport.is_closing():
                    self.closed_at = time.monotonic()
                    return web.Response(status=499)
                await asyncio.sleep(0.01)
        headers = {"Content-Type": self.content_type, **self.headers}
        if self.chunks is None:
            return web.Response(status=self.status, body=self.body, headers=headers)
        resp = web.StreamResponse(status=self.status, headers=headers)
        await resp.prepare(request)
        for chunk in self.chunks:
            await resp.write(chunk)
            self.sent_at.append(time.monotonic())
            if self.gap:
                await asyncio.sleep(self.gap)
        if self.abort:
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write_eof()
        return resp


@pytest.fixture
def serve_app(bg: BackgroundLoop) -> Iterator[Callable[[web.Application], str]]:
    started: list[UpstreamServer] = []

    def start(app: web.Application) -> str:
        server = UpstreamServer(bg, app).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def broken_upstream(bg: BackgroundLoop) -> Iterator[Callable[[str], str]]:
    """A TCP server that is not a working HTTP server: `garbage` answers non-HTTP bytes, `close` closes the
    connection after reading the request, `reset` resets it (RST)."""
    servers: list[asyncio.Server] = []

    def start(behaviour: str) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            if behaviour == "garbage":
                writer.write(b"SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\r\n")
                await writer.drain()
                writer.close()
            elif behaviour == "close":
                writer.close()
            else:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(handle, "127.0.0.1", 0)

        server = bg.run(serve())
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:

        async def stop(s: asyncio.Server = server) -> None:
            s.close()
            await s.wait_closed()

        bg.run(stop())


# ------------------------------------------------------------------------------------ 1. chat pass-through


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": False,
        },
    },
}
MULTIMODAL_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this image? Ünïcödé ☕ 𝄞"},
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==", "detail": "low"},
            },
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
]


def test_chat_request_fields_reach_upstream_unchanged_except_model(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = one_of_each
    client = sdk(gw)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=MULTIMODAL_MESSAGES,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
        logit_bias={"50256": -100, "1734": 5},
        seed=1234567890123,
        n=2,
        temperature=0.1,
        top_p=0.95,
        max_completion_tokens=64,
        stop=["\n\n", "END"],
        logprobs=True,
        top_logprobs=3,
        user="user-42",
        extra_body={
            "top_k": 40,
            "repetition_penalty": 1.05,
            "chat_template_kwargs": {"enable_thinking": False},
            "guided_choice": None,
        },
    )
    assert raw.status_code == 200
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from a"

    sent = json.loads(raw.http_request.content)
    # The SDK really sent what this test is about (so the comparison below covers them).
    assert sent["top_k"] == 40
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["messages"] == MULTIMODAL_MESSAGES
    assert sent["tools"] == TOOLS

    assert len(fake.requests) == 1
    got = fake.last
    assert got.path == CHAT
    assert got.headers["Content-Type"].startswith("application/json")
    assert got.json["model"] == "up-chat"  # alias gpt-4o -> name m-chat -> upstream_model up-chat
    assert got.json == {**sent, "model": "up-chat"}
    assert list(got.json) == list(sent)  # nothing added, nothing dropped, same order


def test_chat_raw_json_body_passes_through_with_only_model_rewritten(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    """A hand-written body: unknown vendor fields, nulls, unusual numbers and escapes survive the gateway."""
    fake, gw = one_of_each
    body = {
        "model": "m-chat",
        "messages": [
            {"role": "user", "content": 'line1\nline2\u2028"quoted" \\ back </script> \u00e9 😀', "name": "alice"}
        ],
        "stream": False,
        "max_tokens": None,
        "temperature": 0,
        "presence_penalty": -0.5,
        "frequency_penalty": 1e-7,
        "seed": -9007199254740993,
        "logit_bias": {"0": 100, "100257": -100},
        "guided_json": {"type": "object", "properties": {}},
        "min_p": 0.05,
        "skip_special_tokens": False,
        "metadata": {"nested": [1, 2.5, True, None, {"deep": []}]},
    }
    resp = raw_request(gw.url, "POST", CHAT, body)
    assert resp.status == 200, resp.body
    assert fake.last.json == {**body, "model": "up-chat"}


def test_chat_non_streaming_response_is_passed_through_byte_for_byte(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], str]
) -> None:
    upstream_body = (
        b'{ "id": "chatcmpl-9",  "object": "chat.completion", "created": 1700000000, "model": "up-chat",\n'
        b'  "system_fingerprint": "fp_1",\n'
        b'  "choices": [ { "index": 0, "message": { "role": "assistant", "content": "caf\\u00e9 \xe2\x98\x95",'
        b' "refusal": null }, "logprobs": null, "finish_reason": "stop" } ],\n'
        b'  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},\n'
        b'  "vendor_extra": {"kv_cache_hit_rate": 0.5000} }\n'
    )
    up = Scripted(
        body=upstream_body,
        content_type="application/json; charset=utf-8",
        headers={"x-request-id": "req-abc123", "openai-processing-ms": "12"},
    )
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    raw = sdk(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=user())  # type: ignore[arg-type]
    assert raw.status_code == 200
    assert raw.content == upstream_body
    assert raw.headers["content-type"] == "application/json; charset=utf-8"
    # The upstream's request id is kept under another name: x-request-id is the gateway's own.
    assert raw.headers["x-upstream-request-id"] == "req-abc123"
    assert raw.headers["x-request-id"] != "req-abc123"
    assert raw.headers["openai-processing-ms"] == "12"
    assert raw.headers["content-length"] == str(len(upstream_body))
    completion = raw.parse()
    assert completion.choices[0].message.content == "café ☕"
    assert completion.id == "chatcmpl-9"
    assert json.loads(up.requests[0][1])["model"] == "up-chat"


def test_large_inline_image_passes_through(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    """Chat requests with inline images are large; the body arrives in many pieces and must survive intact."""
    fake, gw = one_of_each
    image = "data:image/png;base64," + base64.b64encode(hashlib.sha256(b"img").digest() * 100_000).decode()
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": image}}],
        }
    ]
    out = sdk(gw).chat.completions.create(model="m-chat", messages=messages)  # type: ignore[arg-type]
    assert out.choices[0].message.content == "hello from a"
    assert len(fake.last.body) > 4_000_000
    assert fake.last.json["messages"] == messages


# ------------------------------------------------------------------------------------ 2. legacy completions


def test_legacy_completions_pass_through(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    raw = sdk(gw).completions.with_raw_response.create(
        model="gpt-4o",
        prompt=["Once upon", "a time"],
        max_tokens=7,
        temperature=0.0,
        suffix="!",
        echo=False,
        logit_bias={"13": -100},
        seed=3,
        stop="\n",
        extra_body={"top_k": 5, "ignore_eos": True},
    )
    assert raw.status_code == 200
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert completion.choices[0].text == " completion from a"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 5
    sent = json.loads(raw.http_request.content)
    assert sent["top_k"] == 5
    assert fake.last.path == "/v1/completions"
    assert fake.last.json == {**sent, "model": "up-chat"}
    assert json.loads(raw.content)["model"] == "up-chat"  # the body is the upstream's, not rewritten


def test_legacy_completions_stream(start_gateway: StartGateway, serve_app: Callable[[web.Application], str]) -> None:
    def chunk(text: str, finish: str | None = None) -> bytes:
        return (
            b"data: "
            + json.dumps(
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 1,
                    "model": "up-chat",
                    "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                }
            ).encode()
            + b"\n\n"
        )

    up = Scripted(
        content_type="text/event-stream",
        chunks=[chunk(" Hello"), chunk(" world"), chunk("", "length"), b"data: [DONE]\n\n"],
    )
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    # Not strict: the SDK's `Completion` type (also used for stream chunks) rejects the `finish_reason: null`
    # that real streaming completions carry on every chunk but the last.
    parts = list(sdk(gw, strict=False).completions.create(model="m-chat", prompt="Say", stream=True))
    assert [p.choices[0].text for p in parts] == [" Hello", " world", ""]
    assert parts[-1].choices[0].finish_reason == "length"
    path, body = up.requests[0]
    assert path == "/v1/completions"
    assert json.loads(body) == {"model": "up-chat", "prompt": "Say", "stream": True}


# ------------------------------------------------------------------------------------ 3. streaming


def test_stream_with_sdk_passes_stream_options_and_yields_chunks_in_order(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = one_of_each
    chunks = list(
        sdk(gw).chat.completions.create(
            model="gpt-4o",
            messages=user(),
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"top_k": 1},
        )
    )
    assert fake.last.json == {
        "model": "up-chat",
        "messages": user(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_k": 1,
    }
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in with_choices[1:-1]] == ["tok0 ", "tok1 ", "tok2 "]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8
    assert_no_inflight(gw)


def test_stream_raw_bytes_headers_and_done(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m-chat", "messages": user(), "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    events = sse_events(resp.body)
    assert events[-1] == b"data: [DONE]"
    assert resp.body.endswith(b"data: [DONE]\n\n")
    data = [event_data(e) for e in events[:-1]]
    assert [d["object"] for d in data] == ["chat.completion.chunk"] * 5
    assert [d["choices"][0]["delta"].get("content") for d in data] == ["", "tok0 ", "tok1 ", "tok2 ", None]
    assert [d["choices"][0]["finish_reason"] for d in data] == [None, None, None, None, "stop"]
    assert all(d["model"] == "up-chat" for d in data)


def test_stream_bytes_are_forwarded_exactly_even_when_events_are_split(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], str]
) -> None:
    chunks = [
        b": keep-alive\n\n",
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-chat",',  # half an event
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"h\\u00e9"},"finish_reason":null}]}\n',
        b"\n",
        b'event: message\r\ndata: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-chat",'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n'
        b"data: [DONE]\n\n",
    ]
    up = Scripted(content_type="text/event-stream", chunks=chunks, gap=0.02)
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m-chat", "messages": user(), "stream": True})
    assert resp.status == 200
    assert resp.body == b"".join(chunks)


def _timed_stream(gw: GatewayServer, payload: dict[str, Any]) -> tuple[float, list[tuple[float, bytes]]]:
    """POST a streaming request; return (time the request was sent, [(arrival time, event bytes)])."""
    u = urlsplit(gw.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        body = json.dumps(payload).encode()
        started = time.monotonic()
        conn.request("POST", CHAT, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        events: list[tuple[float, bytes]] = []
        current = b""
        while line := resp.readline():
            current += line
            if line == b"\n":
                events.append((time.monotonic(), current))
                current = b""
        return started, events
    finally:
        conn.close()


def test_stream_is_not_buffered(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    gap = 0.3
    fake.stream_gap = gap
    started, events = _timed_stream(gw, {"model": "m-chat", "messages": user(), "stream": True})
    assert len(events) == 6
    assert events[-1][1] == b"data: [DONE]\n\n"
    # The fake sleeps `gap` after each of the 5 events before [DONE], so it cannot have sent [DONE] before
    # started + 5 * gap. The first event must have reached the client before that.
    last_sent_no_earlier_than = started + 5 * gap
    assert events[0][0] < last_sent_no_earlier_than, (events[0][0] - started, 5 * gap)
    arrivals = [t for t, _ in events]
    assert arrivals == sorted(arrivals)


def test_stream_each_event_arrives_before_the_next_is_sent(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], str]
) -> None:
    chunks = [b'data: {"n": %d}\n\n' % i for i in range(4)] + [b"data: [DONE]\n\n"]
    up = Scripted(content_type="text/event-stream", chunks=chunks, gap=0.25)
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    _started, events = _timed_stream(gw, {"model": "m-chat", "messages": user(), "stream": True})
    assert [e for _, e in events] == chunks
    for i in range(len(chunks) - 1):
        assert events[i][0] < up.sent_at[i + 1], f"event {i} was held back until event {i + 1} was sent"


# ------------------------------------------------------------------------------------ 4. failure mid-stream


def test_upstream_breaking_mid_stream_ends_with_one_error_event(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    fake.break_stream_after = 2
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m-chat", "messages": user(), "stream": True})
    assert resp.status == 200
    events = sse_events(resp.body)
    assert len(events) == 3, events
    first, second, last = (event_data(e) for e in events)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert second["choices"][0]["delta"] == {"content": "tok0 "}
    err = assert_error_shape(last)
    assert err["type"] == "api_error"
    assert b"[DONE]" not in resp.body
    assert_no_inflight(gw)


def test_upstream_breaking_mid_stream_raises_api_error_in_sdk(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    fake.break_stream_after = 3
    stream = sdk(gw).chat.completions.create(model="m-chat", messages=user(), stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        drain(stream, got)
    assert [c.choices[0].delta.content for c in got] == ["", "tok0 ", "tok1 "]
    assert isinstance(info.value.body, dict)
    assert set(info.value.body) == ERROR_KEYS
    assert info.value.message == info.value.body["message"]
    assert_no_inflight(gw)


def test_upstream_dying_mid_event_never_forwards_half_an_event(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], str]
) -> None:
    whole = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up-chat",'
        b'"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":null}]}\n\n'
    )
    up = Scripted(
        content_type="text/event-stream", chunks=[whole, b'data: {"id":"c","object":"chat.compl'], gap=0.05, abort=True
    )
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m-chat", "messages": user(), "stream": True})
    assert resp.status == 200
    assert resp.body.startswith(whole)
    events = sse_events(resp.body)
    assert len(events) == 2
    assert_error_shape(event_data(events[1]))
    assert_no_inflight(gw)


def test_upstream_dying_mid_body_of_non_streaming_answer_is_502(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], str]
) -> None:
    up = Scripted(chunks=[b'{"id": "chatcmpl-1", "object": "chat.completion", "choi'], gap=0.05, abort=True)
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user())
    assert info.value.status_code == 502
    assert assert_error_shape(info.value.response.content)["type"] == "api_error"
    assert_no_inflight(gw)


def test_upstream_stalling_mid_stream_ends_with_timeout_error_event(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake, url = start_upstream("a")
    fake.stream_gap = 0.6
    fake.stream_events = 1
    gw = chat_gateway(start_gateway, url, timeouts={"idle": 0.2})
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m-chat", "messages": user(), "stream": True})
    events = sse_events(resp.body)
    assert len(events) == 2
    err = assert_error_shape(event_data(events[-1]))
    assert err["code"] == "upstream_timeout"
    assert_no_inflight(gw)


# ------------------------------------------------------------------------------------ 5. client disconnect


def _open_raw_stream(gw: GatewayServer, payload: dict[str, Any]) -> tuple[socket.socket, bytes]:
    """Send a request on a plain socket and read until the first complete SSE event arrived."""
    u = urlsplit(gw.url)
    assert u.hostname is not None
    assert u.port is not None
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    body = json.dumps(payload).encode()
    sock.sendall(
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    received = b""
    while b"\r\n\r\n" not in received or b"\n\n" not in received.split(b"\r\n\r\n", 1)[1]:
        data = sock.recv(65536)
        assert data, received
        received += data
    return sock, received


def test_client_disconnect_mid_stream_closes_upstream_and_releases_instance(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = one_of_each
    # The fake notices a closed connection on its next write: a short gap makes that moment precise.
    fake.stream_gap = 0.005
    fake.stream_events = 2000  # ~10 s if nobody stops it
    sock, received = _open_raw_stream(gw, {"model": "m-chat", "messages": user(), "stream": True})
    assert received.startswith(b"HTTP/1.1 200")
    assert b"chat.completion.chunk" in received
    assert sum(inflight(gw)) == 1
    assert fake.disconnects == 0
    closed = time.monotonic()
    sock.close()
    assert wait_for(lambda: fake.disconnects == 1, 1.0, interval=0.002), "upstream stream was not closed"
    # What the issue promises users: the backend stops generating within 100 ms of the client leaving.
    assert time.monotonic() - closed < 0.1
    assert_no_inflight(gw)
    # The gateway keeps working for the next client.
    assert sdk(gw).chat.completions.create(model="m-chat", messages=user()).choices[0].message.content


def test_client_disconnect_cancels_only_its_own_stream(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    fake.stream_gap = 0.05
    fake.stream_events = 12
    payload = {"model": "m-chat", "messages": user(), "stream": True}
    leaving, _ = _open_raw_stream(gw, payload)
    staying, received = _open_raw_stream(gw, payload)
    assert sum(inflight(gw)) == 2
    leaving.close()
    while not received.endswith(b"0\r\n\r\n"):  # the end of the chunked body
        data = staying.recv(65536)
        assert data, received
        received += data
    staying.close()
    assert b"data: [DONE]" in received
    assert b"tok11 " in received
    assert b'"error"' not in received
    assert fake.disconnects == 1
    assert_no_inflight(gw)


def test_client_disconnect_while_waiting_for_slow_upstream_cancels_it(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], str]
) -> None:
    up = Scripted(body=b"{}", hold=10)
    gw = chat_gateway(start_gateway, serve_app(up.app()))
    u = urlsplit(gw.url)
    assert u.hostname is not None
    assert u.port is not None
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    body = json.dumps({"model": "m-chat", "messages": user()}).encode()
    sock.sendall(
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    assert wait_for(lambda: len(up.requests) == 1, 2.0)
    assert inflight(gw) == [1]
    closed = time.monotonic()
    sock.close()
    assert wait_for(lambda: up.closed_at is not None, 1.0), "upstream request was not cancelled"
    assert up.closed_at is not None
    assert up.closed_at - closed < 1.0
    assert_no_inflight(gw)


def test_client_disconnect_non_streaming_with_fake_delay_releases_instance(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = one_of_each
    fake.delay = 0.8
    u = urlsplit(gw.url)
    assert u.hostname is not None
    assert u.port is not None
    sock = socket.create_connection((u.hostname, u.port), timeout=5)
    body = json.dumps({"model": "m-chat", "messages": user()}).encode()
    sock.sendall(
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    assert wait_for(lambda: len(fake.requests) == 1, 2.0)
    assert sum(inflight(gw)) == 1
    sock.close()
    # Well before the fake would have answered (0.8 s).
    assert wait_for(lambda: not any(inflight(gw)), 0.5), inflight(gw)


# ------------------------------------------------------------------------------------ 6. errors: requests


def test_malformed_json_is_400(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    resp = raw_request(gw.url, "POST", CHAT, b'{"model": "m-chat", "messages": [', {"Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.headers["Content-Type"].startswith("application/json")
    err = assert_error_shape(resp.body)
    assert err["type"] == "invalid_request_error"
    assert fake.requests == []


@pytest.mark.parametrize("depth", [129, 254, 255, 1024, 1025])
def test_deeply_nested_json_is_400(one_of_each: tuple[FakeOpenAI, GatewayServer], depth: int) -> None:
    # 255-1024 levels parse but cannot be serialised again for the upstream (orjson's limit is 254): that was a
    # 500 with a traceback per request. Every depth past the one limit (128) is the same 400, at parse time.
    fake, gw = one_of_each
    nested = b'{"a":' * (depth - 3) + b"1" + b"}" * (depth - 3)  # the body, messages and one message: 3 levels
    body = b'{"model": "m-chat", "messages": [{"role": "user", "content": "hi", "x": ' + nested + b"}]}"
    resp = raw_request(gw.url, "POST", CHAT, body, {"Content-Type": "application/json"})
    assert resp.status == 400, resp.body[:300]
    err = assert_error_shape(resp.body)
    assert (err["type"], err["code"]) == ("invalid_request_error", "json_too_deep")
    assert fake.requests == []


def test_json_at_the_depth_limit_and_with_many_brackets_is_forwarded(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = one_of_each
    nested = b"[" * 125 + b"1" + b"]" * 125  # 128 levels with the body, messages and the message
    many = b"[" + b",".join([b'{"a": [1, {"b": []}]}'] * 500) + b"]"  # many brackets, shallow
    text = b'"' + b"[[[[{{{{" * 50 + b'"'  # brackets inside a string are no nesting
    body = b'{"model": "m-chat", "messages": [{"role": "user", "content": "hi", "x": %s, "y": %s, "z": %s}]}' % (
        nested,
        many,
        text,
    )
    resp = raw_request(gw.url, "POST", CHAT, body, {"Content-Type": "application/json"})
    assert resp.status == 200, resp.body[:300]
    assert len(fake.requests) == 1


def test_json_body_that_is_not_an_object_is_400(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    resp = raw_request(gw.url, "POST", CHAT, [{"model": "m-chat"}])
    assert resp.status == 400
    assert assert_error_shape(resp.body)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": None, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m-chat"}, "messages"),
        ({"model": "m-chat", "messages": "hi"}, "messages"),
        ({"model": "m-chat", "messages": []}, "messages"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m-chat", "messages": [{"role": "user", "content": "hi"}], "stream": "true"}, "stream"),
        ({"model": "m-chat", "messages": [{"role": "user", "content": "hi"}], "stream": 1}, "stream"),
    ],
    ids=[
        "no-model",
        "null-model",
        "no-messages",
        "messages-string",
        "messages-empty",
        "model-int",
        "stream-string",
        "stream-int",
    ],
)
def test_invalid_chat_request_is_400_with_param(
    one_of_each: tuple[FakeOpenAI, GatewayServer], body: dict[str, Any], param: str
) -> None:
    fake, gw = one_of_each
    resp = raw_request(gw.url, "POST", CHAT, body)
    assert resp.status == 400
    err = assert_error_shape(resp.body)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert fake.requests == []


def test_completions_missing_prompt_is_400(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    resp = raw_request(gw.url, "POST", "/v1/completions", {"model": "m-chat"})
    assert resp.status == 400
    assert assert_error_shape(resp.body)["param"] == "prompt"


def test_unknown_model_is_404_model_not_found(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gw).chat.completions.create(model="no-such-model", messages=user())
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert "no-such-model" in info.value.message
    assert_error_shape(info.value.response.content)
    assert fake.requests == []


def test_model_of_another_service_is_404_naming_it(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gw).chat.completions.create(model="m-embedding", messages=user())
    assert info.value.code == "model_not_found"
    assert "m-embedding" in info.value.message
    assert "embedding" in info.value.message.replace("m-embedding", "")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("POST", "/v1/chat/completion"), ("POST", "/v1/chat/completions/x"), ("GET", "/nope")],
)
def test_unknown_url_is_404(one_of_each: tuple[FakeOpenAI, GatewayServer], method: str, path: str) -> None:
    _fake, gw = one_of_each
    resp = raw_request(gw.url, method, path, {"model": "m-chat"} if method == "POST" else None)
    assert resp.status == 404
    assert assert_error_shape(resp.body)["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", CHAT, "POST"), ("PUT", "/v1/completions", "POST"), ("POST", "/v1/models", "GET")],
)
def test_wrong_method_is_405_with_allow(
    one_of_each: tuple[FakeOpenAI, GatewayServer], method: str, path: str, allow: str
) -> None:
    _fake, gw = one_of_each
    resp = raw_request(gw.url, method, path)
    assert resp.status == 405
    assert resp.headers["Allow"] == allow
    assert assert_error_shape(resp.body)["type"] == "invalid_request_error"


def test_body_over_max_body_bytes_is_413(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(
        {"server": {"max_body_bytes": 4096}, "services": {"chat": {"instances": [{"name": "m-chat", "base_url": url}]}}}
    )
    small = json.dumps({"model": "m-chat", "messages": user("x" * 3000)}).encode()
    assert len(small) < 4096
    assert raw_request(gw.url, "POST", CHAT, small, {"Content-Type": "application/json"}).status == 200

    big = json.dumps({"model": "m-chat", "messages": user("x" * 5000)}).encode()
    resp = raw_request(gw.url, "POST", CHAT, big, {"Content-Type": "application/json"})
    assert resp.status == 413
    err = assert_error_shape(resp.body)
    assert err["type"] == "invalid_request_error"

    # Without a Content-Length (chunked upload) the limit holds too.
    def parts() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    u = urlsplit(gw.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", CHAT, body=parts(), headers={"Content-Type": "application/json"}, encode_chunked=True)
        chunked = conn.getresponse()
        assert chunked.status == 413
        assert_error_shape(chunked.read())
    finally:
        conn.close()
    assert len(fake.requests) == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(one_of_each: tuple[FakeOpenAI, GatewayServer], content_type: str) -> None:
    fake, gw = one_of_each
    body = json.dumps({"model": "m-chat", "messages": user()}).encode()
    resp = raw_request(gw.url, "POST", CHAT, body, {"Content-Type": content_type})
    assert resp.status == 415
    assert assert_error_shape(resp.body)["type"] == "invalid_request_error"
    assert fake.requests == []


def test_json_content_type_with_charset_is_accepted(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    body = json.dumps({"model": "m-chat", "messages": user()}).encode()
    resp = raw_request(gw.url, "POST", CHAT, body, {"Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 200


# ------------------------------------------------------------------------------------ 6. errors: upstream


def test_upstream_connection_refused_is_503_quickly(start_gateway: StartGateway) -> None:
    gw = chat_gateway(start_gateway, f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user())
    assert time.monotonic() - started < 2.0
    assert info.value.status_code == 503
    err = assert_error_shape(info.value.response.content)
    assert err["type"] == "overloaded_error"
    assert_no_inflight(gw)


@pytest.mark.parametrize("behaviour", ["garbage", "close", "reset"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_not_speaking_http_is_502(
    start_gateway: StartGateway, broken_upstream: Callable[[str], str], behaviour: str, stream: bool
) -> None:
    gw = chat_gateway(start_gateway, broken_upstream(behaviour))
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m-chat", "messages": user(), "stream": stream})
    assert resp.status == 502, resp.body
    assert assert_error_shape(resp.body)["type"] == "api_error"
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user())
    assert info.value.status_code == 502
    assert_no_inflight(gw)


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_slower_than_first_byte_timeout_is_504(
    start_upstream: StartUpstream, start_gateway: StartGateway, stream: bool
) -> None:
    fake, url = start_upstream("a")
    fake.delay = 1.0
    gw = chat_gateway(start_gateway, url, timeouts={"first_byte": 0.3})
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user(), stream=stream)
    assert time.monotonic() - started < fake.delay
    assert info.value.status_code == 504
    err = assert_error_shape(info.value.response.content)
    assert err["code"] == "upstream_timeout"
    assert_no_inflight(gw)


@pytest.mark.parametrize(
    ("status", "exc_class", "error", "headers"),
    [
        (
            400,
            openai.BadRequestError,
            {
                "message": "temperature must be <= 2",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "invalid_value",
            },
            {},
        ),
        (
            401,
            openai.AuthenticationError,
            {
                "message": "Incorrect API key provided: sk-***",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            },
            {},
        ),
        (
            429,
            openai.RateLimitError,
            {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            },
            {"Retry-After": "7", "x-ratelimit-remaining-requests": "0", "x-request-id": "req-429"},
        ),
    ],
)
def test_openai_shaped_upstream_errors_pass_through_unchanged(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
    status: int,
    exc_class: type[openai.APIStatusError],
    error: dict[str, Any],
    headers: dict[str, str],
) -> None:
    fake, gw = one_of_each
    raw_body = json.dumps({"error": error}, indent=1).encode()  # unusual formatting, must survive byte for byte
    fake.fail(CHAT, status, raw_body, headers=headers)
    with pytest.raises(exc_class) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user())
    assert info.value.status_code == status
    assert info.value.response.content == raw_body
    assert info.value.body == error
    assert info.value.code == error["code"]
    for name, value in headers.items():
        # x-request-id is the gateway's own; the upstream's is kept as x-upstream-request-id.
        name = "x-upstream-request-id" if name == "x-request-id" else name
        assert info.value.response.headers[name] == value
    assert len(fake.requests) == 1
    assert_no_inflight(gw)


def test_upstream_error_on_stream_request_is_an_http_error_not_a_stream(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = one_of_each
    fake.fail(
        CHAT,
        429,
        {"error": {"message": "slow down", "type": "requests", "param": None, "code": None}},
        headers={"Retry-After": "3"},
    )
    with pytest.raises(openai.RateLimitError) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user(), stream=True)
    assert info.value.status_code == 429
    assert info.value.body == {"message": "slow down", "type": "requests", "param": None, "code": None}
    assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("status", "body", "content_type", "exc_class", "message", "type_"),
    [
        (
            500,
            b"<html><head><title>500 Internal Server Error</title></head><body><h1>Oops</h1></body></html>",
            "text/html",
            openai.InternalServerError,
            None,
            "api_error",
        ),
        (
            502,
            b"<html><body>Bad Gateway</body></html>",
            "text/html; charset=utf-8",
            openai.InternalServerError,
            None,
            "api_error",
        ),
        (
            422,
            b'{"detail": "Field required: messages"}',
            "application/json",
            openai.UnprocessableEntityError,
            "Field required: messages",
            "invalid_request_error",
        ),
        (
            422,
            b'{"detail": [{"loc": ["body", "max_tokens"], "msg": "Input should be a valid integer", '
            b'"type": "int_parsing"}]}',
            "application/json",
            openai.UnprocessableEntityError,
            "Input should be a valid integer",
            "invalid_request_error",
        ),
        (
            404,
            b'{"error": "model \'llama9\' not found, try pulling it first"}',
            "application/json",
            openai.NotFoundError,
            "model 'llama9' not found, try pulling it first",
            "not_found_error",
        ),
        (
            503,
            b"Service Unavailable: model is loading\n",
            "text/plain",
            openai.InternalServerError,
            "Service Unavailable: model is loading",
            "overloaded_error",
        ),
        (
            400,
            b'{"error": {"message": "context length exceeded"}}',
            "application/json",
            openai.BadRequestError,
            "context length exceeded",
            "invalid_request_error",
        ),
        (500, b"", "text/plain", openai.InternalServerError, None, "api_error"),
    ],
    ids=[
        "html-500",
        "html-502",
        "fastapi-422",
        "fastapi-422-list",
        "ollama-404",
        "text-503",
        "partial-openai-400",
        "empty-500",
    ],
)
def test_non_openai_upstream_errors_are_normalised(
    one_of_each: tuple[FakeOpenAI, GatewayServer],
    status: int,
    body: bytes,
    content_type: str,
    exc_class: type[openai.APIStatusError],
    message: str | None,
    type_: str,
) -> None:
    fake, gw = one_of_each
    fake.fail(CHAT, status, body, content_type=content_type)
    with pytest.raises(exc_class) as info:
        sdk(gw).chat.completions.create(model="m-chat", messages=user())
    assert info.value.status_code == status
    assert info.value.response.headers["content-type"].startswith("application/json")
    err = assert_error_shape(info.value.response.content)
    assert err["type"] == type_
    if message is not None:
        assert err["message"] == message
    else:
        assert "<" not in err["message"]  # no HTML dumped into the message
    assert info.value.body == err
    assert_no_inflight(gw)


# ------------------------------------------------------------------------------------ 7. models, health, ready


def test_models_list_and_retrieve(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    _fake, url = start_upstream("a")
    gw = start_gateway(
        {
            "aliases": {"gpt-4o": "llama", "text-embedding-3-small": "bge-m3"},
            "services": {
                "chat": {
                    "instances": [
                        {"name": "meta-llama/Llama-3.1-8B-Instruct", "models": ["llama"], "base_url": url},
                        {"name": "qwen", "base_url": url},
                    ]
                },
                "embedding": {"instances": [{"name": "bge-m3", "base_url": url}, {"name": "qwen", "base_url": url}]},
            },
        }
    )
    client = sdk(gw)
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(
        ["meta-llama/Llama-3.1-8B-Instruct", "llama", "qwen", "bge-m3", "gpt-4o", "text-embedding-3-small"]
    )
    for m in models:
        assert m.object == "model"
        assert isinstance(m.created, int)
        assert m.created > 0
        assert isinstance(m.owned_by, str)
        assert m.owned_by

    for model_id in ("gpt-4o", "meta-llama/Llama-3.1-8B-Instruct", "bge-m3"):
        got = client.models.retrieve(model_id)
        assert got.id == model_id
        assert got.object == "model"

    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-5-nonexistent")
    assert info.value.code == "model_not_found"
    assert_error_shape(info.value.response.content)

    resp = raw_request(gw.url, "GET", "/v1/models")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["object"] == "list"


def test_health_and_ready(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    health = raw_request(gw.url, "GET", "/health")
    assert health.status == 200
    assert health.json() == {"status": "ok"}
    ready = raw_request(gw.url, "GET", "/ready")
    assert ready.status == 200


@pytest.mark.parametrize("config", [{}, {"services": {"chat": {"instances": []}}}], ids=["no-services", "no-instances"])
def test_ready_is_503_without_instances(start_gateway: StartGateway, config: dict[str, Any]) -> None:
    gw = start_gateway(config)
    ready = raw_request(gw.url, "GET", "/ready")
    assert ready.status == 503
    assert raw_request(gw.url, "GET", "/health").status == 200
    with pytest.raises(openai.NotFoundError):
        sdk(gw).chat.completions.create(model="m-chat", messages=user())


# ------------------------------------------------------------------------------------ 8. round robin


def test_round_robin_alternates_between_two_instances(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake_a, url_a = start_upstream("a")
    fake_b, url_b = start_upstream("b")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "instances": [
                        {"name": "pool", "base_url": url_a, "upstream_model": "up-a"},
                        {"name": "pool", "base_url": url_b, "upstream_model": "up-b"},
                    ],
                }
            }
        }
    )
    client = sdk(gw)
    served = [
        client.chat.completions.create(model="pool", messages=user()).choices[0].message.content for _ in range(10)
    ]
    assert len(fake_a.requests) == 5
    assert len(fake_b.requests) == 5
    assert all(served[i] != served[i + 1] for i in range(9)), served
    assert {r.json["model"] for r in fake_a.requests} == {"up-a"}
    assert {r.json["model"] for r in fake_b.requests} == {"up-b"}
    assert_no_inflight(gw)
