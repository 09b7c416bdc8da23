"""Active health checks: state transitions over a scripted transport (no sockets, no sleeping), then probe loops
against real loopback backends through a real transport (``MODELROUTER_TEST_UPSTREAM_CLIENT``, aiohttp by default).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from modelrouter import parse_config
from modelrouter.adapters import ADAPTERS
from modelrouter.config.model import DEFAULT_TIMEOUTS, BreakerConfig, HealthCheckConfig, InstanceConfig, UpstreamConfig
from modelrouter.errors import UpstreamConnectError, UpstreamInvalid, UpstreamTimeout
from modelrouter.resilience.breaker import CLOSED, HALF_OPEN, OPEN
from modelrouter.resilience.health import HealthChecker
from modelrouter.routing.instance import Instance
from modelrouter.routing.router import RoutingTable
from modelrouter.upstream.base import Transport, UpstreamRequest
from modelrouter.upstream.clients import build_transport

from .servers import UPSTREAM_CLIENT, free_port

# -- a scripted transport ----------------------------------------------------------------------------------


class ScriptedResponse:
    """What ``Transport.send`` returns; records how much of its body was read and whether it was closed."""

    def __init__(self, status: int = 200, body: bytes = b'{"data": []}', *, break_after: int | None = None) -> None:
        self.status = status
        self.content_type: str | None = "application/json"
        self.body = body
        self.break_after = break_after  # raise UpstreamInvalid after this many chunks
        self.chunks_read = 0
        self.closed = False

    def header_items(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json")]

    async def read(self) -> bytes:
        return self.body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), 16 * 1024):
            if self.break_after is not None and self.chunks_read >= self.break_after:
                raise UpstreamInvalid("the backend broke off its answer")
            self.chunks_read += 1
            yield self.body[i : i + 16 * 1024]

    def first_event(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


HANG = "hang"
Outcome = int | ScriptedResponse | Exception | str


class ScriptedTransport:
    """Answers each ``send`` with the next scripted outcome (a status, a response, an exception to raise, or
    ``HANG``); when the script runs out, with ``default``."""

    def __init__(self, *script: Outcome, default: Outcome = 200) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[UpstreamRequest] = []
        self.responses: list[ScriptedResponse] = []

    async def send(self, request: UpstreamRequest) -> ScriptedResponse:
        self.requests.append(request)
        outcome = self.script.pop(0) if self.script else self.default
        if outcome == HANG:
            await asyncio.Event().wait()
        if isinstance(outcome, Exception):
            raise outcome
        response = outcome if isinstance(outcome, ScriptedResponse) else ScriptedResponse(int(outcome))
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        pass


def make_instance(
    name: str = "a",
    *,
    headers: dict[str, str] | None = None,
    breaker: BreakerConfig | None = None,
    **health: Any,
) -> Instance:
    cfg = InstanceConfig(name=name, base_url=f"http://{name}.backend.test:8000", headers=headers or {})
    checks = HealthCheckConfig(**health)
    return Instance(cfg, "chat", {}, DEFAULT_TIMEOUTS["chat"], ADAPTERS["openai"], breaker=breaker, health=checks)


async def probe(checker: HealthChecker, instance: Instance, times: int) -> list[bool]:
    return [await checker.probe_once(instance) for _ in range(times)]


# -- state transitions -------------------------------------------------------------------------------------


async def test_unhealthy_only_after_unhealthy_after_failures_in_a_row(caplog: pytest.LogCaptureFixture) -> None:
    inst = make_instance(unhealthy_after=3)
    checker = HealthChecker(ScriptedTransport(500, 500, 200, 500, 500, 500, default=500))
    caplog.set_level(logging.INFO, logger="modelrouter.health")

    assert await probe(checker, inst, 3) == [False, False, True]
    assert inst.healthy  # a good probe in between resets the count
    assert await probe(checker, inst, 2) == [False, False]
    assert inst.healthy
    assert not caplog.records  # failures below the threshold are not logged

    assert await checker.probe_once(inst) is False
    assert not inst.healthy
    state = checker.state(inst)
    assert state is not None
    assert (state.failures, state.successes, state.probes, state.last_error) == (3, 0, 6, "status 500")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert inst.id in record.getMessage()
    assert "status 500" in record.getMessage()

    caplog.clear()
    await probe(checker, inst, 2)
    assert not caplog.records  # further failures of an unhealthy instance are not logged again


async def test_healthy_again_after_healthy_after_good_probes(caplog: pytest.LogCaptureFixture) -> None:
    inst = make_instance(unhealthy_after=1, healthy_after=2)
    checker = HealthChecker(ScriptedTransport(UpstreamConnectError("cannot connect"), 200, 500, 200, 200))
    caplog.set_level(logging.INFO, logger="modelrouter.health")

    assert not await checker.probe_once(inst)
    assert not inst.healthy
    assert await checker.probe_once(inst)
    assert not inst.healthy  # one good probe of two
    assert not await checker.probe_once(inst)  # a failure restarts the count
    assert await checker.probe_once(inst)
    assert not inst.healthy
    assert await checker.probe_once(inst)
    assert inst.healthy

    assert [(r.levelno, inst.id in r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, True),
        (logging.INFO, True),
    ]
    assert "cannot connect" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (UpstreamConnectError("cannot connect to the backend (connection refused)"), "connection refused"),
        (UpstreamTimeout("the backend sent no answer in time"), "no answer in time"),
        (UpstreamInvalid("the backend failed (ServerDisconnectedError)"), "ServerDisconnectedError"),
        (RuntimeError("a transport bug"), "RuntimeError: a transport bug"),
        (503, "status 503"),
        (ScriptedResponse(200, b"x" * 100_000, break_after=1), "broke off"),
    ],
    ids=["refused", "timeout", "invalid", "unexpected-exception", "status", "body-broken"],
)
async def test_every_kind_of_failure_is_a_failed_probe_never_an_exception(outcome: Outcome, reason: str) -> None:
    inst = make_instance(unhealthy_after=1)
    transport = ScriptedTransport(outcome)
    checker = HealthChecker(transport)
    assert await checker.probe_once(inst) is False
    assert not inst.healthy
    state = checker.state(inst)
    assert state is not None
    assert state.last_error is not None
    assert reason in state.last_error
    assert all(r.closed for r in transport.responses)


async def test_probe_sends_instance_headers_and_bounded_timeouts() -> None:
    inst = make_instance(headers={"Authorization": "Bearer sk-cloud"}, timeout=1.5)
    transport = ScriptedTransport()
    await HealthChecker(transport).probe_once(inst)
    [req] = transport.requests
    assert (req.method, req.url, req.body) == ("GET", "http://a.backend.test:8000/v1/models", None)
    assert req.headers["Authorization"] == "Bearer sk-cloud"
    assert req.headers["User-Agent"].startswith("modelrouter/")
    t = req.timeouts
    assert (t.connect, t.first_byte, t.idle, t.total) == (1.5, 1.5, 1.5, 1.5)


async def test_custom_path_method_and_expected_status() -> None:
    inst = make_instance(path="/healthz", method="HEAD", expected_status=(204, 299))
    transport = ScriptedTransport(204, 299, 200, default=200)
    checker = HealthChecker(transport)
    assert await probe(checker, inst, 3) == [True, True, False]
    assert {(r.method, r.url) for r in transport.requests} == {("HEAD", "http://a.backend.test:8000/healthz")}
    assert all(r.chunks_read == 0 for r in transport.responses)  # HEAD: no body to read


async def test_body_is_read_within_a_bound_and_the_response_always_closed() -> None:
    small, huge = ScriptedResponse(200, b"ok" * 100), ScriptedResponse(200, b"x" * 1024 * 1024)
    transport = ScriptedTransport(small, huge, ScriptedResponse(500, b"x" * 1024 * 1024))
    checker = HealthChecker(transport)
    inst = make_instance()
    assert await probe(checker, inst, 3) == [True, True, False]
    assert small.chunks_read == 1
    assert huge.chunks_read == 4  # 64 KiB of a 1 MiB answer, then the connection is dropped
    assert transport.responses[2].chunks_read == 0  # a bad status is not read at all
    assert all(r.closed for r in transport.responses)


async def test_a_probe_never_runs_longer_than_its_timeout() -> None:
    inst = make_instance(timeout=0.05, unhealthy_after=1)
    checker = HealthChecker(ScriptedTransport(HANG))
    started = time.monotonic()
    assert await checker.probe_once(inst) is False
    assert time.monotonic() - started < 1.0
    state = checker.state(inst)
    assert state is not None
    assert state.last_error == "no answer within 0.05s"


async def test_a_good_probe_lets_an_open_breaker_try_again_at_once() -> None:
    inst = make_instance(breaker=BreakerConfig(consecutive_failures=1, open_for=60))
    inst.breaker.record(ok=False, probe=False)
    assert inst.breaker.state == OPEN
    assert not inst.breaker.allows()

    checker = HealthChecker(ScriptedTransport(500, 200))
    await checker.probe_once(inst)
    assert not inst.breaker.allows()  # a failed probe leaves the open period alone
    await checker.probe_once(inst)
    assert inst.breaker.allows()
    assert inst.breaker.state == HALF_OPEN  # the next request is the breaker's own probe, as usual

    closed = make_instance()
    await checker.probe_once(closed)
    assert closed.breaker.state == CLOSED


async def test_repr_shows_counts_and_the_unhealthy() -> None:
    a, b = make_instance("a", unhealthy_after=1), make_instance("b")
    checker = HealthChecker(ScriptedTransport(UpstreamConnectError("cannot connect"), default=HANG))
    await checker.probe_once(a)
    checker.watch([a, b])
    try:
        text = repr(checker)
        assert "watching=2" in text
        assert "unhealthy=1" in text
        assert a.id in text
        assert "failures=1" in text
        assert "cannot connect" in text
        assert b.id not in text
    finally:
        await checker.aclose()
    assert "closed" in repr(checker)


def test_watch_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        HealthChecker(ScriptedTransport()).watch([make_instance()])


async def test_probe_once_refuses_an_instance_without_checks() -> None:
    with pytest.raises(ValueError, match="turned off"):
        await HealthChecker(ScriptedTransport()).probe_once(make_instance(enabled=False))


class FixedJitter(random.Random):
    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def uniform(self, a: float, b: float) -> float:
        assert (a, b) == (-0.5, 0.5)
        return self.share


async def test_jitter_moves_each_probe_within_its_share_of_the_interval() -> None:
    counts = []
    for share in (-0.5, 0.5):  # the two extremes: half the interval, one and a half
        transport = ScriptedTransport()
        checker = HealthChecker(transport, rng=FixedJitter(share))
        checker.watch([make_instance(interval=0.2, jitter=0.5)])
        await asyncio.sleep(0.45)
        await checker.aclose()
        counts.append(len(transport.requests))
    # Probes at 0, .1, .2, .3, .4 with the shortest delay; at 0 and .3 with the longest.
    assert counts[0] >= 4
    assert counts[1] == 2


# -- real backends over loopback ---------------------------------------------------------------------------


class ProbeTarget:
    """A loopback backend whose health answer can be switched; ``down()`` closes the port (connection
    refused) and ``up()`` opens it again."""

    def __init__(self) -> None:
        self.status = 200
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, dict(request.headers)))
        return web.json_response({"object": "list", "data": []}, status=self.status)

    async def up(self) -> ProbeTarget:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def targets() -> AsyncIterator[Callable[[], Any]]:
    started: list[ProbeTarget] = []

    async def start() -> ProbeTarget:
        started.append(target := await ProbeTarget().up())
        return target

    yield start
    for target in started:
        await target.down()


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    transport = build_transport(UpstreamConfig(client=UPSTREAM_CLIENT))  # type: ignore[arg-type]
    yield transport
    await transport.aclose()


async def until(condition: Callable[[], bool], within: float = 5.0) -> float:
    """Seconds until ``condition`` held (polled every 10 ms); fails the test after ``within``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def health_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("health ") and not t.done()]


