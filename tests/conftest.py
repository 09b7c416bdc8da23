"""Shared fixtures: real servers on loopback, started on one background loop for the whole session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .fakes import FakeOllama, FakeOpenAI
from .servers import BackgroundLoop, GatewayServer, UpstreamServer


@pytest.fixture(scope="session")
def bg() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture
def servers(bg: BackgroundLoop) -> Iterator[list[UpstreamServer | GatewayServer]]:
    """Servers a test started; all are stopped after it."""
    started: list[UpstreamServer | GatewayServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def start_upstream(
    bg: BackgroundLoop, servers: list[UpstreamServer | GatewayServer]
) -> Callable[..., tuple[FakeOpenAI, str]]:
    """start_upstream(name="a", rerank_style="jina") -> (fake, base_url); stopped after the test."""

    def start(name: str = "a", **kwargs: Any) -> tuple[FakeOpenAI, str]:
        fake = FakeOpenAI(name, **kwargs)
        servers.append(server := UpstreamServer(bg, fake.app()).start())
        return fake, server.url

    return start


@pytest.fixture
def start_ollama(
    bg: BackgroundLoop, servers: list[UpstreamServer | GatewayServer]
) -> Callable[[], tuple[FakeOllama, str]]:
    def start() -> tuple[FakeOllama, str]:
        fake = FakeOllama()
        servers.append(server := UpstreamServer(bg, fake.app()).start())
        return fake, server.url

    return start


@pytest.fixture
def start_gateway(
    bg: BackgroundLoop, servers: list[UpstreamServer | GatewayServer]
) -> Callable[[dict[str, Any]], GatewayServer]:
    """start_gateway(config_dict) -> GatewayServer (``.url``, ``.gateway``); stopped after the test."""

    def start(config: dict[str, Any], *, config_source: str | None = None) -> GatewayServer:
        servers.append(server := GatewayServer(bg, config, config_source=config_source).start())
        return server

    return start


@pytest.fixture
def one_of_each(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> tuple[FakeOpenAI, GatewayServer]:
    """One fake OpenAI upstream serving every service under model names m-<service>, behind a gateway."""
    fake, url = start_upstream("a")
    services = {
        s: {"instances": [{"name": f"m-{s}", "base_url": url, "upstream_model": f"up-{s}"}]}
        for s in ("chat", "embedding", "rerank", "tts", "stt", "image_generation", "image_edit")
    }
    gw = start_gateway({"aliases": {"gpt-4o": "m-chat"}, "services": services})
    return fake, gw
