"""Google's Gemini API (``generativelanguage.googleapis.com``) behind the OpenAI chat and embeddings shapes.

Chat → ``POST /v1beta/models/{model}:generateContent`` (a stream: ``:streamGenerateContent?alt=sse``): system and
developer messages → ``systemInstruction``; user / assistant turns → ``contents`` with roles user / model (turns
of one role merged); text parts, image data URLs → ``inlineData``, http(s) image URLs → ``fileData``; assistant
``tool_calls`` → ``functionCall`` parts, ``tool`` messages → ``functionResponse`` parts (named by the call they
answer); ``tools`` → ``functionDeclarations``; ``tool_choice`` → ``toolConfig.functionCallingConfig`` (AUTO, NONE,
ANY, a named function); ``generationConfig`` from ``temperature``, ``top_p``, ``top_k``,
``max_completion_tokens``/``max_tokens`` → ``maxOutputTokens``, ``stop`` → ``stopSequences``, ``n`` →
``candidateCount``, ``seed``, ``presence_penalty``, ``frequency_penalty``, ``response_format`` → ``responseMimeType``
and ``responseSchema``.

Answers: each candidate a choice; text parts → ``content``, ``functionCall`` parts → ``tool_calls`` (ids made
here: Gemini gives none), thought parts → ``reasoning_content``; ``finishReason`` STOP → stop, MAX_TOKENS →
length, SAFETY / RECITATION / BLOCKLIST / PROHIBITED_CONTENT / SPII / IMAGE_SAFETY → content_filter; a prompt
blocked outright (``promptFeedback.blockReason``) → one empty choice with content_filter; ``usageMetadata`` →
usage (cached and thought tokens as details). Embeddings → ``:batchEmbedContents`` (``dimensions`` →
``outputDimensionality``). The key: ``api_key`` (sent as ``x-goog-api-key``) or the instance's headers.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import orjson

from ..endpoints import Endpoint
from ..errors import InvalidRequest, UpstreamReportedError
from .base import MAX_EVENT_BYTES, Adapter, SSEReader, StreamTranslator, image_of

__all__ = ["GeminiAdapter", "chat_to_gemini", "gemini_to_chat"]

_CONFIG_NAMES = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
_MIME_BY_SUFFIX = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


def _finish(reason: str | None) -> str | None:
    if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            kind, media, url = image_of(part)
            if kind == "base64":
                parts.append({"inlineData": {"mimeType": media, "data": url}})
            else:
                suffix = url.rsplit(".", 1)[-1].lower() if "." in url.rsplit("/", 1)[-1] else ""
                mime = _MIME_BY_SUFFIX.get(f".{suffix}", "image/jpeg")
                parts.append({"fileData": {"mimeType": mime, "fileUri": url}})
    return parts


def _args(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("a tool call's arguments are not JSON", param="messages") from None
    return value if isinstance(value, dict) else {"value": value}


def chat_to_gemini(payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request → a Gemini ``generateContent`` request (the model is in the URL)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name (a functionResponse is named, not numbered)
    for msg in payload.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            system += _parts(msg.get("content"))
            continue
        if role == "tool":
            name = names.get(str(msg.get("tool_call_id")), str(msg.get("name") or "function"))
            content = msg.get("content")
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in _parts(content))
            parts: list[dict[str, Any]] = [{"functionResponse": {"name": name, "response": {"content": text}}}]
            turn = "user"
        else:
            parts = _parts(msg.get("content"))
            for call in msg.get("tool_calls") or [] if role == "assistant" else []:
                fn = call.get("function") or {}
                names[str(call.get("id"))] = str(fn.get("name"))
                parts.append({"functionCall": {"name": fn.get("name"), "args": _args(fn.get("arguments"))}})
            turn = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for ours, theirs in _CONFIG_NAMES:
        if payload.get(ours) is not None:
            config[theirs] = payload[ours]
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = payload.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if (payload.get("n") or 1) > 1:
        config["candidateCount"] = payload["n"]
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
        if schema:
            config["responseSchema"] = schema
    if config:
        body["generationConfig"] = config
    declarations = []
    for tool in payload.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict):
            declaration = {k: fn[k] for k in ("name", "description", "parameters") if fn.get(k) is not None}
            declarations.append(declaration)
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
    choice = payload.get("tool_choice")
    if choice is not None and declarations:
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            calling: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [wanted]}
        else:
            calling = {"mode": {"none": "NONE", "required": "ANY"}.get(str(choice), "AUTO")}
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body


def _usage(meta: dict[str, Any]) -> dict[str, Any]:
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(meta.get("cachedContentTokenCount") or 0)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _message(parts: list[dict[str, Any]], start: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Gemini parts → an OpenAI message's fields, and its tool calls (numbered from ``start`` in a stream)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if "functionCall" in part:
            call = part["functionCall"] or {}
            calls.append(
                {
                    "index": start + len(calls),
                    "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {}).decode()},
                }
            )
        elif part.get("thought"):
            thoughts.append(str(part.get("text", "")))
        elif "text" in part:
            texts.append(str(part["text"]))
    fields: dict[str, Any] = {"content": "".join(texts)}
    if thoughts:
        fields["reasoning_content"] = "".join(thoughts)
    return fields, calls


def gemini_to_chat(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A Gemini ``generateContent`` answer → an OpenAI chat completion."""
    choices = []
    for n, candidate in enumerate(data.get("candidates") or []):
        fields, calls = _message(((candidate.get("content") or {}).get("parts")) or [])
        message = {"role": "assistant", **fields}
        if calls:
            message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"} for call in calls]
            if not fields["content"]:
                message["content"] = None
        finish = "tool_calls" if calls else _finish(candidate.get("finishReason")) or "stop"
        choices.append({"index": candidate.get("index", n), "message": message, "finish_reason": finish})
    if not choices and (data.get("promptFeedback") or {}).get("blockReason"):
        choices.append({"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"})
    return {
        "id": f"chatcmpl-{data.get('responseId') or uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(data.get("usageMetadata") or {}),
    }


