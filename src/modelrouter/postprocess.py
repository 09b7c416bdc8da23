"""Endpoint-level fixes applied to answers whatever the backend dialect: base64 embeddings and rerank shapes.

Each is prepared from the request (which it may adjust before it goes upstream) and applied to the answer.
"""

from __future__ import annotations

import base64
import sys
import uuid
from array import array
from typing import Any

import orjson

__all__ = ["EmbeddingsB64", "RerankShape", "floats_to_base64"]


def floats_to_base64(values: list[float]) -> str:
    """Little-endian float32, base64: what OpenAI sends for ``encoding_format: base64``."""
    arr = array("f", values)
    if sys.byteorder != "little":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


class EmbeddingsB64:
    """The openai SDK asks for base64 by default, and many servers only return floats. We ask the upstream for
    floats and encode them ourselves, so base64 works with every backend and gives the same bytes."""

    __slots__ = ()

    @classmethod
    def prepare(cls, payload: dict[str, Any]) -> EmbeddingsB64 | None:
        if payload.get("encoding_format") == "base64":
            del payload["encoding_format"]
            return cls()
        return None

    def apply(self, body: bytes) -> bytes:
        data = orjson.loads(body)
        for item in data.get("data") or ():
            vec = item.get("embedding")
            if isinstance(vec, list):
                item["embedding"] = floats_to_base64(vec)
        return orjson.dumps(data)


class RerankShape:
    """Accepts the Cohere/Jina request (``documents`` as strings or ``{"text": ...}``), sends plain strings
    upstream, and answers ``{id, model, results: [{index, relevance_score, document?}], usage}`` whatever the
    upstream's dialect: TEI's bare ``[{index, score}]`` list or Jina/Cohere/vLLM ``results``."""

    __slots__ = ("documents", "model", "return_documents", "top_n")

    def __init__(self, documents: list[str], model: str, top_n: int | None, return_documents: bool) -> None:
        self.documents = documents
        self.model = model
        self.top_n = top_n
        self.return_documents = return_documents

    @classmethod
    def prepare(cls, payload: dict[str, Any], model: str) -> RerankShape:
        docs = [d.get("text", "") if isinstance(d, dict) else str(d) for d in payload["documents"]]
        payload["documents"] = docs
        top_n = payload.get("top_n")
        return cls(docs, model, top_n if isinstance(top_n, int) else None, bool(payload.get("return_documents")))

    def apply(self, body: bytes) -> bytes:
        data = orjson.loads(body)
        items = data if isinstance(data, list) else data.get("results") or data.get("data") or []
        results = []
        for item in items:
            index = int(item["index"])
            score = item.get("relevance_score", item.get("score"))
            result: dict[str, Any] = {"index": index, "relevance_score": float(score)}
            if self.return_documents:
                result["document"] = {"text": self.documents[index] if 0 <= index < len(self.documents) else ""}
            results.append(result)
        results.sort(key=lambda r: r["relevance_score"], reverse=True)
        if self.top_n is not None:
            results = results[: self.top_n]
        usage: Any = None
        if isinstance(data, dict):
            usage = data.get("usage")
            if usage is None and isinstance(data.get("meta"), dict):
                units = data["meta"].get("billed_units") or {}
                if "input_tokens" in units:
                    usage = {"total_tokens": units["input_tokens"]}
        rid = data.get("id") if isinstance(data, dict) else None
        return orjson.dumps(
            {
                "id": rid or f"rerank-{uuid.uuid4().hex}",
                "model": self.model,
                "results": results,
                "usage": usage if isinstance(usage, dict) else {"total_tokens": 0},
            }
        )
