"""Stream translators, fed the same bytes cut at every possible place.

``SSEPassThrough`` must re-join events split across chunks (even inside the blank line that ends them) and emit
each only once it is complete; the Ollama NDJSON translator must give the same events however its lines are cut.
(hypothesis is not installed here, so the cuts are exhaustive for one and two cut points, plus seeded random
multi-cuts and byte-at-a-time.)
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from itertools import combinations, pairwise
from typing import Any

import pytest

from modelrouter.adapters import OllamaAdapter, SSEPassThrough, StreamTranslator
from modelrouter.endpoints import ENDPOINTS_BY_PATH

CHAT = ENDPOINTS_BY_PATH["/v1/chat/completions"]


def cut(data: bytes, points: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def every_cut(data: bytes, *, pairs: bool = True, randoms: int = 300, seed: int = 7) -> Iterator[list[bytes]]:
    """Whole; byte at a time; every single cut; every pair of cuts (if asked); seeded random multi-cuts."""
    n = len(data)
    yield [data]
    yield [data[i : i + 1] for i in range(n)]
    for i in range(n + 1):
        yield cut(data, (i,))
    if pairs:
        for i, j in combinations(range(n + 1), 2):
            yield cut(data, (i, j))
    rng = random.Random(seed)
    for _ in range(randoms):
        k = rng.randint(2, max(2, n // 3))
        yield cut(data, tuple(rng.randint(0, n) for _ in range(k)))


def parse_sse(data: bytes) -> list[dict[str, Any]]:
    """A minimal SSE parser (per the WHATWG rules): lines end in CRLF, LF or CR; a blank line dispatches."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    text = data.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in lines[:-1]:  # the last piece has no line ending: not a line yet
        if line == "":
            if current:
                events.append(current)
            current = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                current["data"] = current["data"] + "\n" + value if "data" in current else value
            else:
                current[name] = value
    return events


# --- SSEPassThrough --------------------------------------------------------------------------------------------


def _events(line_end: str, *events: list[str]) -> list[bytes]:
    return [(line_end.join(lines) + line_end + line_end).encode() for lines in events]


LF_EVENTS = _events(
    "\n",
    ['data: {"id":"1","choices":[{"delta":{"content":"hé"}}]}'],
    ["event: ping", "data: x"],
    [": a comment", "id: 7", "retry: 10", "data: 世界"],
    ["data: line one", "data: line two"],
    ["data: [DONE]"],
)
CRLF_EVENTS = _events(
    "\r\n",
    ['data: {"id":"1","choices":[{"delta":{"content":"hé"}}]}'],
    ["event: ping", "data: x"],
    ["data: 世界"],
    ["data: [DONE]"],
)
MIXED_EVENTS = [*_events("\n", ["data: a"]), *_events("\r\n", ["data: b", "id: 2"]), *_events("\n", ["data: c"])]

STREAMS = {"lf": LF_EVENTS, "crlf": CRLF_EVENTS, "mixed": MIXED_EVENTS}


def _complete_prefix(events: list[bytes], fed: int) -> bytes:
    """What may have been emitted once ``fed`` bytes arrived: every event that is complete by then."""
    out, pos = b"", 0
    for ev in events:
        pos += len(ev)
        if pos > fed:
            break
        out += ev
    return out


def _run_passthrough(events: list[bytes], chunks: list[bytes]) -> None:
    stream = b"".join(events)
    translator = SSEPassThrough()
    emitted, fed = b"", 0
    for chunk in chunks:
        out = translator.feed(chunk)
        fed += len(chunk)
        if out:
            assert out.endswith((b"\n\n", b"\r\n\r\n")), (chunks, out)
        emitted += out
        # Exactly the complete events so far: nothing half-formed, nothing complete held back.
        assert emitted == _complete_prefix(events, fed), (chunks, emitted)
    assert translator.end() == b""
    assert emitted == stream


@pytest.mark.parametrize("kind", list(STREAMS))
def test_passthrough_rejoins_events_cut_anywhere(kind: str) -> None:
    events = STREAMS[kind]
    stream = b"".join(events)
    count = 0
    for chunks in every_cut(stream, pairs=len(stream) < 200):
        assert b"".join(chunks) == stream
        _run_passthrough(events, chunks)
        count += 1
    assert count > len(stream)


@pytest.mark.parametrize("kind", list(STREAMS))
def test_passthrough_cut_inside_every_blank_line(kind: str) -> None:
    """Explicitly: a cut after each byte of every event's terminating blank line."""
    events = STREAMS[kind]
    stream = b"".join(events)
    pos = 0
    for ev in events:
        pos += len(ev)
        terminator = 4 if ev.endswith(b"\r\n\r\n") else 2
        for back in range(1, terminator + 1):
            _run_passthrough(events, cut(stream, (pos - back,)))
            _run_passthrough(events, cut(stream, (pos - back, pos)))


