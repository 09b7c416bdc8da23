"""Scale-out: several gateway processes that share one Redis keep one set of promises. Three `modelrouter serve`
replicas, or one `serve --workers 3`, with one global limit admit exactly what the limit says, all of them
together; `serve --workers N` with limits counted per process refuses to start."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import yaml

from .fakes import FakeOpenAI
from .servers import free_port
from .test_lifecycle import GatewayProcess, wait_until

REDIS_URL = os.environ.get("MODELROUTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of the test's own in the machine's Redis, emptied afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI=true and no Redis at {REDIS_URL}: {exc!r}") from exc
        pytest.skip(f"no Redis at {REDIS_URL}")
    name = f"mrtest:{secrets.token_hex(6)}:"
    yield name
    for key in client.scan_iter(match=name + "*"):
        client.delete(key)
    client.close()


def _config(upstream: str, data_dir: Path, prefix: str | None, limits: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "health_check": {"enabled": False},
        "store": {"data_dir": str(data_dir)},
        "limits": limits,
        "services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}},
    }
    if prefix is not None:
        config["state"] = {"backend": "redis", "url": REDIS_URL, "prefix": prefix, "timeout_ms": 2000}
    return config


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _clear_of_a_minute_boundary(margin: float = 15.0) -> None:
    """Fixed windows are aligned to the minute (on Redis's clock, this machine's): start well inside one, so that
    every request of the test falls in the same window."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.5)


async def _burst(urls: list[str], total: int) -> Counter[int]:
    """``total`` chat requests at once, spread round-robin over ``urls``; each on a connection of its own."""
    statuses: Counter[int] = Counter()
    retry_after: list[str | None] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(n: int) -> None:
            async with session.post(urls[n % len(urls)] + "/v1/chat/completions", json=CHAT) as reply:
                await reply.read()
                statuses[reply.status] += 1
                if reply.status == 429:
                    retry_after.append(reply.headers.get("retry-after"))

        await asyncio.gather(*(one(n) for n in range(total)))
    assert all(value is not None and int(value) >= 1 for value in retry_after), retry_after
    return statuses


LIMIT = [{"scope": "global", "algorithm": "fixed_window", "rate": 100, "period": 60}]


def test_three_replicas_admit_exactly_one_global_limit(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], tmp_path: Path, prefix: str
) -> None:
    fake, upstream = start_upstream("a")
    replicas = []
    try:
        for n in range(3):
            path = _write(tmp_path / f"replica{n}.yaml", _config(upstream, tmp_path / f"data{n}", prefix, LIMIT))
            replicas.append(GatewayProcess(path, tmp_path / f"replica{n}.log"))
        for replica in replicas:
            replica.wait_ready()
        _clear_of_a_minute_boundary()
        statuses = asyncio.run(_burst([r.url for r in replicas], 300))
        assert statuses == {200: 100, 429: 200}, statuses
        assert len(fake.requests) == 100  # the refused ones never reached the upstream
    finally:
        for replica in replicas:
            replica.kill()


def test_workers_on_one_port_admit_exactly_one_global_limit(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], tmp_path: Path, prefix: str
) -> None:
    fake, upstream = start_upstream("a")
    port = free_port()
    config = {**_config(upstream, tmp_path / "data", prefix, LIMIT), "server": {"host": "127.0.0.1", "port": port}}
    path = _write(tmp_path / "gateway.yaml", config)
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelrouter", "serve", "--config", str(path), "--workers", "3"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                return asyncio.run(_health(url))
            except (aiohttp.ClientError, OSError):
                return False

        wait_until(up, "the workers to serve", 30)
        _clear_of_a_minute_boundary()
        statuses = asyncio.run(_burst([url], 300))
        assert statuses == {200: 100, 429: 200}, statuses
        assert len(fake.requests) == 100
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


