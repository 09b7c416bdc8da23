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

from ..access.usage import estimate_tokens

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
    """Accepts the Cohere/Jina request (``documents`` as strings or ``{"text": ...}`` objects), sends plain strings
    upstream, and answers the unified API's shape whatever the upstream's dialect (TEI's bare ``[{index, score}]``
    list, Jina/Cohere/vLLM ``results``)::

        {"id", "results": [{"index", "score", "relevance_score", "document"?}], "model", "usage": {"total_tokens"}}

    ``score`` and ``relevance_score`` carry the same number: the unified API names it ``score``, and Cohere and Jina
    clients read ``relevance_score``. After ``apply``, ``estimated`` tells whether ``total_tokens`` is the gateway's
    estimate because the upstream reported no count."""

    __slots__ = ("documents", "estimated", "model", "query", "return_documents", "texts", "top_n")

    def __init__(
        self,
        query: str,
        documents: list[Any],
        texts: list[Any],
        model: str,
        top_n: int | None,
        return_documents: bool,
    ) -> None:
        self.query = query
        self.documents = documents  # as the client sent them: answered back unchanged, extra keys and all
        self.texts = texts  # what went upstream: the text of each, unchecked (a `{"text": 5}` sends 5)
        self.model = model
        self.top_n = top_n
        self.return_documents = return_documents
        self.estimated = False

    @classmethod
    def prepare(cls, payload: dict[str, Any], model: str) -> RerankShape:
        documents = payload["documents"]
        texts = [d.get("text", "") if isinstance(d, dict) else str(d) for d in documents]
        payload["documents"] = texts  # a new list: the client's stays as it was, to be answered back
        top_n = payload.get("top_n")
        # bool is an int too; and a slice by a negative or zero top_n would drop results rather than keep n.
        if type(top_n) is not int or top_n < 1:
            top_n = None
        return cls(payload["query"], documents, texts, model, top_n, bool(payload.get("return_documents")))

    def apply(self, body: bytes) -> bytes:
        data = orjson.loads(body)
        items = data if isinstance(data, list) else data.get("results") or data.get("data") or []
        documents = self.documents
        results = []
        for item in items:
            index = int(item["index"])
            if not 0 <= index < len(documents):
                # A client finds its document by this index: a wrong one must not reach it as an answer.
                raise ValueError(f"result index {index} is not one of the {len(documents)} documents")
            score = float(item["relevance_score"] if "relevance_score" in item else item["score"])
            result: dict[str, Any] = {"index": index, "score": score, "relevance_score": score}
            if self.return_documents:
                result["document"] = documents[index]
            results.append(result)
        results.sort(key=lambda r: r["score"], reverse=True)  # stable: ties keep the upstream's order
        if self.top_n is not None:
            results = results[: self.top_n]
        tokens = _reported_tokens(data)
        self.estimated = tokens is None
        if tokens is None:
            tokens = self._estimate_tokens()
        rid = data.get("id") if isinstance(data, dict) else None
        return orjson.dumps(
            {
                "id": rid if isinstance(rid, str) and rid else f"rerank-{uuid.uuid4().hex}",
                "results": results,
                "model": self.model,
                "usage": {"total_tokens": tokens},
            }
        )

    def _estimate_tokens(self) -> int:
        # What a reranker reads: the query and every document. Texts the client sent as something other than a
        # string went upstream unchanged; they count for nothing rather than fail an answer that did arrive.
        tokens = estimate_tokens(self.query)
        for text in self.texts:
            if isinstance(text, str):
                tokens += estimate_tokens(text)
        return tokens


def _reported_tokens(data: Any) -> int | None:
    """The upstream's own count, if it gave one: ``usage.total_tokens`` (Jina, vLLM) or Cohere's
    ``meta.billed_units.input_tokens``. Zero counts as none: servers without a tokenizer at hand write 0."""
    if not isinstance(data, dict):
        return None  # TEI's bare list
    usage = data.get("usage")
    if isinstance(usage, dict):
        total = usage.get("total_tokens")
        if type(total) is int and total > 0:
            return total
    meta = data.get("meta")
    units = meta.get("billed_units") if isinstance(meta, dict) else None
    if isinstance(units, dict):
        # Cohere bills `search_units`, which are not tokens; only `input_tokens` is a count to report.
        tokens = units.get("input_tokens")
        if type(tokens) is int and tokens > 0:
            return tokens
    return None
