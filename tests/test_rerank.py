"""Rerank through the gateway: the Cohere/Jina request shape in, one normalised answer out, whatever the upstream's
dialect (TEI bare list, Jina, Cohere). There is no openai SDK method for rerank, so these use a raw HTTP client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest
from aiohttp import web

from modelrouter.access.usage import estimate_tokens
from modelrouter.dataplane.postprocess import RerankShape

from .fakes import FakeOpenAI
from .servers import GatewayServer, UpstreamServer

QUERY = "capital of France"
DOCS = [
    "Berlin is the capital of Germany",  # 2 / 7
    "Paris is the capital of France",  # 3 / 7
    "Bananas are yellow",  # 0
    "France",  # 1 / 2
]
# Best first, as the fake scores them (query words shared / (1 + words in the document)).
ORDER = [3, 1, 0, 2]


def expected_score(query: str, doc: str) -> float:
    """The fake upstream's scoring function (see FakeOpenAI._rerank)."""
    words = set(query.lower().split())
    return len(words & set(doc.lower().split())) / (1 + len(doc.split()))


def estimated_tokens(query: str, docs: list[str]) -> int:
    """The gateway's estimate when the upstream reports no count: about 4 characters a token, per text."""
    return sum(estimate_tokens(t) for t in (query, *docs))


def rerank(url: str, body: dict[str, Any], path: str = "/v1/rerank") -> httpx2.Response:
    return httpx2.post(url + path, json=body, timeout=10)


def check_answer(answer: dict[str, Any], *, model: str, order: list[int], documents: list[Any] | None = None) -> None:
    """``documents``: what the client sent, when it asked for them back (each result carries its own, as sent)."""
    assert list(answer) == ["id", "results", "model", "usage"]
    assert isinstance(answer["id"], str)
    assert answer["id"]
    assert answer["model"] == model
    assert type(answer["usage"]["total_tokens"]) is int
    assert answer["usage"]["total_tokens"] > 0
    results = answer["results"]
    assert [r["index"] for r in results] == order
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        # The unified API's name and the one Cohere/Jina clients read, with the same number.
        assert r["score"] == r["relevance_score"]
        assert r["score"] == pytest.approx(expected_score(QUERY, DOCS[r["index"]]))
        if documents is not None:
            assert set(r) == {"index", "score", "relevance_score", "document"}
            assert r["document"] == documents[r["index"]]
        else:
            assert set(r) == {"index", "score", "relevance_score"}


DOC_SHAPES = [
    pytest.param(DOCS, id="strings"),
    pytest.param([{"text": d} for d in DOCS], id="text-objects"),
    pytest.param([{"text": d} if i % 2 else d for i, d in enumerate(DOCS)], id="mixed"),
]


