"""The official cohere SDK's rerank through the gateway: v1 ``cohere.Client`` posts /v1/rerank, v2
``cohere.ClientV2`` posts /v2/rerank, both against a real loopback upstream.

The SDK builds its answers without validating them (``construct_type``), so a field whose shape differs from its
types does not raise; these tests read the parsed objects the way a user's code does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cohere
import httpx
import pytest

from .fakes import FakeOpenAI
from .servers import GatewayServer
from .test_rerank import DOCS, ORDER, QUERY, expected_score


@pytest.fixture
def paths() -> list[str]:
    """The paths the SDK requested, as it sent them."""
    return []


@pytest.fixture
def http(paths: list[str]) -> Iterator[httpx.Client]:
    def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    with httpx.Client(timeout=10, event_hooks={"request": [record]}) as client:
        yield client


def v1(gw: GatewayServer, http: httpx.Client) -> cohere.Client:
    # Offline: the gateway root as base_url, any key (auth is off).
    return cohere.Client(api_key="any-key", base_url=gw.url, httpx_client=http, max_retries=0)


def v2(gw: GatewayServer, http: httpx.Client) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="any-key", base_url=gw.url, httpx_client=http, max_retries=0)


def check_ranking(results: list[Any], order: list[int]) -> None:
    assert [r.index for r in results] == order
    for r in results:
        assert r.relevance_score == pytest.approx(expected_score(QUERY, DOCS[r.index]))


def test_v1_rerank_with_text_objects(
    one_of_each: tuple[FakeOpenAI, GatewayServer], http: httpx.Client, paths: list[str]
) -> None:
    fake, gw = one_of_each
    documents = [{"text": d, "source": f"doc-{i}"} for i, d in enumerate(DOCS)]
    answer = v1(gw, http).rerank(model="m-rerank", query=QUERY, documents=documents, top_n=2, return_documents=True)
    assert paths == ["/v1/rerank"]
    check_ranking(answer.results, ORDER[:2])
    for r in answer.results:
        assert r.document is not None
        assert r.document.text == DOCS[r.index]
        # "All other fields will be preserved in the response", as Cohere documents it.
        assert r.document.source == f"doc-{r.index}"  # type: ignore[attr-defined]
    assert answer.id
    assert fake.last.json["documents"] == DOCS


def test_v1_rerank_with_strings_gives_the_strings_back(
    one_of_each: tuple[FakeOpenAI, GatewayServer], http: httpx.Client
) -> None:
    _fake, gw = one_of_each
    answer = v1(gw, http).rerank(model="m-rerank", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    check_ranking(answer.results, ORDER[:3])
    for r in answer.results:
        # The unified API answers a string document as the string: the SDK keeps it as such (it does not
        # validate), so `r.document` is the text itself and has no `.text`, whatever its type hints say.
        assert r.document == DOCS[r.index]  # type: ignore[comparison-overlap]


def test_v1_rerank_without_documents(one_of_each: tuple[FakeOpenAI, GatewayServer], http: httpx.Client) -> None:
    _fake, gw = one_of_each
    answer = v1(gw, http).rerank(model="m-rerank", query=QUERY, documents=DOCS)
    check_ranking(answer.results, ORDER)
    assert all(r.document is None for r in answer.results)


def test_v2_rerank(one_of_each: tuple[FakeOpenAI, GatewayServer], http: httpx.Client, paths: list[str]) -> None:
    fake, gw = one_of_each
    answer = v2(gw, http).rerank(model="m-rerank", query=QUERY, documents=DOCS, top_n=3)
    assert paths == ["/v2/rerank"]
    check_ranking(answer.results, ORDER[:3])
    # v2 answers carry no documents: a caller reads its own by index.
    assert [DOCS[r.index] for r in answer.results] == [DOCS[i] for i in ORDER[:3]]
    assert fake.last.path == "/v1/rerank"
    assert fake.last.json["documents"] == DOCS
    assert fake.last.json["model"] == "up-rerank"


def test_v2_rerank_asking_for_documents_gets_the_strings(
    one_of_each: tuple[FakeOpenAI, GatewayServer], http: httpx.Client
) -> None:
    _fake, gw = one_of_each
    answer = v2(gw, http).rerank(
        model="m-rerank",
        query=QUERY,
        documents=DOCS,
        request_options={"additional_body_parameters": {"return_documents": True}},
    )
    check_ranking(answer.results, ORDER)
    # Not in v2's types: the SDK keeps it as an extra field, the string as sent.
    assert [r.document for r in answer.results] == [DOCS[i] for i in ORDER]  # type: ignore[attr-defined]


def test_sdk_sees_gateway_errors(one_of_each: tuple[FakeOpenAI, GatewayServer], http: httpx.Client) -> None:
    fake, gw = one_of_each
    with pytest.raises(cohere.NotFoundError) as caught:
        v2(gw, http).rerank(model="no-such-reranker", query=QUERY, documents=DOCS)
    assert caught.value.status_code == 404
    assert caught.value.body["error"]["code"] == "model_not_found"
    assert fake.requests == []