async def _health(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as reply:
        return reply.status == 200


def test_workers_with_limits_counted_per_process_refuse_to_start(tmp_path: Path) -> None:
    config = _config("http://127.0.0.1:9", tmp_path / "data", None, LIMIT)
    config["server"] = {"host": "127.0.0.1", "port": free_port()}
    path = _write(tmp_path / "gateway.yaml", config)
    done = subprocess.run(
        [sys.executable, "-m", "modelrouter", "serve", "--config", str(path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert "--workers 2 would count these in each worker separately" in done.stderr
    assert "limits (1 rule(s))" in done.stderr
    assert "state.backend: redis" in done.stderr


class PrivateRedis:
    """A redis-server of the test's own on a free port (the machine's is never stopped), stopped by its pid."""

    def __init__(self, port: int | None = None, *options: str) -> None:
        self.port = port if port is not None else free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.options = options  # more redis-server arguments, e.g. a sentinel.conf and "--sentinel"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        command = ["redis-server", *self.options, "--port", str(self.port), "--bind", "127.0.0.1"]
        if "--sentinel" not in self.options:
            command += ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, "the private redis-server", 10)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def need_redis_server() -> None:
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError("CI=true and no redis-server binary to start a private Redis")
        pytest.skip("no redis-server binary")


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    need_redis_server()
    server = PrivateRedis().start()
    yield server
    server.stop()


def _chat_status(url: str) -> int:
    async def one() -> int:
        async with aiohttp.ClientSession() as session, session.post(url + "/v1/chat/completions", json=CHAT) as reply:
            await reply.read()
            return reply.status

    return asyncio.run(one())


@pytest.mark.parametrize("on_error", ["allow", "deny"])
def test_redis_down_then_back(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., Any],
    private_redis: PrivateRedis,
    on_error: str,
) -> None:
    _, upstream = start_upstream("a")
    limit = [{"scope": "global", "algorithm": "fixed_window", "rate": 3, "period": 3600}]
    gw = start_gateway(
        {
            "state": {"backend": "redis", "url": private_redis.url, "timeout_ms": 200, "on_error": on_error},
            "limits": limit,
            "services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}},
        }
    )
    # Not up to the limit: a refusal is remembered for a while (it would hold with Redis down too).
    assert [_chat_status(gw.url) for _ in range(2)] == [200, 200]
    private_redis.stop()
    during = [_chat_status(gw.url) for _ in range(5)]
    if on_error == "allow":
        # Admitted and limited in this process meanwhile (its own fresh buckets): 3, then refusals - never a 5xx.
        assert during == [200, 200, 200, 429, 429], during
    else:
        assert during == [503] * 5, during
    assert gw.gateway.shared_state.errors >= 1  # modelrouter_state_errors_total
    # Ready all the same: taking every replica out of a load balancer for a Redis blip would be a full outage.
    import httpx2

    assert httpx2.get(gw.url + "/ready", timeout=5).status_code == 200
    private_redis.start()  # the same port: Redis is back, empty (its counts were lost with it)
    # Within a few seconds (the back-off is at most 5 s), limits count in Redis again: 3 more, then 429.

    def counted_in_redis() -> bool:
        client = redis.Redis.from_url(private_redis.url)
        try:
            return bool(client.keys("mr:limit:*"))
        finally:
            client.close()

    deadline = time.monotonic() + 10
    statuses = []
    while not counted_in_redis():
        assert time.monotonic() < deadline, statuses
        statuses.append(_chat_status(gw.url))
        time.sleep(0.2)
    after = [_chat_status(gw.url) for _ in range(4)]
    assert after[-1] == 429, after
    assert after.count(200) <= 3, after


KEY = "mr-scale-out-test-key-0123456789"


class Busy:
    """An upstream that holds each chat request a while and remembers the most it ever held at once."""

    def __init__(self, hold: float, tokens: int = 2) -> None:
        self.hold = hold
        self.tokens = tokens  # the usage each answer reports
        self.now = 0
        self.most = 0
        self.answered = 0

    def app(self) -> Any:
        from aiohttp import web

        async def chat(request: web.Request) -> web.Response:
            await request.read()
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                await asyncio.sleep(self.hold)
            finally:
                self.now -= 1
            self.answered += 1
            return web.json_response(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": self.tokens - 1, "total_tokens": self.tokens},
                }
            )

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


def _replicas(tmp_path: Path, config: dict[str, Any], count: int = 3) -> list[GatewayProcess]:
    replicas = []
    for n in range(count):
        path = _write(tmp_path / f"replica{n}.yaml", {**config, "store": {"data_dir": str(tmp_path / f"data{n}")}})
        replicas.append(GatewayProcess(path, tmp_path / f"replica{n}.log"))
    for replica in replicas:
        replica.wait_ready()
    return replicas


async def _burst_with_key(urls: list[str], total: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(n: int) -> None:
            url = urls[n % len(urls)] + "/v1/chat/completions"
            async with session.post(url, json=CHAT, headers=headers) as reply:
                body = await reply.json(content_type=None)
                outcomes["200" if reply.status == 200 else f"{reply.status} {body['error']['code']}"] += 1

        await asyncio.gather(*(one(n) for n in range(total)))
    return outcomes


@pytest.mark.parametrize(
    ("quotas", "sent", "expected"),
    [
        ({"max_concurrent": 5}, 30, {"200": 5, "429 rate_limit_exceeded": 25}),
        ({"daily_requests": 20}, 60, {"200": 20, "429 insufficient_quota": 40}),
        ({"requests_per_minute": 6}, 18, {"200": 6, "429 rate_limit_exceeded": 12}),
    ],
)
def test_three_replicas_keep_one_keys_caps(
    bg: Any, tmp_path: Path, prefix: str, quotas: dict[str, Any], sent: int, expected: dict[str, int]
) -> None:
    from .servers import UpstreamServer

    busy = Busy(hold=0.5 if "max_concurrent" in quotas else 0.0)
    upstream = UpstreamServer(bg, busy.app()).start()
    config = _config(upstream.url, tmp_path / "data", prefix, [])
    config["auth"] = {"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": quotas}]}
    replicas = _replicas(tmp_path, config)
    try:
        outcomes = asyncio.run(_burst_with_key([r.url for r in replicas], sent))
        assert outcomes == expected, outcomes
        assert busy.answered == expected["200"]
        if "max_concurrent" in quotas:
            assert busy.most == 5  # never more in flight at the upstream, over all three replicas
    finally:
        for replica in replicas:
            replica.kill()
        upstream.stop()