def chat_config(instances: list[dict[str, Any]], **health: Any) -> dict[str, Any]:
    return {"health_check": health, "services": {"chat": {"instances": instances}}}


INTERVAL = 0.1


async def test_real_backend_goes_unhealthy_and_recovers_within_an_interval(
    targets: Callable[[], Any], transport: Transport
) -> None:
    target: ProbeTarget = await targets()
    cfg = chat_config(
        [{"name": "m", "base_url": target.url, "headers": {"Authorization": "Bearer sk-test"}}],
        interval=INTERVAL,
        timeout=0.5,
        unhealthy_after=2,
        healthy_after=1,
    )
    [inst] = RoutingTable(parse_config(cfg)).all_instances()
    checker = HealthChecker(transport)
    checker.watch([inst])
    try:
        # The first probe is immediate, and carries the instance's credentials.
        assert await until(lambda: len(target.seen) >= 1) < INTERVAL
        method, path, headers = target.seen[0]
        assert (method, path, headers["Authorization"]) == ("GET", "/v1/models", "Bearer sk-test")
        assert inst.healthy

        # Two failed probes in a row: unhealthy after about two intervals (jitter is +-10 %).
        target.status = 500
        assert await until(lambda: not inst.healthy) < 2 * INTERVAL * 1.1 + 0.15
        state = checker.state(inst)
        assert state is not None
        assert state.last_error == "status 500"

        # Recovery is noticed by the next probe.
        target.status = 200
        assert await until(lambda: inst.healthy) < INTERVAL * 1.1 + 0.1

        # A backend that goes away entirely (connection refused), then comes back.
        await target.down()
        await until(lambda: not inst.healthy)
        assert state.last_error is not None
        assert "connection refused" in state.last_error
        await target.up()
        assert await until(lambda: inst.healthy) < INTERVAL * 1.1 + 0.1
    finally:
        await checker.aclose()
    assert not health_tasks()


