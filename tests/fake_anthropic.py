"""A loopback Anthropic Messages API (``POST /v1/messages``, ``GET /v1/models``) that records what it receives and
answers with the payloads Anthropic's documentation shows: a text answer, a tool-use answer, the streaming event
sequences of both (ping included, tool arguments in pieces), the error object, 529 overloaded, and an ``error``
event inside a stream. Which answer is chosen by the request: ``tools`` → tool use (unless ``tool_choice`` forces
another tool, which is then used with ``forced_input``), model ``overloaded`` → 529, model ``breaks`` → a stream
that fails after its first event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .fakes import Recorded

TEXT_ANSWER: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_read_input_tokens": 1000},
}

TOOL_ANSWER: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "I'll check the weather in San Francisco."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 384, "output_tokens": 96},
}


def text_events() -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-opus-4-6",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def tool_events(name: str = "get_weather", pieces: tuple[str, ...] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """A text block, then a tool_use block with its arguments in pieces; a forced tool (``pieces`` given, as
    tool_choice makes the model answer) comes without the text block."""
    events = text_events()[:1]
    if pieces is None:
        pieces = ("", '{"location":', ' "San Francisco, CA"', ', "unit": "fahrenheit"}')
        text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Okay"}}
        events += [
            text_events()[1],
            ("content_block_delta", text),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ]
    events += [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": name,
                    "input": {},
                },
            },
        ),
    ]
    for piece in pieces:
        delta = {"type": "input_json_delta", "partial_json": piece}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


ERROR_EVENT = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.stream_gap = 0.0  # between events
        self.forced_input: dict[str, Any] = {"answer": 42}  # the input of a tool that tool_choice forces

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        return app

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"type": "model", "id": "claude-sonnet-4-5"}], "has_more": False})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = json.loads(body)
        self.requests.append(Recorded(request.path, dict(request.headers), body, payload))
        if payload.get("model") == "overloaded":
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            return web.json_response(error, status=529)
        if payload.get("model") == "invalid":
            error = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens: field required"},
            }
            return web.json_response(error, status=400)
        forced = (payload.get("tool_choice") or {}).get("name")
        if payload.get("stream"):
            if payload.get("model") == "breaks":
                events = [*text_events()[:4], ERROR_EVENT]
            elif forced:
                pieces = ('{"answer"', ": ", json.dumps(self.forced_input["answer"]), "}")
                events = tool_events(forced, pieces)
            else:
                events = tool_events() if payload.get("tools") else text_events()
            return await self._stream(request, events)
        if forced:
            answer = dict(
                TOOL_ANSWER, content=[{"type": "tool_use", "id": "toolu_x", "name": forced, "input": self.forced_input}]
            )
            return web.json_response(answer)
        return web.json_response(TOOL_ANSWER if payload.get("tools") else TEXT_ANSWER)

    async def _stream(self, request: web.Request, events: list[tuple[str, dict[str, Any]]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        encoded = [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]
        if not self.stream_gap:
            encoded = [b"".join(encoded)]  # one write: the events arrive together
        for n, event in enumerate(encoded):
            if n:
                await asyncio.sleep(self.stream_gap)
            await resp.write(event)
        await resp.write_eof()
        return resp
