"""``POST /v1/responses``: the official openai SDK's ``client.responses`` against the gateway, routed to an
OpenAI-shaped chat backend (translated to chat and back, streams event by event) and to an ``anthropic`` backend;
function tools and their round trip, structured output, what is refused (previous_response_id, built-in tools),
metrics and usage with the ``responses`` endpoint label."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from .fake_anthropic import FakeAnthropic
from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer

KEY = "mr-responses-test-key-0123456789abcdef"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _client(gw: GatewayServer, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0)


@pytest.fixture
def openai_backed(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> tuple[FakeOpenAI, GatewayServer]:
    fake, url = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}}})
    return fake, gw


def test_a_response_from_a_chat_backend(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = openai_backed
    response = _client(gw).responses.create(
        model="qwen",
        instructions="Be brief.",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
            {"role": "user", "content": "And now?"},
        ],
        max_output_tokens=50,
        temperature=0.3,
        top_p=0.8,
        user="u-9",
    )
    sent = fake.requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And now?"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["user"]) == (50, 0.3, 0.8, "u-9")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "qwen"
    assert response.output_text
    assert response.output[0].type == "message"
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_a_string_input_and_a_streamed_response(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = openai_backed
    events = list(_client(gw).responses.create(model="qwen", input="hello", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(1, len(events) + 1))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == text
    assert done.response.usage is not None
    assert done.response.usage.output_tokens > 0
    assert fake.requests[-1].json["messages"] == [{"role": "user", "content": "hello"}]
    with _client(gw).responses.stream(model="qwen", input="hello") as stream:
        final = stream.get_final_response()
    assert final.output_text == text


def test_function_tools_round_trip(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}}})
    _client(gw).responses.create(
        model="qwen",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        input=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_2", "output": "21C"},
        ],
    )
    sent = fake.requests[-1].json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["messages"][1] == {  # consecutive calls: one assistant turn
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    }
    assert sent["messages"][2:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "21C"},
    ]


def test_a_function_call_from_an_anthropic_backend_whole_and_streamed(
    anthropic_upstream: tuple[FakeAnthropic, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = anthropic_upstream
    instance = {"name": "claude", "base_url": url, "adapter": "anthropic", "upstream_model": "claude-sonnet-4-5"}
    gw = start_gateway({"services": {"chat": {"instances": [instance]}}})
    response = _client(gw).responses.create(model="claude", input="weather?", tools=[WEATHER])
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].call_id == "toolu_01A09q90qw90lq917835lq9"
    assert json.loads(calls[0].arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    events = list(_client(gw).responses.create(model="claude", input="weather?", tools=[WEATHER], stream=True))
    pieces = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1  # streamed in pieces, as they came
    done = [event for event in events if event.type == "response.function_call_arguments.done"]
    assert json.loads(done[0].arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert "".join(pieces) == done[0].arguments
    final = events[-1]
    assert final.type == "response.completed"
    [item] = [item for item in final.response.output if item.type == "function_call"]
    assert item.arguments == done[0].arguments


def test_structured_output_and_reasoning_map_to_chat(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = openai_backed
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    _client(gw).responses.create(
        model="qwen",
        input="6*7?",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        reasoning={"effort": "low"},
    )
    sent = fake.requests[-1].json
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert sent["reasoning_effort"] == "low"


def test_what_has_no_counterpart_is_refused_with_the_parameter(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = openai_backed
    before = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as chained:
        _client(gw).responses.create(model="qwen", input="more", previous_response_id="resp_123")
    assert chained.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "input items" in chained.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as builtin:
        _client(gw).responses.create(model="qwen", input="news?", tools=[{"type": "web_search_preview"}])
    assert builtin.value.body["param"] == "tools"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as missing:
        _client(gw).responses.create(model="qwen")  # type: ignore[call-overload]
    assert missing.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        _client(gw).responses.create(model="nope", input="hi")
    assert len(fake.requests) == before


def test_a_length_stop_is_an_incomplete_response() -> None:
    from modelrouter.dataplane.responses_api import ChunksToResponseEvents, answer_to_response

    body = json.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}).encode()
    mapped = json.loads(answer_to_response(body, {"model": "qwen"}))
    assert mapped["status"] == "incomplete"
    assert mapped["incomplete_details"] == {"reason": "max_output_tokens"}
    stream = ChunksToResponseEvents({"model": "qwen"})
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}]}
    out = stream.feed(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
    last = json.loads(out.rstrip().split(b"\n")[-1].removeprefix(b"data: "))
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_the_stream_is_not_buffered(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url = start_upstream("a")
    fake.stream_gap = 0.5
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}}})
    started = time.monotonic()
    stream = _client(gw).responses.create(model="qwen", input="hi", stream=True)
    first = next(iter(stream))
    assert first.type == "response.created"
    assert time.monotonic() - started < 0.5  # before the upstream's second event was sent
    stream.close()


def test_metrics_and_usage_records_name_the_responses_endpoint(
    bg: BackgroundLoop,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Any,
) -> None:
    import httpx2

    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": {"requests_per_minute": 2}}]},
            "usage": {"flush_interval": 0.1},
            "observability": {"metrics": True},
            "services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}},
        }
    )
    client = _client(gw, KEY)
    client.responses.create(model="qwen", input="hi")
    list(client.responses.create(model="qwen", input="hi", stream=True))
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="qwen", input="hi")
    text = httpx2.get(gw.url + "/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("modelrouter_requests_total{")]
    assert any('endpoint="responses"' in line and 'status="200"' in line for line in lines), lines
    store = gw.gateway.store
    assert store is not None
    deadline = time.monotonic() + 10
    while len([r for r in bg.run(store.query_usage()) if r.status == 200]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [r for r in bg.run(store.query_usage()) if r.status == 200]
    assert [(r.endpoint, r.key_id) for r in records] == [("responses", "config:k")] * 2
    assert all(r.prompt_tokens and r.completion_tokens for r in records)


def test_fallbacks_serve_both_front_doors(
    anthropic_upstream: tuple[FakeAnthropic, str],
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
) -> None:
    """Model A's only instance is overloaded (an anthropic backend answering 529); A falls back to B, an
    OpenAI-compatible one: both front doors answer, from B."""
    import anthropic

    _, claude_url = anthropic_upstream
    backup, backup_url = start_upstream("backup")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "models": {"A": {"fallbacks": ["B"]}},
                    "instances": [
                        {"name": "A", "base_url": claude_url, "adapter": "anthropic", "upstream_model": "overloaded"},
                        {"name": "B", "base_url": backup_url, "upstream_model": "up-b"},
                    ],
                }
            }
        }
    )
    response = _client(gw).responses.create(model="A", input="hi")
    assert response.output_text == "hello from backup"
    message = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
        model="A", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "hello from backup"  # type: ignore[union-attr]
    assert [r.json["model"] for r in backup.requests] == ["up-b", "up-b"]


NATIVE_RESPONSE: dict[str, Any] = {
    "id": "resp_67ccd2bed1ec8190b14f964abc054267",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "In a peaceful grove beneath a silver moon...", "annotations": []}
            ],
        }
    ],
    "usage": {"input_tokens": 36, "output_tokens": 87, "total_tokens": 123},
}
NATIVE_EVENTS: list[dict[str, Any]] = [
    {
        "type": "response.created",
        "sequence_number": 0,
        "response": {**NATIVE_RESPONSE, "status": "in_progress", "output": [], "usage": None},
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 1,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "In a",
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 2,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": " grove",
    },
    {"type": "response.completed", "sequence_number": 3, "response": NATIVE_RESPONSE},
]


def test_a_backend_with_its_own_responses_api_gets_the_request_unchanged(
    bg: BackgroundLoop, servers: list[Any], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> None:
    from aiohttp import web

    from .fakes import Recorded
    from .servers import UpstreamServer

    seen: list[Recorded] = []

    async def responses(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(Recorded(request.path, dict(request.headers), body, json.loads(body)))
        if not json.loads(body).get("stream"):
            return web.json_response(NATIVE_RESPONSE)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in NATIVE_EVENTS:
            await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    servers.append(server := UpstreamServer(bg, app).start())
    instance = {
        "name": "gpt",
        "provider": "openai",
        "base_url": server.url + "/v1",
        "api_key": "sk-x",
        "upstream_model": "gpt-4.1",
    }
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY}]},
            "usage": {"flush_interval": 0.1},
            "health_check": {"enabled": False},
            "services": {"chat": {"instances": [instance]}},
        }
    )
    client = _client(gw, KEY)
    request: dict[str, Any] = {
        "model": "gpt",
        "input": "tell me a story",
        "store": True,
        "include": ["reasoning.encrypted_content"],
    }
    response = client.responses.create(**request)
    assert seen[-1].path == "/v1/responses"
    assert seen[-1].json == {**request, "model": "gpt-4.1"}  # unchanged, only the model renamed
    assert seen[-1].headers["Authorization"] == "Bearer sk-x"
    assert response.id == NATIVE_RESPONSE["id"]  # the backend's own answer
    assert response.output_text == "In a peaceful grove beneath a silver moon..."
    events = list(client.responses.create(model="gpt", input="tell me a story", stream=True))
    assert [e.sequence_number for e in events] == [0, 1, 2, 3]  # its own events, as they came
    store = gw.gateway.store
    assert store is not None
    deadline = time.monotonic() + 10
    while len(bg.run(store.query_usage())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted((r.prompt_tokens, r.completion_tokens) for r in bg.run(store.query_usage())) == [(36, 87), (36, 87)]
