"""The gemini adapter end to end: the official openai SDK → gateway → a loopback Gemini API that replays the
documented ``generateContent`` / ``streamGenerateContent?alt=sse`` / ``batchEmbedContents`` payloads. What the
upstream receives is asserted field by field; answers, streams, tool calls, safety blocks and usage map as
docs/providers.md says."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from aiohttp import web

from .fakes import Recorded
from .servers import BackgroundLoop, GatewayServer, UpstreamServer

TEXT_ANSWER = {
    "candidates": [
        {
            "content": {"parts": [{"text": "AI learns patterns from data."}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 8,
        "candidatesTokenCount": 7,
        "totalTokenCount": 15,
        "cachedContentTokenCount": 2,
    },
    "modelVersion": "gemini-2.0-flash",
    "responseId": "abc123",
}
CALL_ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 5, "totalTokenCount": 25},
}
BLOCKED = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}
STREAM = [
    {"candidates": [{"content": {"parts": [{"text": "The "}], "role": "model"}, "index": 0}]},
    {"candidates": [{"content": {"parts": [{"text": "answer"}], "role": "model"}, "index": 0}]},
    {
        "candidates": [{"content": {"parts": [{"text": "."}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 3, "totalTokenCount": 6},
    },
]


class FakeGemini:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1beta/models/{method}", self._models)
        app.router.add_get("/v1beta/models", self._list)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "models/gemini-2.0-flash"}]})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = json.loads(body)
        self.requests.append(Recorded(request.path_qs, dict(request.headers), body, payload))
        if request.headers.get("x-goog-api-key") != "g-key":
            error = {"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}
            return web.json_response(error, status=403)
        _, _, method = request.match_info["method"].partition(":")
        if method == "batchEmbedContents":
            vectors = [{"values": [0.1 * (i + 1), 0.2]} for i, _ in enumerate(payload["requests"])]
            return web.json_response({"embeddings": vectors})
        text = json.dumps(payload)
        if method == "streamGenerateContent":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for event in STREAM:
                await resp.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
            await resp.write_eof()
            return resp
        if "forbidden" in text:
            return web.json_response(BLOCKED)
        return web.json_response(CALL_ANSWER if payload.get("tools") else TEXT_ANSWER)


@pytest.fixture
def gemini(
    bg: BackgroundLoop, servers: list[Any], start_gateway: Callable[..., GatewayServer]
) -> tuple[FakeGemini, GatewayServer]:
    fake = FakeGemini()
    servers.append(server := UpstreamServer(bg, fake.app()).start())
    common = {"provider": "gemini", "base_url": server.url, "api_key": "g-key"}
    gw = start_gateway(
        {
            "health_check": {"enabled": False},
            "services": {
                "chat": {"instances": [{"name": "flash", "upstream_model": "gemini-2.0-flash", **common}]},
                "embedding": {"instances": [{"name": "emb", "upstream_model": "text-embedding-004", **common}]},
            },
        }
    )
    return fake, gw


def _client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_a_chat_request_reaches_gemini_field_by_field(gemini: tuple[FakeGemini, GatewayServer]) -> None:
    fake, gw = gemini
    answer = _client(gw).chat.completions.create(
        model="flash",
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Explain AI"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Shorter."},
        ],
        temperature=0.4,
        top_p=0.9,
        max_completion_tokens=64,
        stop="END",
        seed=7,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    )
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent.headers["x-goog-api-key"] == "g-key"
    assert sent.json == {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "Explain AI"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}],
            },
            {"role": "model", "parts": [{"text": "Sure."}]},
            {"role": "user", "parts": [{"text": "Shorter."}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.4,
            "topP": 0.9,
            "seed": 7,
            "maxOutputTokens": 64,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseSchema": {"type": "object"},
        },
    }
    assert answer.choices[0].message.content == "AI learns patterns from data."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (8, 7, 15)
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 2


def test_tools_and_a_tool_conversation(gemini: tuple[FakeGemini, GatewayServer]) -> None:
    fake, gw = gemini
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    answer = _client(gw).chat.completions.create(
        model="flash",
        tools=tools,
        tool_choice="required",
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
        ],
    )
    sent = fake.requests[-1].json
    assert sent["tools"] == [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert sent["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}],
    }
    assert sent["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "21C"}}}],
    }
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert call.id


def test_a_stream_is_translated_chunk_by_chunk(gemini: tuple[FakeGemini, GatewayServer]) -> None:
    fake, gw = gemini
    chunks = list(
        _client(gw).chat.completions.create(
            model="flash",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The answer."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 6


def test_a_blocked_prompt_is_a_content_filter_finish(gemini: tuple[FakeGemini, GatewayServer]) -> None:
    _, gw = gemini
    answer = _client(gw).chat.completions.create(model="flash", messages=[{"role": "user", "content": "forbidden"}])
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content == ""


def test_embeddings_with_dimensions(gemini: tuple[FakeGemini, GatewayServer]) -> None:
    fake, gw = gemini
    result = _client(gw).embeddings.create(model="emb", input=["hello", "world"], dimensions=256)
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent.json == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "hello"}]},
                "outputDimensionality": 256,
            },
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "world"}]},
                "outputDimensionality": 256,
            },
        ]
    }
    assert [d.embedding for d in result.data] == [pytest.approx([0.1, 0.2]), pytest.approx([0.2, 0.2])]  # float32
    assert result.usage.prompt_tokens > 0  # Gemini reports none: estimated


def test_a_gemini_error_keeps_its_message(
    bg: BackgroundLoop, servers: list[Any], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake = FakeGemini()
    servers.append(server := UpstreamServer(bg, fake.app()).start())
    instance = {"name": "flash", "provider": "gemini", "base_url": server.url, "api_key": "wrong"}
    gw = start_gateway({"services": {"chat": {"instances": [instance]}}})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _client(gw).chat.completions.create(model="flash", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["message"] == "API key not valid."  # type: ignore[index]
    assert refused.value.body["type"] == "permission_error"  # type: ignore[index]


def test_both_front_doors_reach_gemini(gemini: tuple[FakeGemini, GatewayServer]) -> None:
    """The anthropic SDK on /v1/messages and the openai SDK's responses API, to a Gemini-shaped upstream: each
    request is translated to chat, then to Gemini, and the answer back, whole and streamed."""
    import anthropic

    fake, gw = gemini
    claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    message = claude.messages.create(model="flash", max_tokens=20, messages=[{"role": "user", "content": "Explain AI"}])
    assert fake.requests[-1].json["contents"] == [{"role": "user", "parts": [{"text": "Explain AI"}]}]
    assert fake.requests[-1].json["generationConfig"] == {"maxOutputTokens": 20}
    assert message.content[0].text == "AI learns patterns from data."  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (8 - 2, 7)  # cached tokens apart
    assert message.usage.cache_read_input_tokens == 2
    with claude.messages.stream(model="flash", max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "The answer."
    response = _client(gw).responses.create(model="flash", input="Explain AI", max_output_tokens=20)
    assert response.output_text == "AI learns patterns from data."
    assert response.usage is not None
    assert response.usage.total_tokens == 15
    events = list(_client(gw).responses.create(model="flash", input="hi", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "The answer."
    assert events[-1].type == "response.completed"
