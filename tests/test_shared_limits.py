"""The shared limiter backend (state.backend: redis) on a real Redis: the Lua script takes the same decisions as
the in-process algorithms, step for step, for every algorithm; all limits or none holds inside one script; the
calls of one tick share a pipeline; and Redis that does not answer gives what state.on_error says."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from modelrouter.access.limits import Limiter, MemoryBackend, Quota
from modelrouter.access.limits import shared as shared_module
from modelrouter.access.limits.shared import (
    RedisBackend,
    SharedConcurrency,
    SharedQuota,
    SharedStateUnavailable,
)
from modelrouter.config.model import KeyQuotas, LimitAlgorithm, LimitRule, StateConfig
from modelrouter.state import SharedState

ALGORITHMS: tuple[LimitAlgorithm, ...] = ("token_bucket", "leaky_bucket", "sliding_window", "fixed_window", "warmup")


def counting(state: SharedState, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of calls in each pipeline ``state`` sends, from now on."""
    calls: list[int] = []
    execute = state._execute

    async def counted(batch: Any) -> Any:
        calls.append(len(batch))
        return await execute(batch)

    monkeypatch.setattr(state, "_execute", counted)
    return calls


def rules(algorithm: LimitAlgorithm) -> list[LimitRule]:
    base: dict[str, Any] = {"scope": "key", "algorithm": algorithm}
    variants = [
        {"rate": 5, "period": 1},
        {"rate": 3, "period": 2, "burst": 6},
        {"rate": 100, "period": 60, "unit": "tokens"},
        {"rate": 0.5, "period": 1},
    ]
    if algorithm == "leaky_bucket":
        variants.append({"rate": 4, "period": 1, "max_wait": 0.5})
    if algorithm == "warmup":
        variants.append({"rate": 10, "period": 1, "warmup": 3, "cold_factor": 4})
    return [LimitRule(**base, **variant) for variant in variants]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_the_script_decides_as_the_algorithms_do(state: SharedState, algorithm: LimitAlgorithm) -> None:
    rng = random.Random(f"shared-{algorithm}")
    shared = RedisBackend(state, redis_time=False, leases=False)
    reference = MemoryBackend()
    for n, rule in enumerate(rules(algorithm)):
        now = 1_700_000_000.0 + rng.random()
        key = f"k{n}"
        for step in range(300):
            now += rng.choice((0.0, 0.001, 0.01, 0.05, 0.2, 0.7, 3.0))
            if step % 7 == 6:
                delta = rng.choice((-3.0, -1.0, 0.5, 2.0, 40.0))
                await shared.adjust_all([(key, delta, rule)], now)
                reference.adjust_all([(key, delta, rule)], now)
                continue
            cost = rng.choice((1.0, 1.0, 1.0, 2.0, 0.5)) if rule.unit == "requests" else rng.choice((1.0, 30.0, 99.0))
            got = (await shared.take_all([(key, cost, rule)], now))[1][0]
            want = reference.take_all([(key, cost, rule)], now)[1][0]
            assert got.allowed == want.allowed, (rule, step, got, want)
            for name in ("remaining", "limit", "retry_after", "reset_after", "wait"):
                assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-9, abs=1e-9), (name, step)


async def test_all_limits_or_none_inside_one_call(state: SharedState) -> None:
    shared = RedisBackend(state, redis_time=False, leases=False)
    wide = LimitRule(scope="global", rate=10, period=60)
    narrow = LimitRule(scope="key", rate=2, period=60, algorithm="fixed_window")
    items = [("g", 1.0, wide), ("k", 1.0, narrow)]
    now = 1_700_000_000.0
    assert (await shared.take_all(items, now))[0] is None
    assert (await shared.take_all(items, now))[0] is None
    refusal, decisions = await shared.take_all(items, now)
    assert refusal is not None
    assert len(decisions) == 2  # the refusing bucket is the second
    # The refused request cost the wide bucket nothing: 8 left, as after two requests.
    assert (await shared.take_all([("g", 1.0, wide)], now))[1][0].remaining == 7


