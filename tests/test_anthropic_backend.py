"""The anthropic adapter end to end: the official openai SDK → gateway → a loopback Anthropic Messages API that
replays the documented payloads. What the upstream receives is asserted field by field; answers, streams (text
and tool arguments in pieces), usage, finish reasons, errors, 529 and failover map as docs/providers.md says."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from .fake_anthropic import FakeAnthropic
from .fakes import FakeOpenAI
from .servers import GatewayServer

PNG = "data:image/png;base64,iVBORw0KGgo="


def _instance(url: str, name: str = "claude", **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "base_url": url,
        "adapter": "anthropic",
        "upstream_model": more.pop("upstream_model", "claude-sonnet-4-5"),
        "headers": {"x-api-key": "sk-ant-test"},
        **more,
    }


@pytest.fixture
def gateway(
    anthropic_upstream: tuple[FakeAnthropic, str], start_gateway: Callable[..., GatewayServer]
) -> tuple[FakeAnthropic, GatewayServer]:
    fake, url = anthropic_upstream
    gw = start_gateway(
        {
            "health_check": {"enabled": False},
            "services": {
                "chat": {
                    "instances": [
                        _instance(url),
                        _instance(url, "small", default_max_tokens=256),
                        _instance(url, "breaks", upstream_model="breaks"),
                    ]
                }
            },
        }
    )
    return fake, gw


def _client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_a_chat_request_reaches_anthropic_translated_field_by_field(
    gateway: tuple[FakeAnthropic, GatewayServer],
) -> None:
    fake, gw = gateway
    answer = _client(gw).chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": "Hello"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
            {"role": "assistant", "content": "A picture."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
        ],
        max_completion_tokens=300,
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        user="user-7",
        frequency_penalty=0.5,  # no counterpart: dropped
        extra_body={"top_k": 40},
    )
    sent = fake.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": "You are terse.\n\nUse metric units.",
        "messages": [
            {
                "role": "user",  # two user turns merged: Anthropic wants the roles to alternate
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A picture."}]},
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}],
            },
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-7"},
    }
    assert answer.choices[0].message.content == "Hi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "claude"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 2095 + 1000  # the cached tokens are input tokens too
    assert answer.usage.completion_tokens == 503
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 1000


def test_max_tokens_defaults_per_instance(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    _client(gw).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert fake.last.json["max_tokens"] == 4096
    _client(gw).chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    assert fake.last.json["max_tokens"] == 256


def test_tools_and_a_tool_conversation(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    answer = _client(gw).chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "Weather in SF and Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "15C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "18C"},
        ],
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    sent = fake.last.json
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
            "description": "Weather in a city",
        }
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "SF"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Paris"}},
        ],
    }
    assert sent["messages"][2] == {  # both results in one user turn
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "15C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "18C"},
        ],
    }
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check the weather in San Francisco."
    [call] = choice.message.tool_calls or []
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}  # type: ignore[union-attr]
    for choice_value, want in (("auto", {"type": "auto"}), ("none", {"type": "none"})):
        _client(gw).chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "x"}],
            tools=tools,
            tool_choice=choice_value,  # type: ignore[arg-type]
        )
        assert fake.last.json["tool_choice"] == want
    _client(gw).chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert fake.last.json["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_a_text_stream_is_translated_event_by_event(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    _, gw = gateway
    stream = _client(gw).chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (25, 15)
    assert chunks[0].choices[0].delta.role == "assistant"


def test_tool_arguments_streamed_in_pieces_arrive_whole(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    _, gw = gateway
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    stream = _client(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    finish = []
    for chunk in stream:
        for choice in chunk.choices:
            finish.append(choice.finish_reason)
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                if call.function is not None:
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
        }
    }
    assert json.loads(calls[0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert "tool_calls" in finish


def test_structured_output_is_emulated_with_a_forced_tool(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "result", "schema": schema}}
    answer = _client(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "6*7?"}], response_format=fmt
    )
    sent = fake.last.json
    assert sent["tools"] == [{"name": "json_answer", "description": "Answer as result", "input_schema": schema}]
    assert sent["tool_choice"] == {"type": "tool", "name": "json_answer"}
    assert json.loads(answer.choices[0].message.content or "") == {"answer": 42}
    assert answer.choices[0].finish_reason == "stop"
    assert not answer.choices[0].message.tool_calls
    stream = _client(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "6*7?"}], response_format=fmt, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert json.loads(text) == {"answer": 42}


def test_reasoning_effort_becomes_a_thinking_budget(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    _client(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], reasoning_effort="low", max_tokens=1000
    )
    assert fake.last.json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert fake.last.json["max_tokens"] > 2048  # the budget must stay under max_tokens


def test_n_above_one_is_refused_with_the_parameter(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    before = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        _client(gw).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], n=2)
    assert refused.value.body["param"] == "n"  # type: ignore[index]
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(fake.requests) == before


def test_an_error_inside_a_stream_ends_it_with_an_error_event(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    fake.stream_gap = 0.05  # the first event reaches the client before the error comes
    stream = _client(gw).chat.completions.create(
        model="breaks", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in stream:
            pass


def test_an_error_before_anything_was_sent_is_a_clean_503(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    _, gw = gateway  # no gap: the error arrives with the first events, before the client got a byte
    with pytest.raises(openai.InternalServerError) as refused:
        _client(gw).chat.completions.create(model="breaks", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert refused.value.status_code == 503
    assert refused.value.body["type"] == "overloaded_error"  # type: ignore[index]


def test_the_stream_is_not_buffered(gateway: tuple[FakeAnthropic, GatewayServer]) -> None:
    fake, gw = gateway
    fake.stream_gap = 0.5
    started = time.monotonic()
    stream = _client(gw).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = next(iter(stream))
    assert time.monotonic() - started < 0.5  # before the upstream's second event was sent
    assert first.choices[0].delta.role == "assistant"
    stream.close()


def test_overloaded_529_is_a_503_and_fails_over_to_an_openai_instance(
    anthropic_upstream: tuple[FakeAnthropic, str],
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
) -> None:
    _, url = anthropic_upstream
    openai_fake, openai_url = start_upstream("b")
    alone = start_gateway({"services": {"chat": {"instances": [_instance(url, "m", upstream_model="overloaded")]}}})
    with pytest.raises(openai.InternalServerError) as refused:
        _client(alone).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503
    assert refused.value.body["type"] == "overloaded_error"  # type: ignore[index]
    both = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "instances": [
                        _instance(url, "m", upstream_model="overloaded"),
                        {"name": "m", "base_url": openai_url},
                    ],
                }
            }
        }
    )
    for _ in range(4):  # whichever instance comes first, the answer comes from the one that works
        answer = _client(both).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    assert openai_fake.requests


def test_an_anthropic_error_keeps_its_type(
    gateway: tuple[FakeAnthropic, GatewayServer],
    start_gateway: Callable[..., GatewayServer],
    anthropic_upstream: tuple[FakeAnthropic, str],
) -> None:
    _, url = anthropic_upstream
    gw = start_gateway({"services": {"chat": {"instances": [_instance(url, "m", upstream_model="invalid")]}}})
    with pytest.raises(openai.BadRequestError) as refused:
        _client(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in refused.value.body["message"]  # type: ignore[index]