def test_state_and_metrics_say_which_replica_they_describe(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELROUTER_REPLICA_ID", "gw-7")
    _, upstream = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}}})
    assert gw.gateway.live_state()["replica"] == "gw-7"
    import httpx2

    assert 'modelrouter_replica_info{replica="gw-7"} 1.0' in httpx2.get(gw.url + "/metrics", timeout=10).text


def test_three_replicas_count_one_keys_tokens_per_minute_from_real_usage(bg: Any, tmp_path: Path, prefix: str) -> None:
    """Each answer reports 30 tokens; the key may use 100 a minute. A request reserves its small estimate and is
    reconciled with the 30 it used, wherever it was served: four fit (the fourth leaves the bucket in debt), the
    fifth and later are refused on every replica."""
    from .servers import UpstreamServer

    busy = Busy(hold=0.0, tokens=30)
    upstream = UpstreamServer(bg, busy.app()).start()
    config = _config(upstream.url, tmp_path / "data", prefix, [])
    config["auth"] = {"enabled": True, "keys": [{"name": "k", "key": KEY, "quotas": {"tokens_per_minute": 100}}]}
    replicas = _replicas(tmp_path, config)

    async def one(url: str) -> int:
        headers = {"Authorization": f"Bearer {KEY}"}
        body = {**CHAT, "max_tokens": 1}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url + "/v1/chat/completions", json=body, headers=headers) as reply,
        ):
            await reply.read()
            return reply.status

    try:
        statuses = []
        for n in range(9):
            statuses.append(asyncio.run(one(replicas[n % 3].url)))
            time.sleep(0.2)  # the correction with real usage follows the answer
        assert statuses == [200] * 4 + [429] * 5, statuses
        assert busy.answered == 4
    finally:
        for replica in replicas:
            replica.kill()
        upstream.stop()


def test_a_key_revoked_by_the_cli_is_refused_by_every_replica_within_a_second(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], tmp_path: Path, prefix: str, pg_database: str
) -> None:
    """Three replicas on one PostgreSQL store: a key the CLI creates works on each of them, and once the CLI
    revokes it, each refuses it within a second (asserted per replica). The poll is set to 30 s: what arrives in
    time was pushed (LISTEN/NOTIFY)."""
    from .conftest import _empty_postgres

    asyncio.run(_empty_postgres(pg_database))
    _, upstream = start_upstream("a")
    config = _config(upstream, tmp_path / "unused", prefix, [])
    config["store"] = {"database_url": pg_database, "refresh_interval": 30}
    config["auth"] = {"enabled": True}
    path = _write(tmp_path / "replica.yaml", config)
    replicas = [GatewayProcess(path, tmp_path / f"replica{n}.log") for n in range(3)]

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "modelrouter", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def works(url: str, secret: str) -> bool:
        import httpx2

        headers = {"Authorization": f"Bearer {secret}"}
        return httpx2.post(url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=5).status_code == 200

    try:
        for replica in replicas:
            replica.wait_ready()
        secret = next(
            line.split()[1] for line in cli("keys", "create", "team").splitlines() if line.startswith("secret:")
        )
        for replica in replicas:
            wait_until(lambda r=replica: works(r.url, secret), f"the new key to work on {replica.url}", 5)
        key_id = next(line.split()[0] for line in cli("keys", "list").splitlines() if "team" in line)
        cli("keys", "revoke", key_id)
        revoked = time.monotonic()
        refused_after: dict[str, float] = {}
        while len(refused_after) < len(replicas) and time.monotonic() - revoked < 5:
            for replica in replicas:
                if replica.url not in refused_after and not works(replica.url, secret):
                    refused_after[replica.url] = time.monotonic() - revoked
            time.sleep(0.02)
        assert len(refused_after) == len(replicas), refused_after
        assert max(refused_after.values()) < 1.0, refused_after
    finally:
        for replica in replicas:
            replica.kill()


