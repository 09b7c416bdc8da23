"""Anthropic's Messages API (``POST {base_url}/v1/messages``) behind the OpenAI chat shape: requests and answers
translated by ``anthropic_shapes.py``, streams event by event by ``anthropic_stream.py``. The instance's
``headers`` carry ``x-api-key``; ``anthropic-version`` is sent unless they give one. A 529 (overloaded) counts as a
503: retried, cooled down, and a status the OpenAI SDKs know.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..endpoints import Endpoint
from .anthropic_shapes import chat_to_messages, messages_to_chat, wants_schema_tool
from .anthropic_stream import MessagesToChunks
from .base import MAX_EVENT_BYTES, Adapter, StreamTranslator

__all__ = ["VERSION", "AnthropicAdapter"]

VERSION = "2023-06-01"  # the anthropic-version header, unless the instance's headers give another


class AnthropicAdapter(Adapter):
    name = "anthropic"
    native = "anthropic"  # /v1/messages passes through unchanged
    health_path = "/v1/models"
    default_headers = {"anthropic-version": VERSION}

    def __init__(self, default_max_tokens: int | None = None) -> None:
        self.default_max_tokens = default_max_tokens  # an instance's ``default_max_tokens``

    def path(self, endpoint: Endpoint) -> str | None:
        return "/v1/messages" if endpoint.name == "chat" else None

    def upstream_status(self, status: int) -> int:
        return 503 if status == 529 else status  # 529 "overloaded": a status the OpenAI SDKs know, and retried

    def request_body(self, endpoint: Endpoint, payload: dict[str, Any], upstream_model: str) -> bytes:
        return orjson.dumps(chat_to_messages(payload, upstream_model, self.default_max_tokens))

    def response_body(self, endpoint: Endpoint, payload: dict[str, Any], body: bytes) -> bytes:
        return orjson.dumps(messages_to_chat(orjson.loads(body), str(payload.get("model")), wants_schema_tool(payload)))

    def stream_translator(
        self, endpoint: Endpoint, payload: dict[str, Any], max_event: int = MAX_EVENT_BYTES
    ) -> StreamTranslator:
        return MessagesToChunks(payload, max_event)
