"""The public endpoints: which service each belongs to, its OpenAI path, its body kind and required fields.

This table is the one place that knows the OpenAI API surface; the front door routes by it and adapters
choose upstream paths by endpoint name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ENDPOINTS", "ENDPOINTS_BY_PATH", "Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    service: str
    path: str  # the OpenAI path; also the default upstream path for OpenAI-compatible backends
    body: Literal["json", "multipart"]
    # (field, JSON type name) pairs that must be present; checked before routing (dataplane/params.py has the rules
    # of their values).
    required: tuple[tuple[str, str], ...]
    # Streams when the request says `"stream": true` (SSE), or always streams binary (speech).
    output: Literal["json", "sse", "binary"] = "json"
    # OpenAI lets images requests omit `model`; we then use the service's only model, if it has one.
    model_optional: bool = False
    # Another API's front door (dialects/): its requests become ``serves`` requests and its answers come back in
    # its own shape; "openai" endpoints are the gateway's own.
    dialect: Literal["openai", "anthropic", "responses"] = "openai"
    serves: str | None = None


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("chat", "chat", "/v1/chat/completions", "json", (("model", "string"), ("messages", "array")), "sse"),
    Endpoint("completions", "chat", "/v1/completions", "json", (("model", "string"), ("prompt", "any")), "sse"),
    Endpoint("embeddings", "embedding", "/v1/embeddings", "json", (("model", "string"), ("input", "any"))),
    Endpoint(
        "rerank",
        "rerank",
        "/v1/rerank",
        "json",
        (("model", "string"), ("query", "string"), ("documents", "array")),
    ),
    Endpoint(
        "speech",
        "tts",
        "/v1/audio/speech",
        "json",
        (("model", "string"), ("input", "string"), ("voice", "any")),  # voice: a name or {"id": ...}
        "binary",
    ),
    Endpoint("transcriptions", "stt", "/v1/audio/transcriptions", "multipart", (("model", "string"), ("file", "file"))),
    Endpoint("translations", "stt", "/v1/audio/translations", "multipart", (("model", "string"), ("file", "file"))),
    Endpoint(
        "image_generations",
        "image_generation",
        "/v1/images/generations",
        "json",
        (("prompt", "string"),),
        model_optional=True,
    ),
    Endpoint(
        "image_edits",
        "image_edit",
        "/v1/images/edits",
        "multipart",
        (("image", "file"), ("prompt", "string")),
        model_optional=True,
    ),
    Endpoint(
        "messages",
        "chat",
        "/v1/messages",
        "json",
        (("model", "string"), ("messages", "array"), ("max_tokens", "integer")),
        "sse",
        dialect="anthropic",
        serves="chat",
    ),
    Endpoint(
        "responses",
        "chat",
        "/v1/responses",
        "json",
        (("model", "string"), ("input", "any")),
        "sse",
        dialect="responses",
        serves="chat",
    ),
)

_BY_NAME = {e.name: e for e in ENDPOINTS}

# Public paths -> endpoint. Rerank is also served where Cohere/Jina (/v2/rerank) and TEI (/rerank) clients look.
ENDPOINTS_BY_PATH: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}
ENDPOINTS_BY_PATH["/v2/rerank"] = _BY_NAME["rerank"]
ENDPOINTS_BY_PATH["/rerank"] = _BY_NAME["rerank"]

# The endpoints a backend serves, by service: front doors of other dialects reach backends as the one they serve.
ENDPOINTS_BY_SERVICE: dict[str, tuple[Endpoint, ...]] = {}
for _e in ENDPOINTS:
    if _e.serves is not None:
        continue
    ENDPOINTS_BY_SERVICE[_e.service] = (*ENDPOINTS_BY_SERVICE.get(_e.service, ()), _e)
