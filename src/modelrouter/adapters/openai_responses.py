"""An OpenAI-compatible backend that serves the Responses API itself (``responses_api: true``; OpenAI's own API):
a ``/v1/responses`` request goes to its ``/v1/responses`` unchanged, only the model renamed, and its answer or
events go back as they came. Beside the events, ``ResponsesToChunks`` turns them into chat chunks for the
gateway's usage count (the tap reads chat), which are then dropped. Everything else is the plain OpenAI adapter.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..endpoints import Endpoint
from .base import MAX_EVENT_BYTES, SSEReader, StreamTranslator
from .openai import OpenAIAdapter

__all__ = ["OpenAIResponsesAdapter", "ResponsesToChunks"]


class ResponsesToChunks(StreamTranslator):
    """Responses events → the chat chunks they amount to: text deltas, function calls and their argument pieces,
    and at ``response.completed``/``.incomplete`` the finish, the usage chunk and ``[DONE]``."""

    __slots__ = ("_events",)

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._events = SSEReader(max_event)

    @staticmethod
    def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        data: dict[str, Any] = {"object": "chat.completion.chunk", "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for _name, data in self._events.feed(chunk):
            event = orjson.loads(data) if data and data != b"[DONE]" else {}
            kind = event.get("type")
            if kind == "response.output_text.delta":
                out.append(self._chunk({"content": event.get("delta", "")}))
            elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                item = event["item"]
                call = {"index": event.get("output_index", 0), "id": item.get("call_id"), "type": "function"}
                call["function"] = {"name": item.get("name"), "arguments": ""}
                out.append(self._chunk({"tool_calls": [call]}))
            elif kind == "response.function_call_arguments.delta":
                call = {"index": event.get("output_index", 0), "function": {"arguments": event.get("delta", "")}}
                out.append(self._chunk({"tool_calls": [call]}))
            elif kind in ("response.completed", "response.incomplete"):
                usage = (event.get("response") or {}).get("usage") or {}
                prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
                counted = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
                finish = "stop" if kind == "response.completed" else "length"
                out += [self._chunk({}, finish), self._chunk(None, usage=counted), b"data: [DONE]\n\n"]
        return b"".join(out)

    def end(self) -> bytes:
        self._events.end()
        return b""


class OpenAIResponsesAdapter(OpenAIAdapter):
    name = "openai"
    native = "responses"
    native_path = "/v1/responses"

    def native_meter(
        self, endpoint: Endpoint, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES
    ) -> StreamTranslator:
        return ResponsesToChunks(max_event)
