"""Ollama's native API (``/api/chat``, ``/api/embed``), translated to and from the OpenAI shapes.

Native rather than Ollama's OpenAI-compatible routes because the native API reports exact token counts
(``prompt_eval_count``/``eval_count``) and accepts every sampling option. Streams are NDJSON, one object per
line; each becomes one ``chat.completion.chunk`` SSE event.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ..endpoints import Endpoint
from ..errors import UpstreamEventTooLarge
from .base import MAX_EVENT_BYTES, Adapter, StreamTranslator

__all__ = ["OllamaAdapter"]

_PATHS = {"chat": "/api/chat", "embeddings": "/api/embed"}

# OpenAI request field -> Ollama `options` key. Unknown vendor extras that Ollama understands (top_k, min_p,
# num_ctx, repeat_penalty ...) are passed into options under their own names.
_OPTION_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
    "seed": "seed",
    "stop": "stop",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
_OLLAMA_EXTRAS = ("top_k", "min_p", "typical_p", "num_ctx", "repeat_penalty", "repeat_last_n", "mirostat")
_FINISH = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}


def _convert_content(content: Any) -> tuple[str, list[str]]:
    """OpenAI content (string or parts) -> Ollama text and base64 images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str):
                images.append(url.split(",", 1)[1] if url.startswith("data:") else url)
    return "\n".join(texts), images


def _convert_message(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict):
        return {"role": "user", "content": str(msg)}
    text, images = _convert_content(msg.get("content"))
    out: dict[str, Any] = {"role": msg.get("role", "user"), "content": text}
    if images:
        out["images"] = images
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        converted = []
        for call in calls:
            fn = call.get("function", {}) if isinstance(call, dict) else {}
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    args = orjson.loads(args) if args else {}
                except orjson.JSONDecodeError:
                    args = {}
            converted.append({"function": {"name": fn.get("name"), "arguments": args or {}}})
        out["tool_calls"] = converted
    if msg.get("role") == "tool" and "name" in msg:
        out["tool_name"] = msg["name"]
    return out


def _tool_calls_out(calls: Any, start: int = 0) -> list[dict[str, Any]] | None:
    """Ollama tool calls -> OpenAI's. ``start`` numbers them on from earlier stream lines: OpenAI clients merge
    streamed tool-call deltas that share an index."""
    if not calls:
        return None
    out = []
    for i, call in enumerate(calls, start):
        fn = call.get("function", {})
        out.append(
            {
                "index": i,
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": fn.get("name"), "arguments": orjson.dumps(fn.get("arguments", {})).decode()},
            }
        )
    return out


