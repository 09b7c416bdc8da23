"""Reading token usage from answers and streams, and buffering usage records."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson

from modelrouter.access.records import UsageRecorder
from modelrouter.access.usage import usage_from_body
from modelrouter.adapters.base import SSEPassThrough
from modelrouter.dataplane.usage_tap import StreamUsageTap


def test_usage_from_body_reads_openai_and_other_shapes() -> None:
    body = orjson.dumps(
        {
            "choices": [{"message": {"content": 'say "usage": 1'}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3}},
        }
    )
    assert usage_from_body(body) == (12, 7)
    assert usage_from_body(b'{"usage": {"input_tokens": 4, "output_tokens": 2}}') == (4, 2)
    # Any field order and spacing (the OpenAI order is only the fast path).
    assert usage_from_body(b'{"usage": {"total_tokens": 20, "completion_tokens" : 5,\n "prompt_tokens": 15}}') == (
        15,
        5,
    )
    assert usage_from_body(b'{"usage":{"prompt_tokens":3,"total_tokens":3}}') == (3, 0)
    assert usage_from_body(b'{"usage": {"total_tokens": 9}}') == (9, 0)
    assert usage_from_body(b'{"data": []}') is None
    assert usage_from_body(b'{"usage": null}') is None


def _event(chunk: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def test_stream_tap_reads_usage_and_hides_the_chunk_nobody_asked_for() -> None:
    content = [_event({"choices": [{"delta": {"content": f"t{i}"}}]}) for i in range(3)]
    usage = _event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    stream = b"".join(content) + usage + b"data: [DONE]\n\n"
    for strip in (True, False):
        tap = StreamUsageTap(SSEPassThrough(), strip=strip)
        # Fed in awkward pieces: events split anywhere.
        out = b"".join(tap.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + tap.end()
        assert tap.usage == (5, 3)
        if strip:
            assert out == b"".join(content) + b"data: [DONE]\n\n"
        else:
            assert out == stream


def test_stream_tap_takes_the_final_usage_of_a_stream_that_reports_it_in_every_chunk() -> None:
    # vLLM's continuous usage stats: every chunk carries the running totals; the last report is the count.
    events = [
        _event({"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 7, "completion_tokens": i}})
        for i in range(1, 6)
    ]
    tap = StreamUsageTap(SSEPassThrough(), strip=False)
    out = b"".join(tap.feed(e) for e in [*events, b"data: [DONE]\n\n"]) + tap.end()
    assert out == b"".join(events) + b"data: [DONE]\n\n"
    assert tap.usage == (7, 5)
    assert tap.estimated_completion() == 5


def test_stream_tap_counts_text_events_of_completions() -> None:
    events = b"".join(_event({"choices": [{"text": "x", "index": 0}]}) for _ in range(3))
    tap = StreamUsageTap(SSEPassThrough(), strip=False, text=True)
    assert tap.feed(events) == events
    tap.end()
    assert (tap.usage, tap.estimated_completion()) == (None, 3)


def test_stream_tap_estimates_when_no_usage_arrives() -> None:
    tap = StreamUsageTap(SSEPassThrough(), strip=True)
    events = b"".join(_event({"choices": [{"delta": {"content": "x"}}]}) for _ in range(4))
    assert tap.feed(events) == events
    assert tap.usage is None
    assert tap.estimated_completion() == 4


async def test_recorder_buffers_batches_and_counts_what_it_drops() -> None:
    written: list[int] = []
    fail = True

    async def sink(batch: Sequence[int]) -> None:
        if fail:
            raise OSError("store down")
        written.extend(batch)

    recorder = UsageRecorder(sink, capacity=5, batch=2, interval=0.01)  # type: ignore[arg-type]
    for i in range(7):
        recorder.record(i)  # type: ignore[arg-type]
    assert recorder.dropped == 2  # the buffer holds 5; requests never wait for the store
    await recorder.flush()  # the store is down: records are kept for the next try
    assert written == []
    fail = False
    await recorder.flush()
    assert written == [0, 1, 2, 3, 4]
    recorder.start()
    recorder.record(9)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    await recorder.aclose()
    assert written[-1] == 9
    assert recorder.dropped == 2
