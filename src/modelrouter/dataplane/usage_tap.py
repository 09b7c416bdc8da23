"""Usage in streams: ``StreamUsageTap`` counts what a metered stream used and supplies the usage chunk a client
asked for (``stream_options.include_usage``) when the upstream sent none, or removes the one the gateway asked
for when the client did not.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..access.usage import estimate_prompt_tokens
from ..adapters.base import StreamTranslator

__all__ = ["StreamUsageTap"]

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
