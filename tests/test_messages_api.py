"""``POST /v1/messages``: the official anthropic SDK against the gateway, routed to OpenAI-shaped backends (the
request translated to chat and the answer back, streams event by event) and to an ``anthropic`` backend (Messages
→ chat → Messages again); tools, images, errors in Anthropic's shape, x-api-key auth, limits, usage and metrics
with the ``messages`` endpoint label, failover between an anthropic and an openai instance."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from .fake_anthropic import FakeAnthropic
from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer

KEY = "mr-messages-test-key-0123456789abcdef"
PNG_B64 = "iVBORw0KGgo="


def _client(gw: GatewayServer, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=options.pop("api_key", "unused"), max_retries=0, **options)


@pytest.fixture
def openai_backed(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> tuple[FakeOpenAI, GatewayServer]:
    fake, url = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}}})
    return fake, gw


def test_a_message_reaches_an_openai_backend_as_chat_and_comes_back(
    openai_backed: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = openai_backed
    message = _client(gw).messages.create(
        model="qwen",
        max_tokens=100,
        system="Be brief.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                ],
            }
        ],
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20},  # this SDK version no longer names them
    )
    sent = fake.requests[-1].json
    assert sent["model"] == "qwen"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            ],
        },
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["top_k"]) == (100, 0.5, 0.9, 20)
    assert sent["stop"] == ["END"]
    assert sent["user"] == "u-1"
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "qwen"
    assert message.content[0].type == "text"
    assert message.content[0].text  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_a_streamed_message_from_an_openai_backend(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = openai_backed
    with _client(gw).messages.stream(
        model="qwen", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert fake.requests[-1].json["stream"] is True
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}


def test_raw_stream_events_are_anthropics(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    _, gw = openai_backed
    events = list(
        _client(gw).messages.create(
            model="qwen", max_tokens=50, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert "content_block_delta" in kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tools_through_an_openai_backend(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}}})
    tools: Any = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    _client(gw).messages.create(
        model="qwen",
        max_tokens=100,
        tools=tools,
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    sent = fake.requests[-1].json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather",
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
    assert sent["messages"][3] == {"role": "user", "content": "And tomorrow?"}


def test_messages_pass_unchanged_to_an_anthropic_backend(
    bg: BackgroundLoop,
    anthropic_upstream: tuple[FakeAnthropic, str],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Any,
) -> None:
    """What chat has no place for (cache_control, thinking, documents) reaches an anthropic backend as the client
    sent it, and its answer and events come back as it sent them; usage is still read from them."""
    import httpx2

    from .fake_anthropic import TOOL_ANSWER

    fake, url = anthropic_upstream
    instance = {"name": "claude", "base_url": url, "adapter": "anthropic", "upstream_model": "claude-sonnet-4-5"}
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY}]},
            "usage": {"flush_interval": 0.1},
            "services": {"chat": {"instances": [instance]}},
        }
    )
    request = {
        "model": "claude",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?", "cache_control": {"type": "ephemeral"}}]}
        ],
    }
    answer = httpx2.post(gw.url + "/v1/messages", json=request, headers={"x-api-key": KEY}, timeout=10)
    assert answer.status_code == 200
    assert fake.last.json == {**request, "model": "claude-sonnet-4-5"}  # only the model renamed
    assert answer.json() == TOOL_ANSWER  # the backend's own answer
    with _client(gw, api_key=KEY).messages.stream(
        model="claude", max_tokens=64, tools=request["tools"], messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
        raw_ids = [final.id]
    assert raw_ids == ["msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"]  # the backend's message id: its own events
    streamed = [block for block in final.content if block.type == "tool_use"]
    assert streamed[0].input == {"location": "San Francisco, CA", "unit": "fahrenheit"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    store = gw.gateway.store
    assert store is not None
    deadline = time.monotonic() + 10
    while len(bg.run(store.query_usage())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    usage = sorted((r.prompt_tokens, r.completion_tokens) for r in bg.run(store.query_usage()))
    assert usage == [(25, 89), (384, 96)]  # read from the backend's own usage, whole and streamed


def test_errors_on_this_path_are_anthropic_error_objects(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    import httpx2

    fake, gw = openai_backed
    body = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}  # no max_tokens: the SDK would refuse
    missing = httpx2.post(gw.url + "/v1/messages", json=body, timeout=10)
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Invalid request: missing required parameter 'max_tokens'",
        },
    }
    with pytest.raises(anthropic.NotFoundError) as unknown:
        _client(gw).messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["type"] == "error"  # type: ignore[index]
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    fake.fail("/v1/chat/completions", 500, {"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(anthropic.InternalServerError) as broken:
        _client(gw).messages.create(model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert broken.value.body["error"]["message"] == "boom"  # type: ignore[index]


def test_x_api_key_authenticates_and_limits_apply(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": {"requests_per_minute": 2}}]},
            "services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}},
        }
    )
    with pytest.raises(anthropic.AuthenticationError) as refused:
        _client(gw, api_key="wrong").messages.create(
            model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    client = _client(gw, api_key=KEY)  # the SDK sends it as x-api-key
    for _ in range(2):
        client.messages.create(model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_metrics_label_the_messages_endpoint(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    import httpx2

    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "observability": {"metrics": True},
            "services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}},
        }
    )
    _client(gw).messages.create(model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    text = httpx2.get(gw.url + "/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("modelrouter_requests_total{")]
    assert any('endpoint="messages"' in line and 'model="qwen"' in line and 'status="200"' in line for line in lines), (
        lines
    )


def test_failover_between_an_anthropic_and_an_openai_instance(
    anthropic_upstream: tuple[FakeAnthropic, str],
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
) -> None:
    _, claude_url = anthropic_upstream
    openai_fake, openai_url = start_upstream("b")
    overloaded = {"name": "m", "base_url": claude_url, "adapter": "anthropic", "upstream_model": "overloaded"}
    gw = start_gateway({"services": {"chat": {"instances": [overloaded, {"name": "m", "base_url": openai_url}]}}})
    for _ in range(4):
        message = _client(gw).messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert message.content[0].type == "text"
    assert openai_fake.requests


def test_the_stream_is_not_buffered(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url = start_upstream("a")
    fake.stream_gap = 0.5
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}}})
    started = time.monotonic()
    stream = _client(gw).messages.create(
        model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = next(iter(stream))
    assert first.type == "message_start"
    assert time.monotonic() - started < 0.5  # before the upstream's second event was sent
    stream.close()


def test_count_tokens(openai_backed: tuple[FakeOpenAI, GatewayServer]) -> None:
    _, gw = openai_backed
    counted = _client(gw).messages.count_tokens(
        model="qwen", messages=[{"role": "user", "content": "hello there, how are you?"}]
    )
    assert counted.input_tokens > 0
    json.dumps(counted.model_dump())


def test_usage_records_name_the_messages_endpoint(
    bg: BackgroundLoop,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Any,
) -> None:
    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "auth": {"enabled": True, "keys": [{"name": "k", "key": KEY}]},
            "usage": {"flush_interval": 0.1},
            "services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}},
        }
    )
    client = _client(gw, api_key=KEY)
    client.messages.create(model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with client.messages.stream(model="qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()
    store = gw.gateway.store
    assert store is not None
    deadline = time.monotonic() + 10
    while len(bg.run(store.query_usage())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    records = bg.run(store.query_usage())
    assert sorted((r.endpoint, r.key_id, r.status) for r in records) == [("messages", "config:k", 200)] * 2
    assert all(r.prompt_tokens and r.completion_tokens for r in records)
