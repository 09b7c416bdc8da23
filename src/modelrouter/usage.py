"""Token usage: estimating it before a request, reading it from answers (streams included), and recording it.

Token limits reserve an estimate before forwarding and reconcile with the real count afterwards. The real count
comes from the upstream's ``usage``; for streamed chat the gateway asks for it (``stream_options.include_usage``)
and removes the extra usage chunk again if the client did not ask for it. When an upstream reports nothing, the
count is estimated (about 4 characters a token: no tokenizer can be downloaded at run time, and an estimate
that is close is better than none for limits).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .adapters.base import StreamTranslator
from .speedups import usage as compiled_usage

__all__ = [
    "Ended",
    "Meter",
    "StreamUsageTap",
    "UsageRecord",
    "UsageRecorder",
    "add_usage",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "lacks_usage",
    "usage_from_body",
    "with_usage",
]

log = logging.getLogger("modelrouter.usage")

_CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_ESTIMATE = 256  # reserved when a request sets no max_tokens


def estimate_tokens(text: str) -> int:
    return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        # Message parts: count their text; images and other parts count by their text fields only.
        return " ".join(_text_of(v) for k, v in value.items() if k in ("content", "text", "input", "prompt"))
    return ""


def estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    messages = payload.get("messages")
    if isinstance(messages, list):
        # The common case, without the general walk: plain string contents.
        chars = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            chars += len(content) if isinstance(content, str) else len(_text_of(content))
        return (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN + 4 * len(messages)
    for field in ("messages", "input", "prompt", "query"):
        if field in payload:
            tokens = _token_ids(payload[field])
            if tokens is not None:
                return tokens  # token ids are counted, not estimated
            extra = 4 * len(payload[field]) if field == "messages" and isinstance(payload[field], list) else 0
            return estimate_tokens(_text_of(payload[field])) + extra
    return 0


def _token_ids(value: Any) -> int | None:
    """How many token ids ``value`` holds, when it is a token array (``[1, 2]``) or a list of them."""
    if not isinstance(value, list) or not value:
        return None
    if all(type(t) is int for t in value):
        return len(value)
    if all(isinstance(v, list) and all(type(t) is int for t in v) for v in value):
        return sum(len(v) for v in value)
    return None


def lacks_usage(body: bytes) -> bool:
    """Whether a JSON answer has no ``usage`` object (absent or null). A byte search from the end, where servers
    put it: this runs on every non-streamed answer."""
    at = body.rfind(b'"usage"')  # from the end: ~3x faster here than a forward search
    return at < 0 or body.startswith((b":null", b": null"), at + 7)


def _answer_text(choice: Any) -> str:
    """The generated text of one choice: content (and reasoning), tool-call names and arguments, or ``text``."""
    if not isinstance(choice, dict):
        return ""
    if isinstance(choice.get("text"), str):
        return str(choice["text"])
    message = choice.get("message")
    if not isinstance(message, dict):
        return ""
    parts = [_text_of(message.get("content")), _text_of(message.get("reasoning_content"))]
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts += [str(function.get("name") or ""), str(function.get("arguments") or "")]
    return "".join(parts)


def with_usage(endpoint: str, payload: dict[str, Any], body: bytes) -> bytes | None:
    """``body`` with the ``usage`` the upstream left out (``add_usage``); None if it is not a JSON object or has
    a usage already."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return add_usage(endpoint, payload, data) if isinstance(data, dict) else None


