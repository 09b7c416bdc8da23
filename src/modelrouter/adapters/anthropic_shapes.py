"""OpenAI chat ↔ Anthropic Messages: the request and answer shapes (the adapter is ``anthropic.py``, streams
``anthropic_stream.py``).

Requests: system and developer messages become ``system``; user, assistant and tool turns become Messages turns
(consecutive turns of one role merged, as Anthropic requires; tool results are user turns of ``tool_result``
blocks); text and image parts become blocks (a data URL a base64 image, an http URL a url image); assistant
``tool_calls`` become ``tool_use`` blocks; ``tools`` and ``tool_choice`` (auto, none, required, a named function,
``parallel_tool_calls: false``) map one to one; ``max_completion_tokens``/``max_tokens`` (Anthropic requires one:
the instance's ``default_max_tokens`` when the client gave none), ``temperature``, ``top_p``, ``top_k``, ``stop``
→ ``stop_sequences``, ``user`` → ``metadata.user_id``, ``reasoning_effort`` → ``thinking`` with a token budget.
``response_format: json_schema`` is emulated: a tool of that schema is forced, and its input is the answer's text;
``json_object`` becomes an instruction in ``system``. ``n`` above 1 has no counterpart and is refused; sampling
fields without one (penalties, seed, logprobs, logit_bias) are dropped.

Answers: text blocks → ``content``, ``tool_use`` → ``tool_calls``, thinking → ``reasoning_content``,
``stop_reason`` → ``finish_reason``, usage with cached input tokens. Streams are translated event by event
(``stream.py``). Errors keep Anthropic's types, which are the gateway's own; 529 (overloaded) is a 503.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import InvalidRequest
from .base import image_of

__all__ = ["SCHEMA_TOOL", "chat_to_messages", "finish_reason", "messages_to_chat", "usage_of", "wants_schema_tool"]

DEFAULT_MAX_TOKENS = 4096
SCHEMA_TOOL = "json_answer"  # the tool that carries a json_schema answer (emulated structured output)
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None, schema_tool: bool = False) -> str | None:
    if stop_reason is None:
        return None
    if stop_reason == "tool_use" and schema_tool:
        return "stop"  # the emulated structured answer is the message, not a tool call
    return _FINISH.get(stop_reason, "stop")


def usage_of(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage → OpenAI's: the prompt counts every input token, cached and written to the cache too."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    kind, media, data = image_of(part)
    if kind == "base64":
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": data}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("a tool call's arguments are not JSON", param="messages") from None
    return value if isinstance(value, dict) else {"value": value}


def _turn(msg: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = msg.get("role")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": str(msg.get("tool_call_id", "")),
            "content": _text_of(msg.get("content")),
        }
        return "user", [result]
    blocks = _blocks(msg.get("content"))
    if role == "assistant":
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "input": _arguments(fn.get("arguments")),
                }
            )
        return "assistant", blocks
    return "user", blocks


def chat_to_messages(payload: dict[str, Any], model: str, default_max_tokens: int | None = None) -> dict[str, Any]:
    """An OpenAI chat request → an Anthropic Messages request."""
    if (payload.get("n") or 1) > 1:
        raise InvalidRequest("n above 1 has no counterpart in Anthropic's Messages API", param="n")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in payload.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        if msg.get("role") in ("system", "developer"):
            system.append(_text_of(msg.get("content")))
            continue
        role, blocks = _turn(msg)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants the roles to alternate
        else:
            turns.append({"role": role, "content": blocks})
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens") or default_max_tokens
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens or DEFAULT_MAX_TOKENS, "messages": turns}
    for name in ("temperature", "top_p", "top_k"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    stop = payload.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if payload.get("stream"):
        body["stream"] = True
    if isinstance(payload.get("user"), str):
        body["metadata"] = {"user_id": payload["user"]}
    effort = payload.get("reasoning_effort")
    if effort in _EFFORT_BUDGET:
        budget = _EFFORT_BUDGET[effort]
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body["max_tokens"] = max(body["max_tokens"], budget + 1024)  # the budget must stay under max_tokens
    tools = [_tool(t) for t in payload.get("tools") or [] if isinstance(t, dict)]
    choice = _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        tools.append(
            {
                "name": SCHEMA_TOOL,
                "description": spec.get("description") or f"Answer as {spec.get('name', 'JSON')}",
                "input_schema": spec.get("schema") or {"type": "object"},
            }
        )
        choice = {"type": "tool", "name": SCHEMA_TOOL}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        system.append("Answer with one JSON object and nothing else.")
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    if tools:
        body["tools"] = tools
    if choice is not None and (tools or choice.get("type") == "none"):
        body["tool_choice"] = choice
    return body


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out: dict[str, Any] = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object"}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, dict):
        out: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        out = {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def messages_to_chat(data: dict[str, Any], model: str, schema_tool: bool = False) -> dict[str, Any]:
    """An Anthropic Messages answer → an OpenAI chat completion."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            if schema_tool and block.get("name") == SCHEMA_TOOL:
                texts.append(orjson.dumps(block.get("input", {})).decode())
                continue
            arguments = orjson.dumps(block.get("input", {})).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": data.get("id") or "msg",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(data.get("stop_reason"), schema_tool)}
        ],
        "usage": usage_of(data.get("usage") or {}),
    }


def wants_schema_tool(payload: dict[str, Any]) -> bool:
    fmt = payload.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") == "json_schema"