@pytest.mark.parametrize("documents", DOC_SHAPES)
def test_cohere_jina_request_is_normalised(one_of_each: tuple[FakeOpenAI, GatewayServer], documents: list[Any]) -> None:
    fake, gw = one_of_each
    resp = rerank(
        gw.url, {"model": "m-rerank", "query": QUERY, "documents": documents, "top_n": 2, "return_documents": True}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    check_answer(resp.json(), model="m-rerank", order=ORDER[:2], documents=documents)

    sent = fake.last.json
    assert fake.last.path == "/v1/rerank"
    assert sent["model"] == "up-rerank"
    assert sent["query"] == QUERY
    assert sent["documents"] == DOCS  # plain strings, whatever shape the client used


@pytest.mark.parametrize("flag", [False, None], ids=["false", "absent"])
def test_documents_only_when_asked(one_of_each: tuple[FakeOpenAI, GatewayServer], flag: bool | None) -> None:
    _fake, gw = one_of_each
    body: dict[str, Any] = {"model": "m-rerank", "query": QUERY, "documents": DOCS}
    if flag is not None:
        body["return_documents"] = flag
    resp = rerank(gw.url, body)
    assert resp.status_code == 200, resp.text
    # No top_n: every document, best first. The (Jina-style) upstream sends documents back; they are dropped.
    check_answer(resp.json(), model="m-rerank", order=ORDER)


def test_top_n_larger_than_documents_returns_all(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    resp = rerank(gw.url, {"model": "m-rerank", "query": QUERY, "documents": DOCS, "top_n": 50})
    assert resp.status_code == 200, resp.text
    check_answer(resp.json(), model="m-rerank", order=ORDER)


def test_answer_names_the_model_the_client_asked_for(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> None:
    fake, url = start_upstream("r")
    gw = start_gateway(
        {
            "aliases": {"my-reranker": "bge"},
            "services": {
                "rerank": {
                    "instances": [
                        {"name": "bge", "base_url": url, "upstream_model": "BAAI/bge-reranker"},
                    ]
                }
            },
        }
    )
    for asked in ("my-reranker", "bge"):
        resp = rerank(gw.url, {"model": asked, "query": QUERY, "documents": DOCS, "top_n": 1})
        assert resp.status_code == 200, resp.text
        check_answer(resp.json(), model=asked, order=ORDER[:1])
        assert fake.last.json["model"] == "BAAI/bge-reranker"


@pytest.mark.parametrize(
    ("style", "usage", "upstream_id"),
    [("tei", None, None), ("jina", {"total_tokens": 11}, None), ("cohere", {"total_tokens": 7}, "cohere-1")],
)
def test_upstream_dialects_are_normalised(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[[dict[str, Any]], GatewayServer],
    style: str,
    usage: dict[str, int] | None,
    upstream_id: str | None,
) -> None:
    fake, url = start_upstream("r", rerank_style=style)
    gw = start_gateway(
        {"services": {"rerank": {"instances": [{"name": "rr", "base_url": url, "upstream_model": f"up-{style}"}]}}}
    )
    documents = [{"text": d} for d in DOCS]
    for return_documents in (True, False):
        resp = rerank(
            gw.url,
            {
                "model": "rr",
                "query": QUERY,
                "documents": documents,
                "top_n": 3,
                "return_documents": return_documents,
            },
        )
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        check_answer(answer, model="rr", order=ORDER[:3], documents=documents if return_documents else None)
        if usage is not None:
            assert answer["usage"] == usage
        else:  # TEI reports no usage: the gateway estimates it rather than answer 0
            assert answer["usage"] == {"total_tokens": estimated_tokens(QUERY, DOCS)}
        if upstream_id is not None:
            assert answer["id"] == upstream_id
        assert fake.last.json["documents"] == DOCS
        assert fake.last.json["model"] == f"up-{style}"


def test_generated_ids_are_unique(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    ids = {rerank(gw.url, {"model": "m-rerank", "query": QUERY, "documents": DOCS}).json()["id"] for _ in range(3)}
    assert len(ids) == 3


PATHS = ["/v1/rerank", "/v2/rerank", "/rerank"]


@pytest.mark.parametrize("path", PATHS)
def test_rerank_paths(one_of_each: tuple[FakeOpenAI, GatewayServer], path: str) -> None:
    fake, gw = one_of_each
    resp = rerank(
        gw.url, {"model": "m-rerank", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True}, path
    )
    assert resp.status_code == 200, resp.text
    check_answer(resp.json(), model="m-rerank", order=ORDER[:2], documents=DOCS)
    assert fake.last.path == "/v1/rerank"


def test_rerank_paths_only_post(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    _fake, gw = one_of_each
    for path in PATHS:
        resp = httpx2.get(gw.url + path, timeout=10)
        assert resp.status_code == 405
        assert resp.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "m-rerank", "documents": DOCS}, "query", "missing_parameter"),
        ({"model": "m-rerank", "query": None, "documents": DOCS}, "query", "missing_parameter"),
        ({"model": "m-rerank", "query": QUERY}, "documents", "missing_parameter"),
        ({"model": "m-rerank", "query": QUERY, "documents": "Paris"}, "documents", "invalid_type"),
        ({"model": "m-rerank", "query": ["capital"], "documents": DOCS}, "query", "invalid_type"),
        ({"query": QUERY, "documents": DOCS}, "model", "missing_parameter"),
    ],
    ids=["no-query", "null-query", "no-documents", "documents-not-array", "query-not-string", "no-model"],
)
def test_invalid_requests_are_400_with_param(
    one_of_each: tuple[FakeOpenAI, GatewayServer], body: dict[str, Any], param: str, code: str
) -> None:
    fake, gw = one_of_each
    for path in PATHS:
        resp = rerank(gw.url, body, path)
        assert resp.status_code == 400, path
        err = resp.json()["error"]
        assert err["param"] == param
        assert err["code"] == code
        assert err["type"] == "invalid_request_error"
    assert fake.requests == []


def test_unknown_rerank_model_is_404(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    resp = rerank(gw.url, {"model": "m-chat", "query": QUERY, "documents": DOCS})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    assert fake.requests == []


def tei_app(received: list[dict[str, Any]]) -> Any:
    """A TEI-like native /rerank: takes `texts` (not `documents`), no model, answers a bare [{index, score}]."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        unknown = set(body) - {"query", "texts", "truncate", "raw_scores", "return_text"}
        if unknown or not isinstance(body.get("texts"), list):
            return web.json_response(
                {"error": f"unknown fields {sorted(unknown)}", "error_type": "Validation"}, status=422
            )
        scores = [expected_score(body["query"], t) for t in body["texts"]]
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        return web.json_response([{"index": i, "score": scores[i]} for i in ranked])

    app = web.Application()
    app.router.add_post("/rerank", handle)
    return app


def test_tei_adapter_speaks_tei_native_rerank(
    bg: Any, servers: list[Any], start_gateway: Callable[..., GatewayServer]
) -> None:
    received: list[dict[str, Any]] = []
    servers.append(tei := UpstreamServer(bg, tei_app(received)).start())
    gw = start_gateway(
        {"services": {"rerank": {"instances": [{"name": "bge", "base_url": tei.url, "adapter": "tei"}]}}}
    )
    docs = [{"text": d} for d in DOCS]
    resp = rerank(gw.url, {"model": "bge", "query": QUERY, "documents": docs, "top_n": 2, "return_documents": True})
    assert resp.status_code == 200, resp.text
    check_answer(resp.json(), model="bge", order=ORDER[:2], documents=docs)
    assert received == [{"query": QUERY, "texts": DOCS, "return_text": False, "raw_scores": False}]


def test_documents_come_back_exactly_as_sent(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    documents: list[Any] = [
        DOCS[0],
        {"text": DOCS[1], "id": "doc-7", "meta": {"lang": "en", "page": 3}},
        {"text": DOCS[2], "title": None},
        DOCS[3],
    ]
    resp = rerank(
        gw.url, {"model": "m-rerank", "query": QUERY, "documents": documents, "top_n": 4, "return_documents": True}
    )
    assert resp.status_code == 200, resp.text
    check_answer(resp.json(), model="m-rerank", order=ORDER, documents=documents)
    assert fake.last.json["documents"] == DOCS  # only the text went upstream


def scripted_rerank(bg: Any, servers: list[Any], answer: Any) -> str:
    """An upstream /v1/rerank that always answers ``answer``; its base URL."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/rerank", handle)
    servers.append(upstream := UpstreamServer(bg, app).start())
    return upstream.url


RESULTS = [{"index": i, "relevance_score": expected_score(QUERY, d)} for i, d in enumerate(DOCS)]


@pytest.mark.parametrize(
    "answer",
    [
        {"results": RESULTS},
        {"results": RESULTS, "usage": {"total_tokens": 0}},
        {"results": RESULTS, "usage": None},
        {"id": "c-2", "results": RESULTS, "meta": {"billed_units": {"search_units": 1}}},
    ],
    ids=["no-usage", "zero-tokens", "null-usage", "cohere-search-units-only"],
)
def test_usage_is_estimated_when_the_upstream_counts_nothing(
    bg: Any, servers: list[Any], start_gateway: Callable[..., GatewayServer], answer: dict[str, Any]
) -> None:
    url = scripted_rerank(bg, servers, answer)
    gw = start_gateway({"services": {"rerank": {"instances": [{"name": "rr", "base_url": url}]}}})
    resp = rerank(gw.url, {"model": "rr", "query": QUERY, "documents": [{"text": d} for d in DOCS]})
    assert resp.status_code == 200, resp.text
    reply = resp.json()
    check_answer(reply, model="rr", order=ORDER)
    assert reply["usage"] == {"total_tokens": estimated_tokens(QUERY, DOCS)}


def test_result_for_a_document_not_sent_is_a_bad_gateway(
    bg: Any, servers: list[Any], start_gateway: Callable[..., GatewayServer]
) -> None:
    # An index past the documents would give the client some other document (or none) as the answer.
    url = scripted_rerank(bg, servers, {"results": [{"index": len(DOCS), "relevance_score": 0.9}]})
    gw = start_gateway({"services": {"rerank": {"instances": [{"name": "rr", "base_url": url}]}}})
    resp = rerank(gw.url, {"model": "rr", "query": QUERY, "documents": DOCS, "return_documents": True})
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "bad_gateway"


@pytest.mark.parametrize(
    ("answer", "estimated"),
    [
        ([{"index": 0, "score": 0.5}], True),
        ({"results": [{"index": 0, "relevance_score": 0.5}], "usage": {"total_tokens": 0}}, True),
        ({"results": [{"index": 0, "relevance_score": 0.5}], "meta": {"billed_units": {"search_units": 1}}}, True),
        ({"results": [{"index": 0, "relevance_score": 0.5}], "usage": {"total_tokens": 11}}, False),
        ({"results": [{"index": 0, "relevance_score": 0.5}], "meta": {"billed_units": {"input_tokens": 7}}}, False),
    ],
    ids=["tei", "zero", "search-units", "jina", "cohere-input-tokens"],
)
def test_shape_says_whether_usage_was_estimated(answer: Any, estimated: bool) -> None:
    """What the gateway reads to tell the client (a response header) that the count is its own estimate."""
    shape = RerankShape.prepare({"query": QUERY, "documents": DOCS[:1]}, "rr")
    # The same shape serves every try of a request: a later answer's verdict replaces an earlier one's.
    shape.apply(orjson.dumps({"results": [{"index": 0, "relevance_score": 0.5}], "usage": {"total_tokens": 3}}))
    assert shape.estimated is False
    reply = orjson.loads(shape.apply(orjson.dumps(answer)))
    assert shape.estimated is estimated
    if estimated:
        assert reply["usage"] == {"total_tokens": estimated_tokens(QUERY, DOCS[:1])}