def add_usage(endpoint: str, payload: dict[str, Any], data: dict[str, Any]) -> bytes | None:
    """The parsed answer ``data`` with the ``usage`` the upstream left out, counted by the gateway
    (``estimated: true`` in it), serialised: the prompt estimated from the request, the completion from the
    answer's text. None when it has a usage object."""
    if isinstance(data.get("usage"), dict):
        return None
    prompt = estimate_prompt_tokens(payload)
    if endpoint == "embeddings":
        data["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt, "estimated": True}
    else:
        choices = data.get("choices")
        texts = choices if isinstance(choices, list) else ()
        completion = sum(estimate_tokens(_answer_text(c)) for c in texts)
        data["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated": True,
        }
    return orjson.dumps(data)


def estimate_completion_tokens(payload: dict[str, Any]) -> int:
    """The most the answer may use: ``max_tokens`` (or a default for generation without one)."""
    completion = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if not isinstance(completion, int) or completion <= 0:
        completion = DEFAULT_COMPLETION_ESTIMATE if "messages" in payload or "prompt" in payload else 0
    return completion


_NUMBER = re.compile(rb"\s*:\s*(\d+)")
# How OpenAI and most servers write it, compact (vLLM, llama.cpp...) and with spaces; anything else takes the
# field-by-field path. The compact pattern alone matches in ~2/3 of the time.
_COMPACT_USAGE = re.compile(rb'"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+)')
_OPENAI_USAGE = re.compile(rb'"usage"\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d+)\s*,\s*"completion_tokens"\s*:\s*(\d+)')


def _count(body: bytes, name: bytes, start: int) -> int | None:
    at = body.find(name, start)
    if at < 0:
        return None
    match = _NUMBER.match(body, at + len(name))
    return int(match[1]) if match else None


def usage_from_body(body: bytes) -> tuple[int, int] | None:
    """(prompt, completion) tokens from a JSON answer's ``usage`` object, if it has one.

    Read by finding the field names after ``"usage"`` rather than by parsing the whole answer: this runs on
    every metered request, and answers can be large (many choices, long content)."""
    at = body.rfind(b'"usage"')
    if at < 0:
        return None
    common = _COMPACT_USAGE.match(body, at) or _OPENAI_USAGE.match(body, at)
    if common is not None:
        return int(common[1]), int(common[2])
    prompt = _count(body, b'"prompt_tokens"', at)
    if prompt is None:
        prompt = _count(body, b'"input_tokens"', at)
    completion = _count(body, b'"completion_tokens"', at)
    if completion is None:
        completion = _count(body, b'"output_tokens"', at)
    if not prompt and not completion:
        total = _count(body, b'"total_tokens"', at)
        if total is None and prompt is None and completion is None:
            return None
        return total or 0, 0
    return prompt or 0, completion or 0


# What one generated token looks like in a streamed chunk: a delta with text in it. llama.cpp, vLLM and Ollama send
# one token per content (or reasoning, or tool-call argument) delta, so counting deltas that carry text counts
# tokens. Compact JSON is what these servers write; the spaced form (Python's json.dumps defaults) is looked for only
# when the compact one is absent. This runs on every output of a metered stream: a few byte scans, no parsing (the
# first version, a sum over eight patterns, measured +52k instructions per streamed request).
_DONE = b"data: [DONE]"
_DONE_ENDS = (b"[DONE]\n\n", b"[DONE]\r\n\r\n")


def _chat_deltas(out: bytes) -> int:
    at = out.find(b'content":"')  # "content" and "reasoning_content"
    if at < 0:
        spaced = out.count(b'content": "')
        return spaced - out.count(b'content": ""') if spaced else 0
    if out.find(b'content":"', at + 10) < 0:
        # One delta in this output, the usual case: one pass over it and a look at the byte after the match.
        return 0 if out.startswith(b'"', at + 10) else 1
    return out.count(b'content":"') - out.count(b'content":""')


def _tool_deltas(out: bytes) -> int:
    """As ``_chat_deltas``, with tool-call arguments (only a request with tools can get them back)."""
    n = _chat_deltas(out)
    if out.find(b'"arguments"') >= 0:  # find: faster than `in` here
        n += out.count(b'"arguments":"') + out.count(b'"arguments": "')
        n -= out.count(b'"arguments":""') + out.count(b'"arguments": ""')
    return n


def _text_deltas(out: bytes) -> int:
    n = out.count(b'"text":"')
    if n:
        return n - out.count(b'"text":""')
    return out.count(b'"text": "') - out.count(b'"text": ""')


class StreamUsageTap(StreamTranslator):
    """Wraps a stream translator: reads ``usage`` from the events going by, counts the deltas that carry text
    (one token each, as llama.cpp, vLLM and Ollama send them), drops the usage-only chunk the client did not
    ask for (``strip``), and supplies the usage chunk a client asked for when the upstream sends none
    (``supply``: llama.cpp's server ignores ``stream_options.include_usage``). Only events that mention
    ``"usage"`` are parsed.

    Without ``strip`` nothing has to change in flight, so usage is read once the stream ended (or, with
    ``supply``, at its ``[DONE]``), from its last three outputs: servers send it in the last events, just before
    ``[DONE]`` (OpenAI, vLLM, llama.cpp, Ollama), and looking for it in every chunk measured about a fifth of
    what a stream costs at the gateway. ``text`` marks a legacy completions stream (``"text"`` deltas), ``tools`` a
    request that offered tools (their argument deltas count too)."""

    __slots__ = (
        "_count",
        "_inner",
        "_last",
        "_scanned",
        "_strip",
        "_supply",
        "_tail",
        "content_events",
        "estimated",
        "usage",
    )

    def __init__(
        self,
        inner: StreamTranslator,
        *,
        strip: bool,
        text: bool = False,
        tools: bool = False,
        supply: dict[str, Any] | None = None,
    ) -> None:
        self._inner = inner
        self._strip = strip
        # Tool-call argument deltas only come back to a request that offered tools; others skip looking for them.
        self._count = _text_deltas if text else _tool_deltas if tools else _chat_deltas
        # The request, when the client asked for usage: the prompt is estimated from it if the upstream is silent.
        self._supply = supply
        self._scanned = False  # the final outputs were searched for usage already
        self._tail = self._last = b""  # the output before the last, and the last
        self.usage: tuple[int, int] | None = None
        self.estimated = False  # the usage is the gateway's count, not the upstream's
        self.content_events = 0

    def feed(self, chunk: bytes) -> bytes:
        out = self._inner.feed(chunk)
        if not out:
            return out
        self.content_events += self._count(out)
        if self._strip:
            return self._scan(out)
        if self._supply is not None and out.endswith(_DONE_ENDS):  # [DONE] is the last event: no scan
            at = out.rindex(_DONE)
            self._find_usage(out[:at])
            if self.usage is None:
                out = out[:at] + self._supplied(out[:at]) + out[at:]
            self._tail = self._last = b""
            return out
        self._tail, self._last = self._last, out
        return out

    def end(self) -> bytes:
        out = self._inner.end()
        if out:
            self.content_events += self._count(out)
            if self._strip:
                return self._scan(out)
        if not self._scanned:
            self._find_usage(out)
            if self.usage is None and self._supply is not None:
                out += self._supplied(out)  # a stream that ended without [DONE]
        self._tail = self._last = b""
        return out

    def _find_usage(self, newest: bytes) -> None:
        self._scanned = True
        for last in (newest, self._last, self._tail):  # newest first: the newest report is the final count
            if last:
                self._scan(last)
                if self.usage is not None:
                    return

    def _supplied(self, newest: bytes) -> bytes:
        """The usage chunk the client asked for, counted by the gateway: completion tokens as the text deltas
        seen, the prompt estimated. It is also what limits, quotas, metrics and usage records take."""
        assert self._supply is not None
        prompt = estimate_prompt_tokens(self._supply)
        completion = self.content_events
        self.usage = (prompt, completion)
        self.estimated = True
        template: dict[str, Any] = {}
        for out in (newest, self._last, self._tail):  # id, created, model from the stream's own chunks
            template = _last_chunk(out)
            if template:
                break
        text = self._count is _text_deltas
        chunk: dict[str, Any] = {
            "id": template.get("id") or "",
            "object": template.get("object") or ("text_completion" if text else "chat.completion.chunk"),
            "created": template.get("created") or 0,
            "model": template.get("model") or self._supply.get("model") or "",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "estimated": True,
            },
        }
        if "system_fingerprint" in template:
            chunk["system_fingerprint"] = template["system_fingerprint"]
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _scan(self, out: bytes) -> bytes:
        """``out`` with the usage read from it (and, with ``strip``, the usage-only chunk left out)."""
        if b'"usage"' not in out:
            return out
        kept: list[bytes] = []
        changed = False
        for event in out.split(b"\n\n"):
            if not event:
                continue
            if b'"usage"' in event and event.startswith(b"data: {"):
                try:
                    chunk = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    chunk = None
                usage = chunk.get("usage") if isinstance(chunk, dict) else None
                if isinstance(usage, dict):
                    self.usage = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
                    if self._strip and isinstance(chunk, dict) and not chunk.get("choices"):
                        changed = True
                        continue  # the usage-only chunk the gateway asked for on its own account
            kept.append(event)
        if not changed:
            return out
        return b"".join(e + b"\n\n" for e in kept)

    def estimated_completion(self) -> int:
        return self.content_events


