"""Token usage: estimating it before a request, and reading it from answers.

Token limits reserve an estimate before forwarding and reconcile with the real count afterwards. The real count
comes from the upstream's ``usage``; for streamed chat the gateway asks for it (``stream_options.include_usage``)
and removes the extra usage chunk again if the client did not ask for it (``dataplane/usage_tap.py``). When an
upstream reports nothing, the count is estimated (about 4 characters a token: no tokenizer can be downloaded at
run time, and an estimate that is close is better than none for limits).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = [
    "DEFAULT_COMPLETION_ESTIMATE",
    "add_usage",
    "estimate_completion_tokens",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "lacks_usage",
    "usage_from_body",
    "with_usage",
]

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
