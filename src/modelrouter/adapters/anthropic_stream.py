"""Anthropic's Messages event stream → OpenAI ``chat.completion.chunk`` events, one event at a time.

``message_start`` opens the answer (a chunk with the assistant role); ``content_block_start`` of a ``tool_use``
block opens a tool call (its id and name, arguments to follow); ``content_block_delta`` carries text
(``text_delta``), tool arguments in pieces (``input_json_delta``, passed on as they come: OpenAI clients join
them) and thinking (``thinking_delta`` → ``reasoning_content``); ``message_delta`` gives the stop reason and the
output tokens; ``message_stop`` ends it, with a usage chunk when the request asked for one
(``stream_options.include_usage``) and ``[DONE]``. ``ping`` is dropped. An ``error`` event becomes the gateway's
error (``UpstreamReportedError``), which ends the stream with an error event. With emulated structured output
(``response_format: json_schema``) the schema tool's arguments are the answer's text.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import UpstreamReportedError
from .anthropic_shapes import SCHEMA_TOOL, finish_reason, usage_of, wants_schema_tool
from .base import MAX_EVENT_BYTES, SSEReader, StreamTranslator

__all__ = ["MessagesToChunks"]


class MessagesToChunks(StreamTranslator):
    __slots__ = ("_base", "_blocks", "_events", "_input", "_schema", "_tools", "_usage", "_wants_usage")

    def __init__(self, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES) -> None:
        self._events = SSEReader(max_event)
        options = payload.get("stream_options")
        self._wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self._schema = wants_schema_tool(payload)
        self._base: dict[str, Any] = {
            "id": "chatcmpl",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": payload.get("model"),
        }
        self._blocks: dict[int, tuple[str, int]] = {}  # content block index -> (kind, tool call index)
        self._tools = 0
        self._input: dict[str, Any] = {}
        self._usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for name, data in self._events.feed(chunk):
            piece = self._event(name, data)
            if piece:
                out.append(piece)
        return b"".join(out)

    def end(self) -> bytes:
        self._events.end()
        return b""

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**self._base, "choices": [choice]}) + b"\n\n"

    def _event(self, name: str, data: bytes) -> bytes:
        event: dict[str, Any] = orjson.loads(data) if data else {}
        kind = event.get("type", name)
        if kind == "message_start":
            message = event.get("message") or {}
            self._base["id"] = message.get("id") or "chatcmpl"
            self._input = message.get("usage") or {}
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            index = int(event.get("index", 0))
            if block.get("type") == "tool_use" and not (self._schema and block.get("name") == SCHEMA_TOOL):
                self._blocks[index] = ("tool", self._tools)
                self._tools += 1
                call = {"index": self._tools - 1, "id": block.get("id"), "type": "function"}
                call["function"] = {"name": block.get("name"), "arguments": ""}
                return self._chunk({"tool_calls": [call]})
            self._blocks[index] = (str(block.get("type")), 0)
            text = block.get("text")
            return self._chunk({"content": text}) if text else b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            block_kind, tool = self._blocks.get(int(event.get("index", 0)), ("text", 0))
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            if dtype == "input_json_delta":
                piece = delta.get("partial_json", "")
                if block_kind != "tool":  # the emulated structured answer: its JSON is the text
                    return self._chunk({"content": piece}) if piece else b""
                return self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": piece}}]})
            return b""  # signature_delta, citations: no counterpart
        if kind == "message_delta":
            self._usage = {**self._input, **(event.get("usage") or {})}
            stop = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, finish_reason(stop, self._schema) or "stop")
        if kind == "message_stop":
            tail = b""
            if self._wants_usage:
                usage = {**self._base, "choices": [], "usage": usage_of(self._usage or self._input)}
                tail = b"data: " + orjson.dumps(usage) + b"\n\n"
            return tail + b"data: [DONE]\n\n"
        if kind == "error":
            error = event.get("error") or {}
            raise UpstreamReportedError(str(error.get("message") or "the backend failed"), str(error.get("type")))
        return b""  # ping, content_block_stop, and event types added later