def test_passthrough_output_is_valid_sse_with_the_same_events() -> None:
    stream = b"".join(LF_EVENTS)
    translator = SSEPassThrough()
    outputs = [translator.feed(c) for c in cut(stream, (5, 40, 41, 90))]
    assert parse_sse(b"".join(outputs)) == parse_sse(stream)
    assert [e.get("data") for e in parse_sse(stream)] == [
        '{"id":"1","choices":[{"delta":{"content":"hé"}}]}',
        "x",
        "世界",
        "line one\nline two",
        "[DONE]",
    ]


def test_passthrough_holds_an_incomplete_event() -> None:
    translator = SSEPassThrough()
    assert translator.feed(b"data: a\n") == b""
    assert translator.feed(b"\n") == b"data: a\n\n"
    assert translator.feed(b"data: b\r\n\r") == b""
    assert translator.feed(b"\n") == b"data: b\r\n\r\n"
    assert translator.feed(b"data: c\n\ndata: d") == b"data: c\n\n"
    assert translator.feed(b"\n\ndata: e\n\n") == b"data: d\n\ndata: e\n\n"


@pytest.mark.parametrize(
    "tail",
    [b"data: last", b"data: last\n", b"data: last\r\n", b"event: end\ndata: last", b"event: end\r\ndata: last\r\n"],
)
def test_passthrough_end_flushes_a_final_event_without_its_blank_line(tail: bytes) -> None:
    head = b"data: first\n\n"
    stream = head + tail
    expected = parse_sse(stream + b"\n\n")
    assert expected[-1]["data"] == "last"
    for chunks in every_cut(stream, pairs=False, randoms=50):
        translator = SSEPassThrough()
        emitted = b"".join(translator.feed(c) for c in chunks)
        assert emitted == head, chunks
        rest = translator.end()
        assert rest.startswith(tail)
        assert rest.endswith(b"\n\n")
        assert parse_sse(emitted + rest) == expected, (chunks, rest)
        assert translator.end() == b""  # flushed once


def test_passthrough_end_with_nothing_left() -> None:
    translator = SSEPassThrough()
    assert translator.end() == b""
    translator = SSEPassThrough()
    assert translator.feed(b"data: a\n\n") == b"data: a\n\n"
    assert translator.end() == b""
    translator = SSEPassThrough()
    assert translator.feed(b"data: a\n\n\n") == b"data: a\n\n\n"
    assert translator.end() == b""


def test_passthrough_is_a_stream_translator() -> None:
    assert isinstance(SSEPassThrough(), StreamTranslator)
    translator = SSEPassThrough()
    assert translator.feed(b"") == b""
    assert translator.feed(b"data: a\n\n") == b"data: a\n\n"
    assert translator.feed(b"") == b""


# --- Ollama NDJSON -> chat.completion.chunk SSE ----------------------------------------------------------------


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def _content(text: str) -> bytes:
    return _line(
        {
            "model": "llama3.2",
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text},
            "done": False,
        }
    )


def _done(**extra: Any) -> bytes:
    final: dict[str, Any] = {
        "model": "llama3.2",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 12,
        "eval_count": 3,
    }
    final.update(extra)
    return _line(final)


NDJSON = _content("Hel") + _content("lo ") + _content("世界!") + _done()


def ollama_translator(include_usage: bool = True) -> StreamTranslator:
    payload: dict[str, Any] = {"model": "llama", "stream": True}
    if include_usage:
        payload["stream_options"] = {"include_usage": True}
    return OllamaAdapter().stream_translator(CHAT, payload)


def translate(chunks: list[bytes], include_usage: bool = True) -> list[bytes]:
    translator = ollama_translator(include_usage)
    outputs = [translator.feed(c) for c in chunks]
    outputs.append(translator.end())
    return outputs


def sse_payloads(outputs: list[bytes]) -> list[Any]:
    """The SSE events' data, decoded; chunk id and created are checked for consistency and then dropped."""
    for out in outputs:
        if out:
            assert out.startswith(b"data: ")
            assert out.endswith(b"\n\n")
    events = [e["data"] for e in parse_sse(b"".join(outputs))]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(d) for d in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    for c in chunks:
        del c["id"], c["created"]
    return [*chunks, "[DONE]"]


