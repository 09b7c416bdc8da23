"""The OpenAI Responses front door (``POST /v1/responses``): a Responses request becomes a chat request, routed
like any, and the chat answer becomes a ``response`` object - whole, or as the Responses event stream translated
chunk by chunk.

Request: ``instructions`` → a system message; ``input`` as a string (one user message) or items - messages
(``input_text`` / ``output_text`` parts, ``input_image`` → ``image_url``), ``function_call`` items (consecutive
ones become one assistant turn's ``tool_calls``) and ``function_call_output`` items (``tool`` messages);
``tools`` of type ``function``; ``tool_choice``; ``parallel_tool_calls``; ``max_output_tokens`` → ``max_tokens``;
``temperature``, ``top_p``, ``user``; ``text.format`` json_schema / json_object → ``response_format``;
``reasoning.effort`` → ``reasoning_effort``; ``stream``. Nothing is kept: ``previous_response_id`` is refused (400,
send the conversation as ``input`` items), ``store`` is accepted and answered as ``false``; built-in tools (web
search, file search, computer use) have no chat counterpart and are refused.

Answer: the message → a ``message`` output item with ``output_text``, tool calls → ``function_call`` items;
``finish_reason: length`` → ``status: incomplete`` (``max_output_tokens``); usage → ``input_tokens`` /
``output_tokens`` (with cached and reasoning details).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ..adapters.base import MAX_EVENT_BYTES
from ..errors import GatewayError, InvalidRequest
from .chunks import FromChatChunks

__all__ = ["ChunksToResponseEvents", "answer_to_response", "request_to_chat"]


def _parts(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InvalidRequest("an input_image needs an image_url (file ids are not supported)", param="input")
            image: dict[str, Any] = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise InvalidRequest(f"input content of type {str(kind)!r} is not supported", param="input")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(items: Any) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise InvalidRequest("input must be a string or an array of items", param="input")
    messages: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequest("each input item must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            messages.append({"role": "system" if role == "developer" else role, "content": _parts(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            continue  # a model's earlier reasoning: chat has no place for it
        else:
            raise InvalidRequest(f"input items of type {str(kind)!r} are not supported", param="input")
    return messages


def request_to_chat(request: dict[str, Any]) -> dict[str, Any]:
    """A Responses request → an OpenAI chat request."""
    if request.get("previous_response_id") is not None:
        raise InvalidRequest(
            "previous_response_id is not supported: this gateway keeps no responses; "
            "send the conversation as input items",
            param="previous_response_id",
        )
    messages = _messages(request.get("input"))
    if isinstance(request.get("instructions"), str) and request["instructions"]:
        messages.insert(0, {"role": "system", "content": request["instructions"]})
    chat: dict[str, Any] = {"model": request.get("model"), "messages": messages}
    for name in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if request.get(name) is not None:
            chat[name] = request[name]
    if request.get("max_output_tokens") is not None:
        chat["max_tokens"] = request["max_output_tokens"]
    tools = []
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise InvalidRequest(
                f"tools of type {str(kind)!r} have no chat counterpart; only function tools are served", param="tools"
            )
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        tools.append({"type": "function", "function": function})
    if tools:
        chat["tools"] = tools
    choice = request.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    fmt = (request.get("text") or {}).get("format") if isinstance(request.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    reasoning = request.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    if request.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries the usage
    return chat


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _shell(request: dict[str, Any], rid: str, created: int, status: str) -> dict[str, Any]:
    """What a response object says besides its output, echoing the request as OpenAI's does."""
    text = request.get("text") if isinstance(request.get("text"), dict) else None
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model"),
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (request.get("reasoning") or {}).get("effort"), "summary": None},
        "store": False,
        "temperature": request.get("temperature"),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _finish(response: dict[str, Any], finish: str | None) -> None:
    if finish == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def answer_to_response(body: bytes, request: dict[str, Any]) -> bytes:
    """An OpenAI chat completion → a Responses ``response`` object."""
    data = orjson.loads(body)
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    response = _shell(request, _new_id("resp"), int(data.get("created") or time.time()), "completed")
    if message.get("content"):
        response["output"].append(_message_item(_new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        item = _call_item(
            _new_id("fc"), call.get("id") or _new_id("call"), fn.get("name") or "", fn.get("arguments") or ""
        )
        response["output"].append(item)
    _finish(response, choice.get("finish_reason"))
    response["usage"] = _usage(data.get("usage"))
    return orjson.dumps(response)


class ChunksToResponseEvents(FromChatChunks):
    """OpenAI chat chunks → the Responses event stream (``response.created`` … ``response.completed``), each event
    as the chunk that carries it arrives."""

    __slots__ = (
        "_calls",
        "_done",
        "_finish",
        "_response",
        "_seq",
        "_text",
        "_text_item",
    )

    def __init__(self, request: dict[str, Any], max_event: int = MAX_EVENT_BYTES) -> None:
        super().__init__(max_event)
        self._response = _shell(request, _new_id("resp"), int(time.time()), "in_progress")
        self._seq = 0
        self._text_item: tuple[int, str] | None = None  # output index and id of the open message item
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> its output item (and "index")
        self._finish: str | None = None
        self._done = False

    def _event(self, kind: str, **data: Any) -> bytes:
        self._seq += 1
        payload = {"type": kind, "sequence_number": self._seq, **data}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _start(self) -> bytes:
        self._started = True
        return self._event("response.created", response=self._response) + self._event(
            "response.in_progress", response=self._response
        )

    def _open_text(self) -> bytes:
        index, item_id = len(self._response["output"]), _new_id("msg")
        self._text_item = (index, item_id)
        item = {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}
        self._response["output"].append(item)
        part = {"type": "output_text", "text": "", "annotations": []}
        return self._event("response.output_item.added", output_index=index, item=item) + self._event(
            "response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=part
        )

    def _chunk(self, data: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start()
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._text_item is None:
                    out += self._open_text()
                assert self._text_item is not None
                index, item_id = self._text_item
                self._text.append(text)
                out += self._event(
                    "response.output_text.delta", item_id=item_id, output_index=index, content_index=0, delta=text
                )
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        fn = call.get("function") or {}
        entry = self._calls.get(call.get("index", 0))
        out = b""
        if entry is None:
            index = len(self._response["output"])
            item = _call_item(_new_id("fc"), call.get("id") or _new_id("call"), fn.get("name") or "", "", "in_progress")
            entry = self._calls[call.get("index", 0)] = {"item": item, "index": index}
            self._response["output"].append(item)
            out += self._event("response.output_item.added", output_index=index, item=item)
        piece = fn.get("arguments")
        if piece:
            entry["item"]["arguments"] += piece
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=entry["item"]["id"],
                output_index=entry["index"],
                delta=piece,
            )
        return out

    def _complete(self) -> bytes:
        if self._done:
            return b""
        self._done = True
        out = b"" if self._started else self._start()
        if self._text_item is not None:
            index, item_id = self._text_item
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": []}
            out += self._event(
                "response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text
            )
            out += self._event(
                "response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part
            )
            item = _message_item(item_id, text)
            self._response["output"][index] = item
            out += self._event("response.output_item.done", output_index=index, item=item)
        for entry in self._calls.values():
            item = {**entry["item"], "status": "completed"}
            self._response["output"][entry["index"]] = item
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=entry["index"],
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=entry["index"], item=item)
        _finish(self._response, self._finish)
        self._response["usage"] = _usage(self._usage)
        kind = "response.completed" if self._response["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=self._response)


def error_event(exc: GatewayError) -> bytes:
    """A stream broken off after its first byte ends with Responses' ``error`` event."""
    error = orjson.loads(exc.body()).get("error") or {}
    data = {
        "type": "error",
        "code": error.get("code"),
        "message": error.get("message", exc.message),
        "param": error.get("param"),
    }
    return b"event: error\ndata: " + orjson.dumps(data) + b"\n\n"