class _ChunksFromGemini(StreamTranslator):
    """``streamGenerateContent?alt=sse``: each event a whole ``GenerateContentResponse`` with the new parts → one
    ``chat.completion.chunk``; the stream just ends, so ``[DONE]`` (and the usage chunk, when asked) is sent then."""

    __slots__ = ("_base", "_events", "_started", "_tools", "_usage", "_wants_usage")

    def __init__(self, payload: dict[str, Any], max_event: int) -> None:
        self._events = SSEReader(max_event)
        options = payload.get("stream_options")
        self._wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        self._base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": payload.get("model")}  # fmt: skip
        self._started = False
        self._tools: dict[int, int] = {}  # candidate index -> tool calls so far
        self._usage: dict[str, Any] = {}

    def _chunk(self, choices: list[dict[str, Any]], **more: Any) -> bytes:
        return b"data: " + orjson.dumps({**self._base, "choices": choices, **more}) + b"\n\n"

    def feed(self, chunk: bytes) -> bytes:
        out = []
        for _name, data in self._events.feed(chunk):
            if not data:
                continue
            event = orjson.loads(data)
            if "error" in event:
                error = event["error"] or {}
                raise UpstreamReportedError(
                    str(error.get("message")), "overloaded_error" if error.get("code") == 503 else None
                )
            if event.get("usageMetadata"):
                self._usage = event["usageMetadata"]
            choices = []
            for n, candidate in enumerate(event.get("candidates") or []):
                index = candidate.get("index", n)
                fields, calls = _message(
                    ((candidate.get("content") or {}).get("parts")) or [], self._tools.get(index, 0)
                )
                delta: dict[str, Any] = {k: v for k, v in fields.items() if v}
                if not self._started:
                    delta = {"role": "assistant", "content": "", **delta}
                if calls:
                    delta["tool_calls"] = calls
                    self._tools[index] = self._tools.get(index, 0) + len(calls)
                finish = _finish(candidate.get("finishReason"))
                if finish == "stop" and self._tools.get(index):
                    finish = "tool_calls"
                choices.append({"index": index, "delta": delta, "finish_reason": finish})
            if not choices and (event.get("promptFeedback") or {}).get("blockReason"):
                choices.append(
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}
                )
            if choices:
                self._started = True
                out.append(self._chunk(choices))
        return b"".join(out)

    def end(self) -> bytes:
        self._events.end()
        tail = self._chunk([], usage=_usage(self._usage)) if self._wants_usage else b""
        return tail + b"data: [DONE]\n\n"


class GeminiAdapter(Adapter):
    name = "gemini"
    health_path = "/v1beta/models"
    varies_url = True  # a stream has another method in its URL

    def __init__(self, model: str = "") -> None:
        self.model = model

    def path(self, endpoint: Endpoint) -> str | None:
        model = quote(self.model.removeprefix("models/"), safe="")
        if endpoint.name == "chat":
            return f"/v1beta/models/{model}:generateContent"
        if endpoint.name == "embeddings":
            return f"/v1beta/models/{model}:batchEmbedContents"
        return None

    def request_url(self, url: str, payload: dict[str, Any]) -> str:
        if payload.get("stream") and url.endswith(":generateContent"):
            return url[: -len(":generateContent")] + ":streamGenerateContent?alt=sse"
        return url

    def request_body(self, endpoint: Endpoint, payload: dict[str, Any], upstream_model: str) -> bytes:
        if endpoint.name == "embeddings":
            texts = payload.get("input")
            texts = [texts] if isinstance(texts, str) else list(texts or [])
            if not all(isinstance(t, str) for t in texts):
                raise InvalidRequest("this backend embeds text only (not token ids)", param="input")
            name = f"models/{upstream_model.removeprefix('models/')}"
            requests = []
            for text in texts:
                one: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
                if payload.get("dimensions"):
                    one["outputDimensionality"] = payload["dimensions"]
                requests.append(one)
            return orjson.dumps({"requests": requests})
        return orjson.dumps(chat_to_gemini(payload))

    def response_body(self, endpoint: Endpoint, payload: dict[str, Any], body: bytes) -> bytes:
        data = orjson.loads(body)
        model = str(payload.get("model"))
        if endpoint.name == "embeddings":
            vectors = [e.get("values") or [] for e in data.get("embeddings") or []]
            items = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            # Gemini reports no tokens for embeddings: the count is estimated from the text, as the gateway's
            # limits estimate it (four characters a token).
            texts = payload.get("input")
            chars = len(texts) if isinstance(texts, str) else sum(len(t) for t in texts or [] if isinstance(t, str))
            tokens = (chars + 3) // 4
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            return orjson.dumps({"object": "list", "data": items, "model": model, "usage": usage})
        return orjson.dumps(gemini_to_chat(data, model))

    def stream_translator(
        self, endpoint: Endpoint, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES
    ) -> StreamTranslator:
        return _ChunksFromGemini(payload, max_event)