def test_ndjson_translation() -> None:
    events = sse_payloads(translate([NDJSON]))
    assert events == [
        {
            "object": "chat.completion.chunk",
            "model": "llama3.2",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "logprobs": None, "finish_reason": None}
            ],
        },
        {
            "object": "chat.completion.chunk",
            "model": "llama3.2",
            "choices": [{"index": 0, "delta": {"content": "lo "}, "logprobs": None, "finish_reason": None}],
        },
        {
            "object": "chat.completion.chunk",
            "model": "llama3.2",
            "choices": [{"index": 0, "delta": {"content": "世界!"}, "logprobs": None, "finish_reason": None}],
        },
        {
            "object": "chat.completion.chunk",
            "model": "llama3.2",
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        },
        {
            "object": "chat.completion.chunk",
            "model": "llama3.2",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        },
        "[DONE]",
    ]


def test_ndjson_without_usage_requested() -> None:
    events = sse_payloads(translate([NDJSON], include_usage=False))
    assert all("usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_ndjson_lines_cut_anywhere_give_the_same_events() -> None:
    reference = sse_payloads(translate([NDJSON]))
    for chunks in every_cut(NDJSON, pairs=False, randoms=300):
        outputs = translate(chunks)
        assert sse_payloads(outputs) == reference, chunks


def test_ndjson_lines_cut_at_every_pair_of_points_in_a_short_stream() -> None:
    short = _content("Hi") + _done()
    reference = sse_payloads(translate([short]))
    for i, j in combinations(range(len(short) + 1), 2):
        assert sse_payloads(translate(cut(short, (i, j)))) == reference, (i, j)


def test_ndjson_emits_each_line_once_it_is_complete() -> None:
    translator = ollama_translator()
    first = _content("Hel")
    assert translator.feed(first[:-1]) == b""
    out = translator.feed(first[-1:])
    assert out.startswith(b"data: ")
    assert out.endswith(b"\n\n")
    assert json.loads(out[6:])["choices"][0]["delta"]["content"] == "Hel"


@pytest.mark.parametrize("variant", ["no_final_newline", "crlf", "blank_lines"])
def test_ndjson_line_ending_variants(variant: str) -> None:
    reference = sse_payloads(translate([NDJSON]))
    if variant == "no_final_newline":
        data = NDJSON.rstrip(b"\n")
    elif variant == "crlf":
        data = NDJSON.replace(b"\n", b"\r\n")
    else:
        data = NDJSON.replace(b"\n", b"\n\n")
    for chunks in every_cut(data, pairs=False, randoms=50):
        assert sse_payloads(translate(chunks)) == reference, chunks


def test_ndjson_stream_that_never_says_done_is_an_error() -> None:
    translator = ollama_translator()
    assert translator.feed(_content("Hel"))
    with pytest.raises(ValueError, match="done"):
        translator.end()


def test_ndjson_error_line_is_an_error() -> None:
    translator = ollama_translator()
    translator.feed(_content("Hel"))
    with pytest.raises(ValueError, match="out of memory"):
        translator.feed(_line({"error": "out of memory"}))


def test_ndjson_invalid_json_is_an_error() -> None:
    translator = ollama_translator()
    with pytest.raises(ValueError):  # noqa: PT011 - orjson's decode error is a ValueError
        translator.feed(b"{not json}\n")


def test_ndjson_done_reason_length() -> None:
    events = sse_payloads(translate([_content("Hel") + _done(done_reason="length")]))
    assert events[-3]["choices"][0]["finish_reason"] == "length"


def test_ndjson_thinking_becomes_reasoning_content() -> None:
    data = (
        _line({"model": "qwen3", "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False})
        + _content("ok")
        + _done()
    )
    events = sse_payloads(translate([data]))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "reasoning_content": "hmm"}
    assert events[1]["choices"][0]["delta"] == {"content": "ok"}


def _tool_line(*calls: tuple[str, dict[str, Any]]) -> bytes:
    return _line(
        {
            "model": "llama3.2",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": name, "arguments": args}} for name, args in calls],
            },
            "done": False,
        }
    )


def _tool_deltas(events: list[Any]) -> list[dict[str, Any]]:
    return [tc for e in events[:-1] for c in e["choices"] for tc in c["delta"].get("tool_calls", [])]


def test_ndjson_tool_calls_in_one_line() -> None:
    data = _tool_line(("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})) + _done()
    events = sse_payloads(translate([data]))
    calls = _tool_deltas(events)
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"tz": "CET"}]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 2
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"


def test_ndjson_tool_calls_in_separate_lines_get_distinct_indexes() -> None:
    """Ollama may stream each tool call in its own line. In OpenAI chunks, ``index`` identifies a call across the
    stream: clients merge deltas with the same index, so two different calls must not both be index 0."""
    data = _tool_line(("get_weather", {"city": "Paris"})) + _tool_line(("get_time", {"tz": "CET"})) + _done()
    calls = _tool_deltas(sse_payloads(translate([data])))
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert [c["index"] for c in calls] == [0, 1]
