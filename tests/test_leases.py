"""Leases on shared buckets (access/limits/leases.py) on a real Redis: a busy bucket far from its limit is taken
from in this process, most requests needing no Redis call; two replicas together still admit exactly the limit;
near the limit nothing is leased; unspent units go back when a lease ends and at shutdown; a token correction
lands on the lease; a refusal is remembered until its retry time."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from modelrouter.access.limits import Limiter
from modelrouter.access.limits.leases import Leases
from modelrouter.access.limits.shared import RedisBackend
from modelrouter.config.model import LimitRule, StateConfig
from modelrouter.state import SharedState
from tests.conftest import REDIS_TIMEOUT_MS, REDIS_URL, _redis_or_skip
from tests.test_shared_limits import counting


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"mrtest:{secrets.token_hex(6)}:"
    yield name
    cleaner = SharedState(StateConfig(backend="redis", url=REDIS_URL, prefix=name, timeout_ms=REDIS_TIMEOUT_MS))
    async for key in cleaner.redis.scan_iter(match=name + "*"):
        await cleaner.redis.delete(key)
    await cleaner.aclose()


@pytest.fixture
async def states(prefix: str) -> AsyncIterator[list[SharedState]]:
    """Two connections with one prefix: two replicas' views of one Redis."""
    made = [
        SharedState(StateConfig(backend="redis", url=REDIS_URL, prefix=prefix, timeout_ms=REDIS_TIMEOUT_MS))
        for _ in range(2)
    ]
    await _redis_or_skip(made[0])
    yield made
    for state in made:
        await state.aclose()


async def used(state: SharedState, rule: LimitRule, key: str, now: float) -> float:
    """What Redis counts as taken from a fixed window: its limit minus what a lease-less probe sees remaining,
    less the probe's own unit (given back) if it got one."""
    probe = RedisBackend(state, leases=False, redis_time=False)
    refusal, decisions = await probe.take_all([(key, 1.0, rule)], now)
    if refusal is not None:
        return rule.rate - refusal.remaining
    await probe.adjust_all([(key, -1.0, rule)], now)
    return rule.rate - decisions[0].remaining - 1.0


