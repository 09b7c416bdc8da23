"""The Ollama adapter end to end: the openai SDK (strict validation) -> gateway -> FakeOllama's native API."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from modelrouter import ConfigError, parse_config

from .fakes import FakeOllama, vector_for
from .servers import GatewayServer

StartOllama = Callable[[], tuple[FakeOllama, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def ollama(start_ollama: StartOllama, start_gateway: StartGateway) -> tuple[FakeOllama, GatewayServer]:
    fake, url = start_ollama()
    gw = start_gateway(
        {
            "aliases": {"gpt-4o": "llama"},
            "services": {
                "chat": {
                    "instances": [
                        {"name": "llama", "base_url": url, "adapter": "ollama", "upstream_model": "llama3.2:1b"},
                        {"name": "missing", "base_url": url, "adapter": "ollama"},
                    ]
                },
                "embedding": {
                    "instances": [{"name": "emb", "base_url": url, "adapter": "ollama", "upstream_model": "nomic"}]
                },
            },
        }
    )
    return fake, gw


def post_json(url: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP POST, to see the gateway's raw bytes."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def sdk(gw: GatewayServer, *, strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=strict)


# --- chat ------------------------------------------------------------------------------------------------------


def test_chat_non_streaming(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    out = sdk(gw).chat.completions.create(
        model="llama",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        temperature=0.5,
        top_p=0.9,
        max_tokens=50,
        stop=["\n\n", "END"],
        seed=7,
        extra_body={"top_k": 40},
    )
    assert out.object == "chat.completion"
    assert out.id.startswith("chatcmpl-")
    assert out.model == "llama3.2:1b"
    assert len(out.choices) == 1
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == "Hello!"
    assert out.choices[0].message.tool_calls is None
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (12, 3, 15)

    assert len(fake.requests) == 1
    sent = fake.requests[-1]
    assert sent.path == "/api/chat"
    assert sent.json["model"] == "llama3.2:1b"
    assert sent.json["stream"] is False
    assert sent.json["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert sent.json["options"] == {
        "temperature": 0.5,
        "top_p": 0.9,
        "num_predict": 50,
        "stop": ["\n\n", "END"],
        "seed": 7,
        "top_k": 40,
    }
    # OpenAI-only fields are not sent to Ollama as top-level keys.
    assert set(sent.json) == {"model", "messages", "stream", "options"}


def test_chat_option_mapping_details(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    client = sdk(gw)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stop="END", max_completion_tokens=9)
    assert fake.requests[-1].json["options"] == {"stop": ["END"], "num_predict": 9}
    assert fake.requests[-1].json["model"] == "llama3.2:1b"  # alias -> model -> upstream_model
    client.chat.completions.create(model="llama", messages=MESSAGES)
    assert "options" not in fake.requests[-1].json
    client.chat.completions.create(model="llama", messages=MESSAGES, response_format={"type": "json_object"})
    assert fake.requests[-1].json["format"] == "json"


def test_chat_streaming(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    chunks = list(sdk(gw).chat.completions.create(model="llama", messages=MESSAGES, stream=True))
    assert fake.requests[-1].path == "/api/chat"
    assert fake.requests[-1].json["stream"] is True
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert with_choices == chunks  # no usage chunk unless asked for
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == "Hello!"
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert all(c.usage is None for c in chunks)


def test_chat_streaming_with_usage(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    _fake, gw = ollama
    chunks = list(
        sdk(gw).chat.completions.create(
            model="llama", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (12, 3, 15)
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"


def test_chat_streaming_raw_bytes(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    _fake, gw = ollama
    status, headers, raw = post_json(
        gw.url + "/v1/chat/completions",
        {"model": "llama", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    events = events[:-1]
    assert all(e.startswith(b"data: ") for e in events), raw
    assert events.count(b"data: [DONE]") == 1
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_chat_tool_calls(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    fake.tool_call = True
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    out = sdk(gw).chat.completions.create(model="llama", messages=MESSAGES, tools=tools)
    assert fake.requests[-1].json["tools"] == tools
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(call.function.arguments, str)  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_chat_tool_calls_streaming(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    fake.tool_call = True
    chunks = list(sdk(gw).chat.completions.create(model="llama", messages=MESSAGES, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(deltas) == 1
    call = deltas[0].tool_calls[0]  # type: ignore[index]
    assert call.index == 0
    assert call.function is not None
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments or "") == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_go_back_to_ollama(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    messages: Any = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"},
    ]
    sdk(gw).chat.completions.create(model="llama", messages=messages)
    sent = fake.requests[-1].json["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


def test_multimodal_data_url_becomes_images(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    b64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    out = sdk(gw).chat.completions.create(
        model="llama",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
                    {"type": "text", "text": "Be brief."},
                ],
            }
        ],
    )
    assert out.choices[0].message.content == "Hello!"
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "What is in this image?\nBe brief.", "images": [b64]}
    ]


# --- embeddings ------------------------------------------------------------------------------------------------


def test_embeddings_float(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    out = sdk(gw).embeddings.create(model="emb", input=["alpha", "beta"], encoding_format="float")
    assert fake.requests[-1].path == "/api/embed"
    assert fake.requests[-1].json == {"model": "nomic", "input": ["alpha", "beta"]}
    assert [d.embedding for d in out.data] == [vector_for("alpha"), vector_for("beta")]
    assert [d.index for d in out.data] == [0, 1]
    assert out.usage.prompt_tokens == 8
    assert out.usage.total_tokens == 8


def test_embeddings_sdk_default_base64(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    # The SDK asks for base64 by default and decodes it itself. (Its strict validation checks the raw base64
    # string against the float-list type before decoding, so this one client is not strict.)
    out = sdk(gw, strict=False).embeddings.create(model="emb", input="gamma")
    assert "encoding_format" not in fake.requests[-1].json
    assert fake.requests[-1].json["input"] == "gamma"
    assert [d.embedding for d in out.data] == [vector_for("gamma")]


def test_embeddings_raw_base64_is_little_endian_float32(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    import base64
    import struct

    _fake, gw = ollama
    status, _headers, body = post_json(
        gw.url + "/v1/embeddings", {"model": "emb", "input": "delta", "encoding_format": "base64"}
    )
    assert status == 200
    raw = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == vector_for("delta")


# --- errors ----------------------------------------------------------------------------------------------------


def test_ollama_error_becomes_openai_error(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    with pytest.raises(openai.NotFoundError) as exc:
        sdk(gw).chat.completions.create(model="missing", messages=MESSAGES)
    assert fake.requests[-1].json["model"] == "missing"
    assert exc.value.status_code == 404
    assert exc.value.body == {
        "message": "model 'missing' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    assert "model 'missing' not found" in exc.value.message


def test_ollama_error_on_a_streaming_request(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    _fake, gw = ollama
    with pytest.raises(openai.NotFoundError) as exc:
        sdk(gw).chat.completions.create(model="missing", messages=MESSAGES, stream=True)
    assert exc.value.body["message"] == "model 'missing' not found"  # type: ignore[index]


def test_endpoint_ollama_does_not_serve_is_a_clear_400(ollama: tuple[FakeOllama, GatewayServer]) -> None:
    fake, gw = ollama
    with pytest.raises(openai.BadRequestError) as exc:
        sdk(gw).completions.create(model="llama", prompt="hi")
    assert "/v1/completions" in exc.value.message
    assert fake.requests == []


@pytest.mark.parametrize("service", ["rerank", "tts", "stt", "image_generation", "image_edit"])
def test_ollama_adapter_only_in_services_it_serves(service: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {"services": {service: {"instances": [{"name": "m", "base_url": "http://h:1", "adapter": "ollama"}]}}}
        )
    assert exc.value.problems == [f"services.{service}.instances[0].adapter: ollama serves only chat and embedding"]


def test_ollama_adapter_in_chat_and_embedding_is_valid() -> None:
    config = parse_config(
        {
            "services": {
                s: {"instances": [{"name": "m", "base_url": "http://h:1", "adapter": "ollama"}]}
                for s in ("chat", "embedding")
            }
        }
    )
    assert {s: c.instances[0].adapter for s, c in config.services.items()} == {"chat": "ollama", "embedding": "ollama"}
