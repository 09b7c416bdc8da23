"""The azure adapter: the official openai SDK → gateway → a loopback Azure OpenAI that serves only its own URL
shape (``/openai/deployments/{deployment}/...?api-version=...``) and wants its ``api-key`` header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from aiohttp import web

from .fakes import Recorded
from .servers import BackgroundLoop, GatewayServer, UpstreamServer


class FakeAzure:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._embeddings)
        return app

    async def _record(self, request: web.Request) -> web.Response | None:
        body = await request.read()
        self.requests.append(Recorded(request.path_qs, dict(request.headers), body, await request.json()))
        if request.headers.get("api-key") != "azure-secret":
            return web.json_response(
                {"error": {"code": "401", "message": "Access denied due to invalid key"}}, status=401
            )
        if "api-version" not in request.query:
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        if refused is not None:
            return refused
        deployment = request.match_info["deployment"]
        return web.json_response(
            {
                "id": "chatcmpl-azure",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"from {deployment}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        if refused is not None:
            return refused
        data = [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )


@pytest.fixture
def azure(
    bg: BackgroundLoop, servers: list[Any], start_gateway: Callable[..., GatewayServer]
) -> tuple[FakeAzure, GatewayServer]:
    fake = FakeAzure()
    servers.append(server := UpstreamServer(bg, fake.app()).start())
    common = {"base_url": server.url, "adapter": "azure", "headers": {"api-key": "azure-secret"}}
    gw = start_gateway(
        {
            "health_check": {"enabled": False},
            "services": {
                "chat": {"instances": [{"name": "gpt-4o", "upstream_model": "my gpt4o", **common}]},
                "embedding": {
                    "instances": [
                        {"name": "emb", "upstream_model": "emb-small", "api_version": "2025-01-01-preview", **common}
                    ]
                },
            },
        }
    )
    return fake, gw


def test_chat_goes_to_the_deployment_with_the_api_version_and_key(azure: tuple[FakeAzure, GatewayServer]) -> None:
    fake, gw = azure
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    sent = fake.requests[-1]
    assert sent.path == "/openai/deployments/my%20gpt4o/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == "azure-secret"
    assert sent.json["messages"] == [{"role": "user", "content": "hi"}]
    assert answer.choices[0].message.content == "from my gpt4o"
    assert answer.usage is not None
    assert answer.usage.total_tokens == 12


def test_embeddings_and_a_chosen_api_version(azure: tuple[FakeAzure, GatewayServer]) -> None:
    fake, gw = azure
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model="emb", input="hello")
    assert fake.requests[-1].path == "/openai/deployments/emb-small/embeddings?api-version=2025-01-01-preview"
    assert result.data[0].embedding == [0.5, -0.25]


def test_rerank_cannot_be_an_azure_service() -> None:
    from modelrouter import ConfigError, parse_config

    with pytest.raises(ConfigError, match="azure"):
        parse_config(
            {"services": {"rerank": {"instances": [{"name": "r", "base_url": "http://x", "adapter": "azure"}]}}}
        )