async def test_one_tick_of_requests_is_one_round_trip(state: SharedState, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = RedisBackend(state, redis_time=False, leases=False)
    rule = LimitRule(scope="global", rate=1000, period=60, algorithm="fixed_window")
    pipelines = counting(state, monkeypatch)
    limiter = Limiter(shared, clock=lambda: 1_700_000_010.0)
    results = await asyncio.gather(*(limiter.check([("g", 1.0, rule)]) for _ in range(50)))
    assert all(refusal is None for refusal, _ in results)
    assert pipelines == [50]
    remaining = sorted(decisions[0].remaining for _, decisions in results)
    assert remaining == [float(n) for n in range(950, 1000)]  # each take saw the one before it


async def test_redis_time_is_the_clock(state: SharedState) -> None:
    # A limiter whose own clock is far off still counts in Redis's windows.
    limiter = Limiter(RedisBackend(state), clock=lambda: 42.0)
    rule = LimitRule(scope="global", rate=2, period=3600, algorithm="fixed_window")
    decisions = [(await limiter.check([("g", 1.0, rule)]))[1][0] for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert 0 < decisions[2].retry_after <= 3600


async def test_unanswered_calls_follow_on_error() -> None:
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    rule = LimitRule(scope="global", rate=1, period=60)
    allow = SharedState(StateConfig(backend="redis", url=dead, timeout_ms=200, on_error="allow"))
    limiter = Limiter(RedisBackend(allow))
    first = await limiter.check([("g", 1.0, rule)])
    second = await limiter.check([("g", 1.0, rule)])
    # Admitted and limited in this process meanwhile: the second request is over this process's limit.
    assert (first[0], second[0] is not None) == (None, True)
    assert not allow.available  # backing off: the next call does not wait for a timeout
    assert allow.errors == 2  # modelrouter_state_errors_total: both calls
    await allow.aclose()
    deny = SharedState(StateConfig(backend="redis", url=dead, timeout_ms=200, on_error="deny"))
    with pytest.raises(SharedStateUnavailable) as refused:
        await Limiter(RedisBackend(deny)).check([("g", 1.0, rule)])
    assert (refused.value.status, refused.value.type) == (503, "overloaded_error")
    await deny.aclose()


# --- daily and monthly quotas ------------------------------------------------------------------------------------


async def test_shared_quotas_count_as_the_in_process_ones(state: SharedState) -> None:
    from datetime import UTC, datetime

    now = [datetime(2024, 1, 31, 23, 0, tzinfo=UTC).timestamp()]
    shared, reference = SharedQuota(state, clock=lambda: now[0]), Quota(clock=lambda: now[0])
    quotas = KeyQuotas(daily_requests=5, daily_tokens=1000, monthly_requests=8, monthly_tokens=5000)
    rng = random.Random("quotas")
    for step in range(120):
        now[0] += rng.choice((1.0, 60.0, 600.0))  # across midnight and into February
        if step % 5 == 4:
            delta = rng.choice((-200.0, 50.0, 300.0))
            await shared.reconcile("k", tokens=delta)
            await reference.reconcile("k", tokens=delta)
            continue
        tokens = rng.choice((0.0, 100.0, 400.0))
        assert await shared.take("k", quotas, tokens) == await reference.take("k", quotas, tokens), step


async def test_a_quota_is_seeded_once_whichever_replica_comes_first(state: SharedState) -> None:
    first, second = SharedQuota(state), SharedQuota(state)
    await first.seed("k", day_requests=4, month_requests=9)
    await second.seed("k", day_requests=4, month_requests=9)  # another replica starting: not added again
    refusal = await second.take("k", KeyQuotas(daily_requests=5))
    assert refusal is None
    refusal = await first.take("k", KeyQuotas(daily_requests=5))
    assert refusal is not None
    assert (refusal.quota, refusal.used) == ("daily_requests", 5)


# --- requests in flight --------------------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):  # a release is sent in the background: let it reach Redis
        await asyncio.sleep(0.01)


async def test_max_concurrent_counts_every_replicas_leases(state: SharedState) -> None:
    one, two = SharedConcurrency(state), SharedConcurrency(state)
    assert await one.acquire("k", 2)
    assert await two.acquire("k", 2)
    assert not await one.acquire("k", 2)  # two in flight in all, whoever holds them
    assert not await two.acquire("k", 2)
    assert (one.in_flight("k"), two.in_flight("k")) == (1, 1)  # each replica's own, for /admin/api/state
    two.release("k")
    await _settle()
    assert await one.acquire("k", 2)
    assert one.in_flight("k") == 2


async def test_a_dead_replicas_leases_expire_and_a_live_ones_are_renewed(
    state: SharedState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_module, "LEASE_SECONDS", 0.6)
    alive, dead = SharedConcurrency(state), SharedConcurrency(state)
    assert await alive.acquire("k", 2)
    assert await dead.acquire("k", 2)
    assert dead._renewer is not None
    dead._renewer.cancel()  # the replica is gone: nothing renews or releases its lease
    await asyncio.sleep(1.2)  # two lease times: the alive replica renewed its lease meanwhile, the dead one did not
    other = SharedConcurrency(state)
    assert await other.acquire("k", 2)  # the dead replica's slot is free again
    assert not await other.acquire("k", 2)  # the alive replica's is still held
    alive.release("k")
    await _settle()
    assert await other.acquire("k", 2)


# --- admin login throttling --------------------------------------------------------------------------------------


async def test_login_attempts_count_for_every_replica(state: SharedState) -> None:
    from modelrouter.admin.ratelimit import SharedAttemptLimiter

    one, two = SharedAttemptLimiter(state), SharedAttemptLimiter(state)
    limits = (("user:admin ip:10.0.0.1", 3), ("all", 100))
    assert [await (one if n % 2 else two).attempt(*limits) for n in range(3)] == [None, None, None]
    wait = await one.attempt(*limits)  # the fourth, on either replica
    assert wait is not None
    assert 59 < wait <= 60
    assert await two.attempt(("user:admin ip:10.0.0.2", 3), ("all", 100)) is None  # another address is not throttled