def _serve_workers(path: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelrouter", "serve", "--config", str(path), "--workers", "2", *more],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_workers_refuse_to_start_when_the_store_has_keys_with_quotas(tmp_path: Path) -> None:
    """The file promises nothing, but a key in the store has a daily quota: counted per worker, so refused."""
    from modelrouter.config.model import KeyQuotas, StoreConfig
    from modelrouter.store import Store

    async def seed() -> None:
        async with await Store.open(StoreConfig(data_dir=str(tmp_path / "data"))) as store:
            await store.create_key("team", quotas=KeyQuotas(daily_requests=100))

    asyncio.run(seed())
    config = _config("http://127.0.0.1:9", tmp_path / "data", None, [])
    config["server"] = {"host": "127.0.0.1", "port": free_port()}
    done = _serve_workers(_write(tmp_path / "gateway.yaml", config))
    assert done.returncode == 2, done.stderr
    assert "store key 'team': daily_requests" in done.stderr
    assert "state.backend: redis" in done.stderr


def test_workers_refuse_to_start_in_store_mode_when_the_stored_version_has_limits(tmp_path: Path) -> None:
    from modelrouter.config.model import StoreConfig
    from modelrouter.store import Store

    served = _config("http://127.0.0.1:9", tmp_path / "data", None, LIMIT)
    del served["store"]

    async def seed() -> None:
        async with await Store.open(StoreConfig(data_dir=str(tmp_path / "data"))) as store:
            await store.add_config_version(yaml.safe_dump(served), author="test")

    asyncio.run(seed())
    config = {"store": {"data_dir": str(tmp_path / "data")}, "server": {"host": "127.0.0.1", "port": free_port()}}
    done = _serve_workers(_write(tmp_path / "gateway.yaml", config), "--config-source", "store")
    assert done.returncode == 2, done.stderr
    assert "limits (1 rule(s))" in done.stderr


def test_a_worker_refuses_a_reload_or_a_version_that_would_count_per_worker(tmp_path: Path) -> None:
    """A worker of `serve --workers N` (it has a metrics exchange) on the memory backend: a reload that brings a
    limit is refused (ConfigError, the running config stays), and so is a config version saved through it."""
    from modelrouter.app import create_app
    from modelrouter.config.load import ConfigError
    from modelrouter.config.model import Config
    from modelrouter.runtime.workers import MetricsExchange

    plain = Config.model_validate(_config("http://127.0.0.1:9", tmp_path / "data", None, []))
    limited = Config.model_validate(_config("http://127.0.0.1:9", tmp_path / "data", None, LIMIT))
    worker = create_app(plain, exchange=MetricsExchange(str(tmp_path), 0))
    with pytest.raises(ConfigError, match="would count these in each worker separately"):
        worker.reload(limited)
    assert worker.config is plain
    alone = create_app(plain)  # one process: the same reload is fine
    alone.reload(limited)
    assert alone.config is limited


def test_admin_state_says_the_limits_count_in_redis_and_what_this_replica_holds(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., Any], prefix: str
) -> None:
    """With Redis there are no buckets in the process to count (live_buckets would read 0): the state says where
    the limits count, and the units this replica holds in leases."""
    _, upstream = start_upstream("a")
    gw = start_gateway(
        {
            "state": {"backend": "redis", "url": REDIS_URL, "prefix": prefix, "timeout_ms": 2000},
            "limits": [{"scope": "global", "algorithm": "fixed_window", "rate": 1_000_000, "period": 3600}],
            "services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}},
        }
    )
    assert [_chat_status(gw.url) for _ in range(30)] == [200] * 30
    [limit] = gw.gateway.live_state()["limits"]
    assert limit["counted_in"] == "redis"
    assert "live_buckets" not in limit
    assert sum(limit["leased_here"].values()) > 0  # a busy bucket far from its limit: leased ahead