async def test_real_probe_reopens_an_open_breaker_within_an_interval(
    targets: Callable[[], Any], transport: Transport
) -> None:
    target: ProbeTarget = await targets()
    cfg = chat_config([{"name": "m", "base_url": target.url}], interval=INTERVAL)
    cfg["breaker"] = {"consecutive_failures": 1, "open_for": 60}
    [inst] = RoutingTable(parse_config(cfg)).all_instances()
    inst.breaker.record(ok=False, probe=False)
    assert not inst.breaker.allows()
    checker = HealthChecker(transport)
    checker.watch([inst])
    try:
        assert await until(inst.breaker.allows) < INTERVAL * 1.1 + 0.1
        assert inst.breaker.state == HALF_OPEN
    finally:
        await checker.aclose()


async def test_real_probe_honours_custom_path_method_and_status(
    targets: Callable[[], Any], transport: Transport
) -> None:
    target: ProbeTarget = await targets()
    target.status = 204
    # Per-instance settings over the global ones, field by field.
    cfg = chat_config(
        [
            {
                "name": "m",
                "base_url": target.url,
                "health_check": {"path": "/healthz", "method": "POST", "expected_status": [204]},
            }
        ],
        interval=INTERVAL,
        unhealthy_after=1,
    )
    [inst] = RoutingTable(parse_config(cfg)).all_instances()
    checker = HealthChecker(transport)
    checker.watch([inst])
    try:
        await until(lambda: len(target.seen) >= 3)
        assert inst.healthy
        assert {(m, p) for m, p, _ in target.seen} == {("POST", "/healthz")}
        target.status = 200  # fine for most, but not what this instance is configured to expect
        await until(lambda: not inst.healthy)
    finally:
        await checker.aclose()