def _last_chunk(out: bytes) -> dict[str, Any]:
    """The newest ``data: {...}`` event of ``out``, parsed; {} if there is none."""
    for event in reversed(out.split(b"\n\n")):
        event = event.strip()
        if event.startswith(b"data: {"):
            try:
                chunk = orjson.loads(event[6:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                return chunk
    return {}


class Meter:
    """What one request used and how it went, filled in by the request path when token limits, usage records
    or observability (metrics, access log, response headers) need it."""

    __slots__ = (
        "answer_s",
        "attempts",
        "body",
        "bytes_out",
        "completion_tokens",
        "first_at",
        "instance",
        "model",
        "needs_usage",
        "prompt_tokens",
        "request_id",
        "status",
        "strip_usage",
        "tap",
        "ttft_s",
        "upstream_labels",
        "upstream_s",
    )

    def __init__(self) -> None:
        self.request_id: str | None = None
        # A non-streamed answer whose usage is still to read (read_body): when only observability wants it, that
        # happens later, in a batch (observe.py).
        self.body: bytes | None = None
        # Token limits, quotas or usage records need the real usage: streams are then asked to report it.
        self.needs_usage = False
        self.model: str | None = None  # the model the request was routed to (a configured name)
        self.attempts = 0  # upstream attempts (more than one: failed over)
        self.upstream_s = 0.0  # time spent waiting on upstreams, summed over attempts (streams: to the first byte)
        self.ttft_s: float | None = None  # the answering upstream's time to first byte (first token when streaming)
        self.bytes_out = 0
        self.first_at: float | None = None  # monotonic time the first streamed bytes went out
        self.instance: str | None = None
        # The answering upstream's timings, observed in the metrics batch: its instance's labels, and the time
        # from sending to the end of its answer (ttft_s being the time to its first byte).
        self.upstream_labels: tuple[str, str] | None = None
        self.answer_s = 0.0
        self.status = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.strip_usage = False  # the gateway asked for stream usage on its own account
        self.tap: StreamUsageTap | None = None

    def read_body(self) -> None:
        """The usage of the answer kept in ``body``, into the meter; the answer is let go."""
        body, self.body = self.body, None
        if body is not None:
            usage = (compiled_usage(body) if compiled_usage is not None else None) or usage_from_body(body)
            if usage is not None:
                self.prompt_tokens, self.completion_tokens = usage

    def settle(self, prompt_estimate: int) -> None:
        """After the answer ended: take the stream's usage, or estimate what the upstream did not report."""
        tap = self.tap
        if tap is not None:
            if tap.usage is not None:
                self.prompt_tokens, self.completion_tokens = tap.usage
            else:
                self.completion_tokens = tap.estimated_completion()
        if not self.prompt_tokens and self.status and self.status < 400:
            self.prompt_tokens = prompt_estimate

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# A request that ended, as observability handles it in batches (observe.py): endpoint name, its meter, status,
# seconds taken, perf_counter() at its end, key id, client address. A plain tuple: one is made per request.
Ended = tuple[str, Meter, int, float, float, str | None, str | None]


@dataclass(slots=True, frozen=True)
class UsageRecord:
    ts: float
    key_id: str | None
    model: str
    instance: str | None
    endpoint: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    bytes_in: int
    bytes_out: int


class UsageRecorder:
    """Buffers usage records and writes them in batches off the request path. If the store is slow or down,
    the buffer fills up to ``capacity``; further records are dropped and counted, and requests never wait."""

    def __init__(
        self,
        sink: Callable[[Sequence[UsageRecord]], Awaitable[None]],
        *,
        capacity: int = 10_000,
        batch: int = 500,
        interval: float = 1.0,
    ) -> None:
        self._sink = sink
        self._buffer: deque[UsageRecord] = deque()
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.dropped = 0
        self.written = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, record: UsageRecord) -> None:
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            return
        self._buffer.append(record)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage recorder")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self.batch, len(self._buffer)))]
            try:
                await self._sink(batch)
            except Exception as exc:  # the store is down: keep what fits, try again next time
                log.warning("could not write %d usage record(s): %s", len(batch), exc)
                room = self.capacity - len(self._buffer)
                self._buffer.extendleft(reversed(batch[:room]))
                self.dropped += max(len(batch) - room, 0)
                return
            self.written += len(batch)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    def __repr__(self) -> str:
        return f"<UsageRecorder buffered={len(self._buffer)} written={self.written} dropped={self.dropped}>"
