"""Hugging Face text-embeddings-inference (TEI) native routes: ``/rerank`` and the OpenAI-compatible
``/v1/embeddings``.

TEI's rerank takes ``texts`` rather than ``documents`` and answers a bare ``[{index, score}]`` list; the rerank
post-processing turns that into the Cohere/Jina shape clients expect. A TEI server hosts one model, so the
rerank request carries no model name.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..endpoints import Endpoint
from .base import Adapter

__all__ = ["TEIAdapter"]

_PATHS = {"rerank": "/rerank", "embeddings": "/v1/embeddings"}


class TEIAdapter(Adapter):
    name = "tei"
    health_path = "/health"

    def path(self, endpoint: Endpoint) -> str | None:
        return _PATHS.get(endpoint.name)

    def request_body(self, endpoint: Endpoint, payload: dict[str, Any], upstream_model: str) -> bytes:
        if endpoint.name == "rerank":
            body: dict[str, Any] = {
                "query": payload["query"],
                "texts": payload["documents"],
                # The gateway adds documents itself when asked; scores stay normalised (0..1) as Cohere's.
                "return_text": False,
                "raw_scores": False,
            }
            if "truncate" in payload:
                body["truncate"] = payload["truncate"]
            return orjson.dumps(body)
        payload["model"] = upstream_model
        return orjson.dumps(payload)