async def test_watch_follows_reloads_without_leaking_tasks(targets: Callable[[], Any], transport: Transport) -> None:
    a, b, c = [await targets() for _ in range(3)]

    def config(*members: tuple[str, ProbeTarget], interval: float = INTERVAL) -> dict[str, Any]:
        return chat_config([{"name": n, "base_url": t.url} for n, t in members], interval=interval)

    def task_of(inst: Instance) -> asyncio.Task[None]:
        state = checker.state(inst)
        assert state is not None
        assert state.task is not None
        return state.task

    table1 = RoutingTable(parse_config(config(("a", a), ("b", b))))
    inst_a, inst_b = table1.all_instances()
    checker = HealthChecker(transport)
    checker.watch(table1.all_instances())
    try:
        await until(lambda: bool(a.seen and b.seen))
        assert len(health_tasks()) == 2
        task_a, task_b = task_of(inst_a), task_of(inst_b)

        # Reload: a is kept (the same object, so its loop goes on), b is removed, c is new.
        table2 = RoutingTable(parse_config(config(("a", a), ("c", c))), previous=table1)
        kept, inst_c = table2.all_instances()
        assert kept is inst_a
        checker.watch(table2.all_instances())
        assert task_of(inst_a) is task_a
        assert checker.state(inst_b) is None
        await asyncio.sleep(0)
        assert task_b.done()
        assert set(health_tasks()) == {task_a, task_of(inst_c)}
        await until(lambda: bool(c.seen))
        seen_by_b = len(b.seen)
        await asyncio.sleep(2 * INTERVAL)
        assert len(b.seen) == seen_by_b  # no more probes to a removed instance

        # The same config again changes nothing.
        checker.watch(RoutingTable(parse_config(config(("a", a), ("c", c))), previous=table2).all_instances())
        assert task_of(inst_a) is task_a

        # A new interval for the same backend: same instance, restarted loop.
        table3 = RoutingTable(parse_config(config(("a", a), interval=0.05)), previous=table2)
        assert table3.all_instances() == [inst_a]
        checker.watch(table3.all_instances())
        task_a2 = task_of(inst_a)
        assert task_a2 is not task_a
        await asyncio.sleep(0)
        assert task_a.done()
        assert health_tasks() == [task_a2]

        # Checks turned off for the instance: its loop stops, and it is not left unhealthy.
        inst_a.healthy = False
        off = config(("a", a))
        off["health_check"]["enabled"] = False
        table4 = RoutingTable(parse_config(off), previous=table3)
        checker.watch(table4.all_instances())
        assert inst_a.healthy
        await asyncio.sleep(0)
        assert not health_tasks()
    finally:
        await checker.aclose()
    assert not health_tasks()
    checker.watch(table1.all_instances())  # after aclose (a reload racing with shutdown): nothing starts
    assert not health_tasks()


