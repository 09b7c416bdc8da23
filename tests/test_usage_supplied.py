"""Usage that is always there when asked for: an upstream that reports none (llama.cpp's server ignores
``stream_options.include_usage``) still gives the client a usage chunk, and non-streamed answers a ``usage``,
counted by the gateway - the same numbers that limits, quotas and usage records take."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from modelrouter.access.usage import estimate_prompt_tokens, estimate_tokens, lacks_usage
from modelrouter.adapters.base import SSEPassThrough
from modelrouter.dataplane.usage_tap import StreamUsageTap

from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer
from .test_chat import raw_request

KEY = "mr-usage-key-0123456789abcdefghijklmnopq"
MESSAGES = [{"role": "user", "content": "hello there, how are you today?"}]
PROMPT = estimate_prompt_tokens({"messages": MESSAGES})  # 8 for the text + 4 for the message
StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[..., GatewayServer]


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _event({"id": "c-1", "object": "chat.completion.chunk", "created": 7, "model": "up", "choices": [choice]})


def _sdk(gw: GatewayServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def _silent_upstream(start_upstream: StartUpstream) -> tuple[FakeOpenAI, str]:
    fake, url = start_upstream("a")
    fake.reports_usage = False
    return fake, url


def test_the_tap_supplies_usage_before_done_counting_text_deltas() -> None:
    stream = (
        _chunk({"role": "assistant", "content": ""})  # no text: not a token
        + _chunk({"content": "Hel"})
        + _chunk({"content": "lo"})
        + _chunk({"reasoning_content": "hmm"})
        + _chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ""}}]})
        + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
        + _chunk({"content": None}, "stop")
        + b"data: [DONE]\n\n"
    )
    payload = {"model": "m", "messages": MESSAGES, "stream": True, "tools": [{"type": "function"}]}
    tap = StreamUsageTap(SSEPassThrough(), strip=False, tools=True, supply=payload)
    out = b"".join(tap.feed(stream[i : i + 11]) for i in range(0, len(stream), 11)) + tap.end()
    before, done = out.rsplit(b"data: ", 1)
    assert done == b"[DONE]\n\n"
    *_, supplied = before.rstrip(b"\n").split(b"\n\n")
    chunk = orjson.loads(supplied[len(b"data: ") :])
    assert chunk == {
        "id": "c-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "up",
        "choices": [],
        "usage": {"prompt_tokens": PROMPT, "completion_tokens": 4, "total_tokens": PROMPT + 4, "estimated": True},
    }
    assert out.startswith(stream[: -len(b"data: [DONE]\n\n")])
    assert (tap.usage, tap.estimated) == ((PROMPT, 4), True)


def test_the_tap_leaves_a_stream_that_reports_usage_alone() -> None:
    usage = _event({"id": "c-1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    stream = _chunk({"content": "a"}) + _chunk({"content": "b"}) + usage + b"data: [DONE]\n\n"
    tap = StreamUsageTap(SSEPassThrough(), strip=False, supply={"messages": MESSAGES})
    assert tap.feed(stream) + tap.end() == stream
    assert (tap.usage, tap.estimated) == ((9, 2), False)
    # A stream that ends without [DONE] gets its usage chunk at the end.
    tap = StreamUsageTap(SSEPassThrough(), strip=False, supply={"messages": MESSAGES})
    out = tap.feed(_chunk({"content": "a"})) + tap.end()
    assert out.startswith(_chunk({"content": "a"}))
    assert orjson.loads(out.rstrip().rsplit(b"data: ", 1)[1])["usage"]["completion_tokens"] == 1


def test_completions_streams_count_text_deltas() -> None:
    events = b"".join(_event({"id": "cmpl-1", "object": "text_completion", "choices": [{"text": t}]}) for t in "abc")
    tap = StreamUsageTap(SSEPassThrough(), strip=False, text=True, supply={"prompt": "say abc"})
    out = tap.feed(events + b"data: [DONE]\n\n") + tap.end()
    supplied = orjson.loads(out.split(b"\n\n")[3][len(b"data: ") :])
    assert supplied["object"] == "text_completion"
    assert supplied["usage"]["completion_tokens"] == 3
    assert supplied["usage"]["prompt_tokens"] == estimate_tokens("say abc")


def test_sdk_stream_gets_usage_from_an_upstream_that_ignores_include_usage(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake, url = _silent_upstream(start_upstream)
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    chunks = list(
        _sdk(gw).chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert fake.last.json["stream_options"] == {"include_usage": True}  # asked for, and ignored
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (PROMPT, fake.stream_events)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.id == chunks[0].id
    assert all(c.usage is None for c in chunks[:-1])
    # Without include_usage the client gets no usage chunk.
    plain = list(_sdk(gw).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in plain)


def test_supplied_usage_is_what_limits_quotas_and_usage_records_take(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path, bg: BackgroundLoop
) -> None:
    _, url = _silent_upstream(start_upstream)
    total = PROMPT + 3  # the fake streams three content deltas
    key = {"name": "k", "key": KEY, "quotas": {"tokens_per_minute": total, "daily_tokens": 10_000}}
    gw = start_gateway(
        {
            "auth": {"enabled": True, "keys": [key]},
            "usage": {"flush_interval": 0.05},
            "store": {"data_dir": str(tmp_path)},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    client = _sdk(gw)
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, max_tokens=1
    )
    usage = list(stream)[-1].usage
    assert usage is not None
    assert usage.total_tokens == total
    # The token limit took exactly the supplied count: nothing is left of it (the estimate was PROMPT + 1).
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert gw.gateway.accounting is not None
    assert gw.gateway.accounting.quota.usage("config:k").day_tokens == total
    store = gw.gateway.store
    assert store is not None
    deadline = time.monotonic() + 5
    while not (records := bg.run(store.query_usage())) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(usage.prompt_tokens, 3)]


def test_non_streamed_answers_without_usage_get_it_counted_and_say_so(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, url = _silent_upstream(start_upstream)
    services = {s: {"instances": [{"name": "m", "base_url": url}]} for s in ("chat", "embedding")}
    gw = start_gateway({"services": services})
    resp = raw_request(gw.url, "POST", "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
    assert resp.status == 200
    assert resp.headers["x-modelrouter-usage"] == "estimated"
    body = orjson.loads(resp.body)
    completion = estimate_tokens("hello from a")
    assert body["usage"] == {
        "prompt_tokens": PROMPT,
        "completion_tokens": completion,
        "total_tokens": PROMPT + completion,
        "estimated": True,
    }
    answer = _sdk(gw).embeddings.create(model="m", input=["one two three four", "five"])
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == estimate_tokens("one two three four five")
    # Token ids are counted, not estimated.
    ids = raw_request(gw.url, "POST", "/v1/embeddings", {"model": "m", "input": [[1, 2, 3], [4, 5]]})
    assert orjson.loads(ids.body)["usage"]["prompt_tokens"] == 5


def test_answers_with_usage_pass_unchanged_and_unmarked(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, url = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    resp = raw_request(gw.url, "POST", "/v1/chat/completions", {"model": "m", "messages": MESSAGES})
    assert "x-modelrouter-usage" not in resp.headers
    assert orjson.loads(resp.body)["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    chunks = list(
        _sdk(gw).chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
    }


def test_lacks_usage_tells_absent_and_null_from_present() -> None:
    assert lacks_usage(b'{"choices": []}')
    assert lacks_usage(b'{"choices":[],"usage":null}')
    assert lacks_usage(b'{"choices": [], "usage": null}')
    assert not lacks_usage(b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}')
    # A mention inside a string is escaped, so it is not taken for the field.
    assert lacks_usage(b'{"choices":[{"message":{"content":"say \\"usage\\": 1"}}]}')
