"""Shared fixtures: real servers on loopback, started on one background loop for the whole session."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from modelrouter.config.model import StateConfig, StoreConfig
from modelrouter.state import SharedState

from .console_browser import open_browser, page_errors
from .fake_anthropic import FakeAnthropic
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
def anthropic_upstream(bg: BackgroundLoop, servers: list[UpstreamServer | GatewayServer]) -> tuple[FakeAnthropic, str]:
    """A loopback Anthropic Messages API (tests/fake_anthropic.py) and its URL; stopped after the test."""
    fake = FakeAnthropic()
    servers.append(server := UpstreamServer(bg, fake.app()).start())
    return fake, server.url


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


# --- stores: SQLite and PostgreSQL ------------------------------------------------------------------------------

# An existing database to connect to while creating the test database.
PG_ADMIN_URL = os.environ.get("MODELROUTER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({reason}); set MODELROUTER_TEST_POSTGRES to use another")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A new database for this test session; its URL."""
    asyncpg = pytest.importorskip("asyncpg")
    name = f"modelrouter_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _postgres_unavailable(f"{type(exc).__name__}: {exc}")
    yield sa.make_url(PG_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def _empty_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """An empty database of each kind for one test."""
    if request.param == "sqlite":
        return StoreConfig(data_dir=str(tmp_path / "data"))
    url: str = request.getfixturevalue("pg_database")  # only now: SQLite-only runs need no server
    asyncio.run(_empty_postgres(url))
    return StoreConfig(database_url=url)


# --- Redis: the machine's, 127.0.0.1:6379 ---------------------------------------------------------------------

REDIS_URL = os.environ.get("MODELROUTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
# The default state.timeout_ms (50) is for a quiet production Redis; on a loaded 2-core CI machine a call can take
# longer, the state falls back to in-process counting, and a test comparing counts fails on timing, not logic.
# Tests of the timeout itself set their own.
REDIS_TIMEOUT_MS = 2000


async def _redis_or_skip(state: SharedState) -> None:
    try:
        await state.redis.ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI=true and no Redis at {REDIS_URL}: {exc!r}") from exc
        pytest.skip(f"no Redis at {REDIS_URL}")


@pytest.fixture
async def state() -> AsyncIterator[SharedState]:
    # A prefix of its own per test: tests share the machine's Redis with each other and with whatever else runs.
    shared = SharedState(
        StateConfig(
            backend="redis", url=REDIS_URL, prefix=f"mrtest:{secrets.token_hex(6)}:", timeout_ms=REDIS_TIMEOUT_MS
        )
    )
    await _redis_or_skip(shared)
    yield shared
    async for key in shared.redis.scan_iter(match=shared.prefix + "*"):
        await shared.redis.delete(key)
    await shared.aclose()


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A headless Chromium for the console's tests (tests/console_browser.py); the test fails if the page logged
    an error (a test expecting one reads ``page_errors`` itself first)."""
    with open_browser() as driver:
        yield driver
        # Read when the test body ended (pytest_runtest_call below): by now the gateway the page polls may be gone.
        errors = getattr(request.node, "browser_errors", [])  # none: the test never ran (its setup failed)
        assert errors == [], errors  # no console error during the test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    finally:
        driver = getattr(item, "funcargs", {}).get("browser")
        if driver is not None:
            item.browser_errors = page_errors(driver)  # type: ignore[attr-defined]