def _usage(data: dict[str, Any]) -> dict[str, int]:
    prompt = int(data.get("prompt_eval_count") or 0)
    completion = int(data.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class OllamaAdapter(Adapter):
    name = "ollama"
    health_path = "/api/tags"

    def path(self, endpoint: Endpoint) -> str | None:
        return _PATHS.get(endpoint.name)

    def is_stream(self, content_type: str | None) -> bool:
        return content_type is not None and content_type.startswith("application/x-ndjson")

    def request_body(self, endpoint: Endpoint, payload: dict[str, Any], upstream_model: str) -> bytes:
        if endpoint.name == "embeddings":
            emb: dict[str, Any] = {"model": upstream_model, "input": payload.get("input")}
            if "dimensions" in payload:
                emb["dimensions"] = payload["dimensions"]
            return orjson.dumps(emb)
        body: dict[str, Any] = {
            "model": upstream_model,
            "messages": [_convert_message(m) for m in payload.get("messages", [])],
            "stream": bool(payload.get("stream", False)),
        }
        options: dict[str, Any] = {}
        for name, option in _OPTION_NAMES.items():
            if payload.get(name) is not None:
                value = payload[name]
                options[option] = [value] if option == "stop" and isinstance(value, str) else value
        for name in _OLLAMA_EXTRAS:
            if name in payload:
                options[name] = payload[name]
        if isinstance(payload.get("options"), dict):
            options.update(payload["options"])
        if options:
            body["options"] = options
        if payload.get("tools"):
            body["tools"] = payload["tools"]
        fmt = payload.get("response_format")
        if isinstance(fmt, dict):
            if fmt.get("type") == "json_object":
                body["format"] = "json"
            elif fmt.get("type") == "json_schema":
                body["format"] = (fmt.get("json_schema") or {}).get("schema", "json")
        for passthrough in ("keep_alive", "think"):
            if passthrough in payload:
                body[passthrough] = payload[passthrough]
        return orjson.dumps(body)

    def response_body(self, endpoint: Endpoint, payload: dict[str, Any], body: bytes) -> bytes:
        data = orjson.loads(body)
        if endpoint.name == "embeddings":
            vectors = data.get("embeddings") or []
            prompt = int(data.get("prompt_eval_count") or 0)
            return orjson.dumps(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                    "model": data.get("model", payload.get("model")),
                    "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
                }
            )
        message = data.get("message") or {}
        calls = _tool_calls_out(message.get("tool_calls"))
        out_msg: dict[str, Any] = {"role": "assistant", "content": message.get("content", "")}
        if calls:
            out_msg["tool_calls"] = calls
        if message.get("thinking"):
            out_msg["reasoning_content"] = message["thinking"]
        finish = "tool_calls" if calls else _FINISH.get(data.get("done_reason") or "stop", "stop")
        return orjson.dumps(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": data.get("model", payload.get("model")),
                "choices": [{"index": 0, "message": out_msg, "logprobs": None, "finish_reason": finish}],
                "usage": _usage(data),
            }
        )

    def stream_translator(
        self, endpoint: Endpoint, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES
    ) -> StreamTranslator:
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return _NDJSONToChatSSE(str(payload.get("model", "")), include_usage, max_event)


class _NDJSONToChatSSE(StreamTranslator):
    def __init__(self, model: str, include_usage: bool, max_event: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()  # the incomplete line after the last newline
        self._max = max_event
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._model = model
        self._include_usage = include_usage
        self._started = False
        self._done = False
        self._tool_calls = 0

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _line(self, line: bytes) -> bytes:
        data = orjson.loads(line)
        if "error" in data:
            raise ValueError(str(data["error"]))
        self._model = data.get("model") or self._model
        out = b""
        message = data.get("message") or {}
        delta: dict[str, Any] = {}
        if not self._started:
            delta["role"] = "assistant"
            self._started = True
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("thinking"):
            delta["reasoning_content"] = message["thinking"]
        calls = _tool_calls_out(message.get("tool_calls"), self._tool_calls)
        if calls:
            delta["tool_calls"] = calls
            self._tool_calls += len(calls)
        if delta:
            if "role" in delta:
                delta.setdefault("content", "")
            out += self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        if data.get("done"):
            self._done = True
            finish = "tool_calls" if self._tool_calls else _FINISH.get(data.get("done_reason") or "stop", "stop")
            out += self._event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
            if self._include_usage:
                out += self._event([], _usage(data))
            out += b"data: [DONE]\n\n"
        return out

    def feed(self, chunk: bytes) -> bytes:
        # Linear in the stream's length: a line that spans chunks grows in place and is joined once, when its
        # newline arrives (re-joining on every chunk was quadratic in the line's length).
        buf = self._buf
        nl = chunk.rfind(b"\n")
        if nl < 0:
            buf += chunk
            if len(buf) > self._max:
                raise UpstreamEventTooLarge(f"the backend sent a stream line longer than {self._max} bytes")
            return b""
        if buf:
            buf += memoryview(chunk)[:nl]
            lines = bytes(buf).split(b"\n")
            buf.clear()
        else:
            lines = chunk[:nl].split(b"\n")
        buf += memoryview(chunk)[nl + 1 :]
        if len(buf) > self._max:
            raise UpstreamEventTooLarge(f"the backend sent a stream line longer than {self._max} bytes")
        return b"".join(self._line(line) for line in lines if line.strip())

    def end(self) -> bytes:
        out = self._line(bytes(self._buf)) if self._buf.strip() else b""
        self._buf.clear()
        if not self._done:
            raise ValueError("Ollama stream ended before it said done")
        return out