async def test_a_busy_bucket_far_from_its_limit_rarely_asks_redis(
    states: list[SharedState], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = LimitRule(scope="global", rate=1_000_000, period=60, algorithm="fixed_window")
    clock = Clock()
    backend = RedisBackend(states[0], redis_time=False, clock=clock)
    calls = counting(states[0], monkeypatch)
    limiter = Limiter(backend, clock=clock)
    for _ in range(1000):
        clock.now += 0.001  # 1,000 requests a second
        refusal, _ = await limiter.check([("g", 1.0, rule)])
        assert refusal is None
    assert len(calls) < 30, calls  # a handful of round trips, not 1,000
    # Everything admitted was counted in Redis, and what is still leased too.
    assert await used(states[1], rule, "g", clock.now) >= 1000
    await backend.aclose()  # unspent units go back
    assert await used(states[1], rule, "g", clock.now) == 1000


async def test_two_replicas_admit_exactly_the_limit(states: list[SharedState]) -> None:
    rule = LimitRule(scope="global", rate=1024, period=60, algorithm="fixed_window")  # leases of 4 at most
    clock = Clock()
    backends = [RedisBackend(state, redis_time=False, clock=clock) for state in states]
    replicas = [Limiter(backend, clock=clock) for backend in backends]
    admitted = [0, 0]
    most_held = 0.0

    async def load(n: int) -> None:
        nonlocal most_held
        for _ in range(600):
            clock.now += 0.0005
            refusal, _ = await replicas[n].check([("g", 1.0, rule)])
            admitted[n] += refusal is None
            leases = backends[n].leases
            assert leases is not None
            most_held = max(most_held, sum(lease.units for lease in leases._leases.values()))

    await asyncio.gather(load(0), load(1))
    assert most_held > 0  # leases were taken
    assert sum(admitted) == 1024, admitted
    assert min(admitted) > 0
    assert await used(states[0], rule, "g", clock.now) == 1024


async def test_near_the_limit_nothing_is_leased(states: list[SharedState]) -> None:
    rule = LimitRule(scope="global", rate=2560, period=60, algorithm="fixed_window", unit="tokens")
    clock = Clock()
    backend = RedisBackend(states[0], redis_time=False, clock=clock)
    assert backend.leases is not None
    limiter = Limiter(backend, clock=clock)
    most_held = 0.0
    for n in range(1, 257):
        clock.now += 0.001
        refusal, decisions = await limiter.check([("g", 10.0, rule)])
        assert refusal is None, n
        taken = await used(states[1], rule, "g", clock.now)
        held = taken - 10 * n  # leased and not spent yet
        assert held <= 10  # a 256th of the limit at most
        most_held = max(most_held, held)
        if 2560 - taken < 640:  # a grant leaves more than a quarter of the limit: below it, Redis decides each
            assert held == 0, (n, taken)
        assert decisions[0].remaining == 2560 - 10 * n  # what the client sees counts down one take at a time
    assert most_held >= 5  # far from the limit, leases were taken
    refusal, _ = await limiter.check([("g", 10.0, rule)])
    assert refusal is not None


async def test_a_lease_that_ends_gives_back_what_it_holds(states: list[SharedState]) -> None:
    rule = LimitRule(scope="global", rate=10_000, period=60, algorithm="fixed_window")
    clock = Clock()
    backend = RedisBackend(states[0], redis_time=False, clock=clock)
    backend.leases = Leases(seconds=0.2)
    limiter = Limiter(backend, clock=clock)
    for _ in range(200):
        clock.now += 0.001
        assert (await limiter.check([("g", 1.0, rule)]))[0] is None
    assert await used(states[1], rule, "g", clock.now) > 200  # some are leased ahead
    clock.now += 1.0  # the lease ends; the returner gives it back within half a lease lifetime
    for _ in range(50):
        await asyncio.sleep(0.02)
        if await used(states[1], rule, "g", clock.now) < 200.5:
            break
    assert await used(states[1], rule, "g", clock.now) == pytest.approx(200, abs=1e-6)
    await backend.aclose()


async def test_a_token_correction_lands_on_the_lease(
    states: list[SharedState], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = LimitRule(scope="key", rate=1_000_000, period=60, unit="tokens", algorithm="fixed_window")
    clock = Clock()
    backend = RedisBackend(states[0], redis_time=False, clock=clock)
    limiter = Limiter(backend, clock=clock)
    for _ in range(100):
        clock.now += 0.001
        assert (await limiter.check([("t", 500.0, rule)]))[0] is None  # an estimate of 500
        await limiter.reconcile([("t", -400.0, rule)])  # 100 used
    calls = counting(states[0], monkeypatch)
    clock.now += 0.001
    assert (await limiter.check([("t", 500.0, rule)]))[0] is None
    await limiter.reconcile([("t", -400.0, rule)])
    assert calls == []  # both from the lease
    await backend.aclose()
    assert await used(states[1], rule, "t", clock.now) == pytest.approx(101 * 100, abs=1e-6)


async def test_a_refusal_is_remembered_until_its_retry_time(
    states: list[SharedState], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = LimitRule(scope="key", rate=2, period=10)  # a token every 5 s
    clock = Clock()
    backend = RedisBackend(states[0], redis_time=False, clock=clock)
    backend.leases = Leases(seconds=4.0)
    limiter = Limiter(backend, clock=clock)
    for _ in range(2):
        assert (await limiter.check([("k", 1.0, rule)]))[0] is None
    refusal, _ = await limiter.check([("k", 1.0, rule)])
    assert refusal is not None
    assert refusal.retry_after == pytest.approx(5.0)
    calls = counting(states[0], monkeypatch)
    clock.now += 2.0
    again, _ = await limiter.check([("k", 1.0, rule)])
    assert again is not None
    assert again.retry_after == pytest.approx(3.0)
    assert calls == []
    clock.now += 2.5  # past a lease's life (4 s): Redis is asked again, and still refuses
    again, _ = await limiter.check([("k", 1.0, rule)])
    assert again is not None
    assert again.retry_after == pytest.approx(0.5)
    assert calls == [1]
    clock.now += 0.5
    assert (await limiter.check([("k", 1.0, rule)]))[0] is None  # at the retry time, a token is back
    assert calls == [1, 1]


async def test_a_refusal_by_one_bucket_gives_the_leased_units_of_the_others_back(states: list[SharedState]) -> None:
    wide = LimitRule(scope="global", rate=100_000, period=60, algorithm="fixed_window")
    narrow = LimitRule(scope="key", rate=3, period=60, algorithm="fixed_window")
    clock = Clock()
    backend = RedisBackend(states[0], redis_time=False, clock=clock)
    limiter = Limiter(backend, clock=clock)
    for n in range(50):
        clock.now += 0.001
        await limiter.check([("g", 1.0, wide), (f"k{n}", 1.0, narrow)])  # the global bucket gets a lease
    admitted = 0
    for _ in range(10):
        clock.now += 0.001
        admitted += (await limiter.check([("g", 1.0, wide), ("k", 1.0, narrow)]))[0] is None
    assert admitted == 3
    await backend.aclose()
    # The seven refused requests cost the global bucket nothing.
    assert await used(states[1], wide, "g", clock.now) == 53


async def test_the_script_grants_a_lease_only_above_a_quarter_of_the_limit(states: list[SharedState]) -> None:
    backend = RedisBackend(states[0], leases=False, redis_time=False)
    rule = LimitRule(scope="global", rate=25_600, period=60, algorithm="fixed_window")
    answers = await backend._take([("g", 1.0, 1000.0, rule)], [], 1000.0)
    assert isinstance(answers, list)
    decision, granted = answers[0]
    assert granted == 100  # a 256th of the limit (an eighth of what is above a quarter would be 2,399)
    assert decision.remaining == 25_499
    answers = await backend._take([("g", 19_000.0, 1000.0, rule)], [], 1000.0)
    assert isinstance(answers, list)
    assert answers[0][1] == 12  # 6,499 left: (6,499 - 6,400) / 8
    answers = await backend._take([("g", 100.0, 1000.0, rule)], [], 1000.0)
    assert isinstance(answers, list)
    assert answers[0][1] == 0  # 6,387 left: under a quarter
    small = LimitRule(scope="global", rate=255, period=60, algorithm="fixed_window")
    answers = await backend._take([("s", 1.0, 1000.0, small)], [], 1000.0)
    assert isinstance(answers, list)
    assert answers[0][1] == 0  # a limit under 256 never leases
