"""OpenAI-compatible backends: vLLM, SGLang, llama.cpp server, LocalAI, GPUStack, Xinference, TGI/TEI's OpenAI
routes, and hosted OpenAI-compatible APIs. The request passes through with only ``model`` rewritten; answers
pass through byte for byte."""

from __future__ import annotations

from typing import Any

import orjson

from ..endpoints import Endpoint
from .base import Adapter

__all__ = ["OpenAIAdapter"]


class OpenAIAdapter(Adapter):
    name = "openai"

    def path(self, endpoint: Endpoint) -> str | None:
        return endpoint.path

    def request_body(self, endpoint: Endpoint, payload: dict[str, Any], upstream_model: str) -> bytes:
        payload["model"] = upstream_model
        return orjson.dumps(payload)