async def test_watch_restarts_a_loop_that_ended_and_keeps_its_counts() -> None:
    inst = make_instance(unhealthy_after=5)
    checker = HealthChecker(ScriptedTransport(default=500))
    checker.watch([inst])
    await asyncio.sleep(0.01)
    state = checker.state(inst)
    assert state is not None
    assert state.task is not None
    assert state.failures == 1
    state.task.cancel()  # as if it had died
    await asyncio.sleep(0)
    checker.watch([inst])
    try:
        await asyncio.sleep(0.01)
        assert checker.state(inst) is state
        assert len(health_tasks()) == 1
        assert state.failures == 2
    finally:
        await checker.aclose()


async def test_aclose_waits_for_probes_in_flight() -> None:
    hung = ScriptedTransport(default=HANG)
    checker = HealthChecker(hung)
    checker.watch([make_instance(name) for name in "abc"])
    await asyncio.sleep(0.01)
    assert len(hung.requests) == 3  # one task each, all probing at once
    tasks = health_tasks()
    assert len(tasks) == 3
    await checker.aclose()
    assert all(t.done() for t in tasks)
    assert not health_tasks()


def test_an_instance_whose_base_url_ends_in_v1_is_probed_where_requests_go(
    start_upstream: Callable[..., Any], start_gateway: Callable[..., Any]
) -> None:
    """The README says `base_url: http://host:port/v1` is fine: probes must not ask for /v1/v1/models."""
    import openai

    fake, url = start_upstream("a")
    cfg = chat_config([{"name": "m", "base_url": url + "/v1"}], interval=0.05, unhealthy_after=1)
    gw = start_gateway(cfg)
    [inst] = gw.gateway.table.all_instances()
    assert inst.probe_url == url + "/v1/models"
    checker = gw.gateway.health
    deadline = time.monotonic() + 5
    while (state := checker.state(inst)) is None or state.probes < 3:
        assert time.monotonic() < deadline, "no probes ran"
        time.sleep(0.02)
    assert inst.healthy, state.last_error
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
    assert fake.last.path == "/v1/chat/completions"
