"""The Anthropic Messages front door (``POST /v1/messages``): an Anthropic request becomes an OpenAI chat request,
which the gateway routes like any other (to an ``anthropic`` backend it goes back to Messages, field for field;
to any other it is chat), and the chat answer becomes a Messages answer - one whole, or a stream of Anthropic's
events translated chunk by chunk.

Request: ``system`` (a string or text blocks) → a system message; ``text`` blocks → text parts; ``image`` blocks
(base64 or url) → ``image_url`` parts; an assistant's ``tool_use`` blocks → ``tool_calls``; a user's
``tool_result`` blocks → ``tool`` messages (before the rest of that turn); ``tools`` (``input_schema`` →
``parameters``); ``tool_choice`` auto / any / tool / none (``disable_parallel_tool_use`` →
``parallel_tool_calls: false``); ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop_sequences`` →
``stop``, ``metadata.user_id`` → ``user``, ``stream`` (with usage asked for: Anthropic streams carry it).
``thinking`` and ``cache_control`` have no chat counterpart and are dropped.

Answer: ``content`` → a ``text`` block, ``tool_calls`` → ``tool_use`` blocks (arguments parsed), ``finish_reason``
→ ``stop_reason`` (stop → end_turn, length → max_tokens, tool_calls → tool_use, content_filter → refusal), usage
→ ``input_tokens``/``output_tokens`` (cached prompt tokens as ``cache_read_input_tokens``). Errors on this path are
Anthropic error objects, with the gateway's types (the same vocabulary).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ..adapters.base import MAX_EVENT_BYTES
from ..errors import ERROR_TYPES, GatewayError, InvalidRequest, type_for_status
from .chunks import FromChatChunks

__all__ = ["ChunksToEvents", "answer_to_message", "error_body", "error_event", "request_to_chat"]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
_STOP["content_filter"] = "refusal"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise InvalidRequest(f"image source type {source.get('type')!r} is not supported", param="messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "tool_result":
            result = {
                "role": "tool",
                "tool_call_id": str(block.get("tool_use_id", "")),
                "content": _text(block.get("content")),
            }
            if block.get("is_error"):
                result["content"] = f"Error: {result['content']}"
            results.append(result)
        elif kind is not None and kind not in ("document", "search_result"):
            continue
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        user_content: Any = "\n".join(p["text"] for p in parts) if only_text and len(parts) == 1 else parts
        results.append({"role": "user", "content": user_content})
    return results


def _assistant_turn(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        turn["tool_calls"] = calls
    return turn


def request_to_chat(request: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request → an OpenAI chat request."""
    messages: list[dict[str, Any]] = []
    system = _text(request.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for turn in request.get("messages") or []:
        if not isinstance(turn, dict):
            raise InvalidRequest("each message must be an object with role and content", param="messages")
        if turn.get("role") == "assistant":
            messages.append(_assistant_turn(turn.get("content")))
        else:
            messages.extend(_user_turn(turn.get("content")))
    chat: dict[str, Any] = {
        "model": request.get("model"),
        "messages": messages,
        "max_tokens": request.get("max_tokens"),
    }
    for name in ("temperature", "top_p", "top_k"):
        if request.get(name) is not None:
            chat[name] = request[name]
    stop = request.get("stop_sequences")
    if isinstance(stop, list) and stop:
        chat["stop"] = stop
    elif stop is not None and not isinstance(stop, list):
        raise InvalidRequest("stop_sequences must be an array of strings", param="stop_sequences")
    metadata = request.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    given = request.get("tools")
    tools = [_tool(t) for t in given if isinstance(t, dict) and "input_schema" in t] if isinstance(given, list) else []
    if tools:
        chat["tools"] = tools
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        if choice.get("disable_parallel_tool_use") and tools:
            chat["parallel_tool_calls"] = False
    if request.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # a Messages stream always reports usage
    return chat


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    out = {
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _arguments(text: str | None) -> Any:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"value": value}


def answer_to_message(body: bytes, model: str) -> bytes:
    """An OpenAI chat completion → an Anthropic Messages answer."""
    data = orjson.loads(body)
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _tool_id(),
                "name": fn.get("name"),
                "input": _arguments(fn.get("arguments")),
            }
        )
    answer = {
        "id": _message_id(data.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(data.get("usage")),
    }
    return orjson.dumps(answer)


def _message_id(upstream: Any) -> str:
    return upstream if isinstance(upstream, str) and upstream.startswith("msg_") else f"msg_{uuid.uuid4().hex[:24]}"


def _tool_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


def error_body(exc: GatewayError) -> bytes:
    """Anthropic's error object for ``exc``: its message as the client would read it (an upstream's own, passed
    on), and a type from the vocabulary Anthropic and the gateway share."""
    kind, message = exc.type, exc.message
    try:
        error = orjson.loads(exc.body())["error"]
        kind, message = str(error.get("type") or kind), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        pass
    if kind not in ERROR_TYPES:
        kind = type_for_status(exc.status)
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def error_event(exc: GatewayError) -> bytes:
    return b"event: error\ndata: " + error_body(exc) + b"\n\n"


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


class ChunksToEvents(FromChatChunks):
    """OpenAI chat chunks (as the gateway's stream carries them) → Anthropic's Messages events."""

    __slots__ = ("_block", "_blocks", "_done", "_model", "_stop", "_tool")

    def __init__(self, model: str, max_event: int = MAX_EVENT_BYTES) -> None:
        super().__init__(max_event)
        self._model = model
        self._block: str | None = None  # "text" or "tool": the open content block
        self._blocks = 0  # content blocks opened so far
        self._tool: int | None = None  # the OpenAI index of the open tool call
        self._stop = "end_turn"
        self._done = False

    def _start(self, data: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(data.get("id")),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message})

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return _event("content_block_stop", {"index": self._blocks - 1})

    def _open(self, block: dict[str, Any], kind: str) -> bytes:
        out = self._close()
        self._block = kind
        self._blocks += 1
        return out + _event("content_block_start", {"index": self._blocks - 1, "content_block": block})

    def _chunk(self, data: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(data)
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._block != "text":
                    out += self._open({"type": "text", "text": ""}, "text")
                out += _event(
                    "content_block_delta", {"index": self._blocks - 1, "delta": {"type": "text_delta", "text": text}}
                )
            for call in delta.get("tool_calls") or []:
                index = call.get("index", 0)
                fn = call.get("function") or {}
                if self._block != "tool" or self._tool != index:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or _tool_id(),
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    out += self._open(block, "tool")
                    self._tool = index
                if fn.get("arguments"):
                    delta_json = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    out += _event("content_block_delta", {"index": self._blocks - 1, "delta": delta_json})
            if choice.get("finish_reason"):
                self._stop = _STOP.get(choice["finish_reason"], "end_turn")
        return out

    def _complete(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out = b"" if self._started else self._start({})
        out += self._close()
        usage = _usage(self._usage)
        out += _event("message_delta", {"delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage})
        return out + _event("message_stop", {})
