"""Rate-limit algorithms, the memory backend, the limiter, concurrency and quotas: every clock is injected, nothing
sleeps."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from modelrouter.access import limits
from modelrouter.access.limits import (
    ALGORITHMS,
    Concurrency,
    Decision,
    Limiter,
    MemoryBackend,
    Quota,
    QuotaRefusal,
    State,
    key_rate_rules,
)
from modelrouter.config.model import KeyQuotas, LimitAlgorithm, LimitRule


def rule(algorithm: LimitAlgorithm = "token_bucket", **settings: Any) -> LimitRule:
    settings.setdefault("rate", 2)
    settings.setdefault("period", 1)
    return LimitRule(scope="key", algorithm=algorithm, **settings)


class Bucket:
    """One key's state, stepped by hand through an algorithm."""

    def __init__(self, rule: LimitRule) -> None:
        self.rule = rule
        self.algorithm = ALGORITHMS[rule.algorithm]
        self.state: State | None = None

    def take(self, now: float, cost: float = 1.0) -> Decision:
        self.state, decision = self.algorithm.take(self.state, cost, now, self.rule)
        return decision

    def adjust(self, now: float, delta: float) -> None:
        self.state = self.algorithm.adjust(self.state, delta, now, self.rule)

    def try_copy(self, now: float, cost: float) -> Decision:
        """What a take would answer, leaving the state alone."""
        return self.algorithm.take(None if self.state is None else dict(self.state), cost, now, self.rule)[1]


def outcome(decision: Decision) -> tuple[bool, float, float]:
    """allowed, remaining, retry_after, without float noise."""
    return decision.allowed, round(decision.remaining, 9), round(decision.retry_after, 9)


def saturate(bucket: Bucket, start: float, end: float) -> dict[int, int]:
    """Ask every 10 ms from ``start`` to ``end``; admissions per whole second of the clock."""
    admitted: dict[int, int] = {}
    for i in range(round(start * 100), round(end * 100)):
        if bucket.take(i / 100).allowed:
            admitted[i // 100] = admitted.get(i // 100, 0) + 1
    return admitted


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_exports() -> None:
    assert limits.__all__ == [
        "ALGORITHMS",
        "Algorithm",
        "Concurrency",
        "Decision",
        "FixedWindow",
        "LeakyBucket",
        "Limiter",
        "MemoryBackend",
        "Quota",
        "QuotaRefusal",
        "QuotaUsage",
        "SlidingWindow",
        "State",
        "StateBackend",
        "TokenBucket",
        "Warmup",
        "key_rate_rules",
    ]
    for name in limits.__all__:
        assert getattr(limits, name) is not None
    assert set(ALGORITHMS) == {"token_bucket", "leaky_bucket", "sliding_window", "fixed_window", "warmup"}


# -- token bucket ----------------------------------------------------------------------------------------------


def test_token_bucket_admits_its_capacity_then_refills_at_the_rate() -> None:
    b = Bucket(rule(rate=2, period=1, burst=2))
    assert [outcome(b.take(0)) for _ in range(3)] == [(True, 1, 0), (True, 0, 0), (False, 0, 0.5)]
    assert outcome(b.take(0.5)) == (True, 0, 0)
    assert outcome(b.take(0.5)) == (False, 0, 0.5)
    assert outcome(b.take(1.25)) == (True, 0.5, 0)
    assert outcome(b.take(1.25)) == (False, 0.5, 0.25)
    long_after = b.take(10)  # refilled to the capacity, not beyond
    assert outcome(long_after) == (True, 1, 0)
    assert long_after.limit == 2
    assert long_after.reset_after == 0.5


def test_token_bucket_burst_sets_the_capacity() -> None:
    b = Bucket(rule(rate=1, period=1, burst=5))
    assert all(b.take(0).allowed for _ in range(5))
    refused = b.take(0)
    assert outcome(refused) == (False, 0, 1)
    assert refused.limit == 5
    assert refused.reset_after == 5


def test_token_bucket_counts_tokens_per_period() -> None:
    b = Bucket(rule(rate=600, period=60, unit="tokens"))  # 10 tokens a second
    assert outcome(b.take(0, 250)) == (True, 350, 0)
    assert outcome(b.take(0, 250)) == (True, 100, 0)
    assert b.take(0, 0).reset_after == 50
    assert outcome(b.take(0, 250)) == (False, 100, 15)
    assert b.take(0, 700).retry_after == math.inf  # more than the bucket holds: never


# -- leaky bucket ----------------------------------------------------------------------------------------------


def test_leaky_bucket_queues_with_growing_wait_then_refuses() -> None:
    b = Bucket(rule("leaky_bucket", rate=4, period=1, max_wait=0.5))  # one every 0.25 s
    admitted = [b.take(0) for _ in range(3)]
    assert [d.allowed for d in admitted] == [True, True, True]
    assert [d.wait for d in admitted] == [0, 0.25, 0.5]
    assert [d.remaining for d in admitted] == [2, 1, 0]  # one in the bucket plus two queued
    assert [d.reset_after for d in admitted] == [0.25, 0.5, 0.75]
    assert admitted[0].limit == 3
    refused = b.take(0)
    assert outcome(refused) == (False, 0, 0.25)
    assert refused.wait == 0
    later = b.take(0.25)  # the first has drained: the queue has room for one more, at the longest wait
    assert later.allowed
    assert later.wait == 0.5
    assert b.take(10).wait == 0


def test_leaky_bucket_without_a_queue_spaces_requests() -> None:
    b = Bucket(rule("leaky_bucket", rate=2, period=1))
    assert outcome(b.take(0)) == (True, 0, 0)
    assert outcome(b.take(0)) == (False, 0, 0.5)
    assert outcome(b.take(0.5)) == (True, 0, 0)
    assert outcome(b.take(0.75)) == (False, 0.5, 0.25)  # half a unit would fit: remaining is fractional
    assert outcome(b.take(1.0)) == (True, 0, 0)


def test_leaky_bucket_burst_is_a_tolerance_in_units() -> None:
    b = Bucket(rule("leaky_bucket", rate=2, period=1, burst=3))
    assert [(d.allowed, d.wait) for d in (b.take(0) for _ in range(3))] == [(True, 0), (True, 0), (True, 0)]
    assert outcome(b.take(0)) == (False, 0, 0.5)
    assert b.take(0, 4).retry_after == math.inf  # more than burst + queue: never


# -- windows ---------------------------------------------------------------------------------------------------


def test_sliding_window_weights_the_previous_window_by_its_overlap() -> None:
    b = Bucket(rule("sliding_window", rate=10, period=10))
    first = b.take(5)
    assert first.reset_after == 15  # empty once the next window [10, 20) has slid past this one
    assert all(b.take(5).allowed for _ in range(9))
    # Full; at t=11 the window [0, 10) weighs 0.9, so 9 + 1 fits.
    assert outcome(b.take(5)) == (False, 0, 6)
    assert not b.take(10.99).allowed
    assert outcome(b.take(11)) == (True, 0, 0)
    assert outcome(b.take(11)) == (False, 0, 1)  # at 12: 10 * 0.8 + 1 + 1
    # At 15 the old window weighs 0.5: 5 + 1 counted, room for 4.
    assert [outcome(b.take(15)) for _ in range(5)] == [
        (True, 3, 0),
        (True, 2, 0),
        (True, 1, 0),
        (True, 0, 0),
        (False, 0, 1),
    ]
    # At 25 the window [10, 20) holds 5 and weighs 0.5: 2.5 counted.
    assert [b.take(25).allowed for _ in range(8)] == [True] * 7 + [False]
    assert b.take(40).remaining == 9  # two windows on, nothing is left of either


def test_fixed_window_resets_at_the_aligned_boundary() -> None:
    b = Bucket(rule("fixed_window", rate=3, period=10))
    assert [outcome(b.take(5)) for _ in range(4)] == [(True, 2, 0), (True, 1, 0), (True, 0, 0), (False, 0, 5)]
    assert b.take(5).reset_after == 5  # the window is [0, 10), not [5, 15)
    assert not b.take(9.99).allowed
    boundary = b.take(10)
    assert outcome(boundary) == (True, 2, 0)
    assert boundary.reset_after == 10
    assert b.take(10, 4).retry_after == math.inf


# -- warm-up ---------------------------------------------------------------------------------------------------


WARMUP = {"rate": 9, "period": 1, "cold_factor": 3, "warmup": 10}  # cold: 3 a second, bucket of 3


def test_warmup_starts_cold_and_ramps_linearly_to_the_rate_under_sustained_use() -> None:
    b = Bucket(rule("warmup", **WARMUP))
    assert [b.take(0).allowed for _ in range(4)] == [True, True, True, False]  # the cold bucket: 9 / 3
    per_second = saturate(b, 0.01, 15)
    assert 3 <= per_second[0] <= 4  # refilled at about 9 / 3 a second, warming meanwhile
    assert 3 <= per_second[1] <= 4
    assert 6 <= per_second[5] <= 7  # halfway: 3 + 6 * 5.5 / 10
    assert [per_second[s] for s in range(10, 15)] == [9] * 5  # warm after `warmup` seconds of use
    assert all(per_second[s] <= per_second[s + 1] + 1 for s in range(14))  # never falls while in use


def test_warmup_cools_down_when_idle() -> None:
    warm = Bucket(rule("warmup", **WARMUP))
    saturate(warm, 0, 15)
    half = Bucket(warm.rule)
    half.state = dict(warm.state or {})
    assert sum(warm.take(25).allowed for _ in range(10)) == 3  # idle for `warmup` seconds: cold again
    burst = sum(half.take(20).allowed for _ in range(10))  # idle half as long: half warm
    assert 5 <= burst <= 7
    assert 3 <= saturate(warm, 25.01, 26)[25] <= 4


def test_warmup_take_larger_than_the_cold_bucket_goes_into_debt() -> None:
    b = Bucket(rule("warmup", **WARMUP))
    assert outcome(b.take(0, 6)) == (True, 0, 0)  # more than the cold bucket, within the warm one
    assert outcome(b.take(0)) == (False, 0, round(4 / 3, 9))  # 3 in debt + 1, at 3 a second
    assert b.take(0, 10).retry_after == math.inf


# -- adjust ----------------------------------------------------------------------------------------------------


def test_token_bucket_adjust_refunds_up_to_capacity_and_consumes_into_debt() -> None:
    b = Bucket(rule(rate=2, period=1, burst=2))
    b.take(0)
    b.take(0)
    b.adjust(0, -5)
    assert outcome(b.take(0)) == (True, 1, 0)  # refunded to the capacity, not beyond
    b.adjust(0, 3)
    assert b.state == {"tokens": -2, "at": 0}
    assert outcome(b.take(0)) == (False, 0, 1.5)  # the debt is paid back by the refill first
    assert b.take(1.5).allowed


RULES = {
    "token_bucket": rule("token_bucket", rate=5, period=1, burst=3),
    "leaky_bucket": rule("leaky_bucket", rate=5, period=1, burst=2, max_wait=0.3),
    "sliding_window": rule("sliding_window", rate=5, period=1),
    "fixed_window": rule("fixed_window", rate=5, period=1),
    "warmup": rule("warmup", rate=10, period=1, cold_factor=2, warmup=3),  # the cold bucket holds 5
}


def history(bucket: Bucket, rng: random.Random, steps: int = 40) -> float:
    """Random takes and adjustments; returns the time reached."""
    now = 0.0
    for _ in range(steps):
        now += rng.choice((0.0, 0.0, rng.random() * 0.3))
        if rng.random() < 0.2:
            bucket.adjust(now, rng.choice((-2.0, -0.5, 0.5, 1.0)))
        else:
            bucket.take(now, rng.choice((1.0, 1.0, 2.0, 0.5)))
    return now


@pytest.mark.parametrize("name", RULES)
def test_refund_after_a_take_leaves_the_bucket_as_it_was(name: str) -> None:
    for seed in range(50):
        with_refund, without = Bucket(RULES[name]), Bucket(RULES[name])
        now = history(with_refund, random.Random(seed))
        history(without, random.Random(seed))
        if with_refund.take(now, 2).allowed:
            with_refund.adjust(now, -2)
        for later in (now, now + 0.1, now + 0.7):
            a, b = with_refund.try_copy(later, 1), without.try_copy(later, 1)
            assert a.allowed == b.allowed
            assert a.remaining == pytest.approx(b.remaining)
            assert a.retry_after == pytest.approx(b.retry_after)


@pytest.mark.parametrize("name", RULES)
def test_debt_refuses_until_paid_back_and_refunds_stop_at_fresh(name: str) -> None:
    bucket = Bucket(RULES[name])
    bucket.adjust(0, 2 * bucket.rule.rate)
    refused = bucket.take(0)
    assert not refused.allowed
    assert 0 < refused.retry_after < math.inf
    assert bucket.try_copy(refused.retry_after + 1e-9, 1).allowed

    refunded = Bucket(RULES[name])
    refunded.adjust(0, -1000)
    assert refunded.take(0).remaining == pytest.approx(Bucket(RULES[name]).take(0).remaining)


# -- properties of every algorithm -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULES)
def test_retry_after_is_when_the_same_cost_is_admitted(name: str) -> None:
    rng = random.Random(11)
    bucket = Bucket(RULES[name])
    now = 0.0
    refusals = 0
    for _ in range(3000):
        now += rng.choice((0.0, 0.0, rng.random() * 0.2))
        cost = rng.choice((1.0, 1.0, 2.0, 0.5))
        decision = bucket.take(now, cost)
        assert decision.remaining >= 0
        assert decision.reset_after >= 0
        if decision.allowed:
            assert decision.retry_after == 0
            continue
        refusals += 1
        assert 0 < decision.retry_after < math.inf
        assert bucket.try_copy(now + decision.retry_after + 1e-9, cost).allowed
        if name != "warmup":  # a cooling warm-up bucket shrinks under its tokens and may admit sooner
            assert not bucket.try_copy(now + decision.retry_after - 1e-6, cost).allowed
    assert refusals > 100


@pytest.mark.parametrize("name", RULES)
def test_an_expired_state_behaves_like_a_fresh_one(name: str) -> None:
    for seed in range(50):
        bucket = Bucket(RULES[name])
        now = history(bucket, random.Random(seed))
        assert bucket.state is not None
        at = max(bucket.algorithm.expires(bucket.state, bucket.rule), now) + 1e-9
        for cost in (1.0, 2.0, 5.0):
            kept, fresh = bucket.try_copy(at, cost), Bucket(bucket.rule).take(at, cost)
            assert (kept.allowed, kept.limit) == (fresh.allowed, fresh.limit)
            assert kept.remaining == pytest.approx(fresh.remaining)
            assert kept.reset_after == pytest.approx(fresh.reset_after)
            assert kept.wait == pytest.approx(fresh.wait)


# -- memory backend --------------------------------------------------------------------------------------------


async def test_memory_backend_keeps_one_state_per_key() -> None:
    backend = MemoryBackend()
    r = rule(rate=2, period=1)
    assert (await backend.take("a", 2, 0, r)).allowed
    assert not (await backend.take("a", 1, 0, r)).allowed
    assert (await backend.take("b", 1, 0, r)).allowed
    await backend.adjust("a", -1, 0, r)
    assert backend.state("a") == {"tokens": 1, "at": 0}
    await backend.adjust("c", -1, 0, r)  # a refund to a key never seen: nothing to remember
    assert backend.state("c") is None
    await backend.adjust("c", 3, 0, r)  # debt is remembered
    assert backend.state("c") == {"tokens": -1, "at": 0}
    assert len(backend) == 3
    assert repr(backend) == "<MemoryBackend 3 keys, sweep at 1024>"


async def test_memory_backend_sweeps_states_gone_back_to_fresh() -> None:
    backend = MemoryBackend(min_sweep=4)
    r = rule(rate=1, period=1)  # a drained bucket is full again after 1 s
    for key in ("a", "b", "c"):
        await backend.take(key, 1, 0, r)
    await backend.take("hot", 1, 4.5, r)
    assert len(backend) == 4
    await backend.take("new", 1, 5, r)  # the table reached min_sweep: a, b, c are swept, "hot" is not
    assert len(backend) == 2
    assert backend.state("a") is None
    assert backend.state("hot") is not None
    assert repr(backend).endswith("sweep at 4>")
    assert backend.sweep(100) == 2
    assert len(backend) == 0


async def test_memory_backend_grows_its_sweep_mark_with_the_live_keys() -> None:
    backend = MemoryBackend(min_sweep=2)
    r = rule(rate=1, period=100)
    for i in range(10):
        await backend.take(f"k{i}", 1, 0, r)  # all live: each sweep finds nothing and doubles the mark
    assert len(backend) == 10
    assert repr(backend).endswith("sweep at 16>")


async def test_memory_backend_keeps_state_across_a_reload_unless_the_algorithm_changed() -> None:
    backend = MemoryBackend()
    await backend.take("k", 2, 0, rule(rate=2))
    assert not (await backend.take("k", 1, 0, rule(rate=2))).allowed  # an equal rule, a new object: same state
    assert (await backend.take("k", 1, 0, rule("fixed_window", rate=2))).allowed  # another algorithm: fresh
    assert backend.state("k") == {"start": 0, "count": 1}


# -- limiter ---------------------------------------------------------------------------------------------------


async def test_limiter_admits_through_every_bucket_and_reports_each() -> None:
    clock = FakeClock(0)
    limiter = Limiter(MemoryBackend(), clock=clock)
    requests = rule(rate=10, period=1)
    queue = rule("leaky_bucket", rate=4, period=1, max_wait=1)
    refused, decisions = await limiter.check([("req", 1, requests), ("queue", 1, queue)])
    assert refused is None
    assert [d.remaining for d in decisions] == [9, 4]
    refused, decisions = await limiter.check([("req", 1, requests), ("queue", 1, queue)])
    assert refused is None
    assert max(d.wait for d in decisions) == 0.25
    assert repr(limiter) == "<Limiter <MemoryBackend 2 keys, sweep at 1024>>"


async def test_limiter_refunds_earlier_buckets_when_a_later_one_refuses() -> None:
    clock = FakeClock(0)
    backend = MemoryBackend()
    limiter = Limiter(backend, clock=clock)
    requests = rule(rate=10, period=1)
    queue = rule("leaky_bucket", rate=4, period=1, max_wait=1)
    tokens = rule(rate=100, period=1, unit="tokens")
    items = [("req", 1.0, requests), ("queue", 1.0, queue), ("tok", 80.0, tokens)]
    assert (await limiter.check(items))[0] is None
    before = {key: dict(backend.state(key) or {}) for key in ("req", "queue", "tok")}

    refused, decisions = await limiter.check(items)  # 80 tokens do not fit in the 20 left
    assert refused is not None
    # The refusal comes last: its position names the bucket that refused (the token bucket, third).
    assert len(decisions) == 3
    assert decisions[-1] is refused
    assert refused.retry_after == pytest.approx(0.6)
    assert {key: backend.state(key) for key in ("req", "queue", "tok")} == before


async def test_limiter_reconciles_estimates_with_real_usage() -> None:
    clock = FakeClock(0)
    backend = MemoryBackend()
    limiter = Limiter(backend, clock=clock)
    tokens = rule(rate=100, period=1, unit="tokens")
    await limiter.check([("tok", 30, tokens)])
    await limiter.reconcile([("tok", 50, tokens)])  # used 80, not 30
    assert backend.state("tok") == {"tokens": 20, "at": 0}
    await limiter.reconcile([("tok", -1000, tokens), ("untouched", 0, tokens)])
    assert backend.state("tok") == {"tokens": 100, "at": 0}
    assert backend.state("untouched") is None


# -- concurrency -----------------------------------------------------------------------------------------------


def test_concurrency_caps_requests_in_flight_per_key() -> None:
    slots = Concurrency()
    assert slots.try_acquire("a", 2)
    assert slots.try_acquire("a", 2)
    assert not slots.try_acquire("a", 2)
    assert slots.try_acquire("b", 2)
    assert repr(slots) == "<Concurrency 3 in flight over 2 keys>"
    slots.release("a")
    assert slots.in_flight("a") == 1
    assert slots.try_acquire("a", 2)
    for key in ("a", "a", "b"):
        slots.release(key)
    assert len(slots) == 0  # idle keys hold nothing
    slots.release("a")  # a release too many does not go negative
    assert slots.in_flight("a") == 0


# -- quotas ----------------------------------------------------------------------------------------------------


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


async def test_daily_quota_rolls_over_at_utc_midnight() -> None:
    clock = FakeClock(at(2024, 1, 15, 23, 59))
    quota = Quota(clock=clock)
    quotas = KeyQuotas(daily_requests=2, monthly_requests=3)
    assert await quota.take("k", quotas) is None
    assert await quota.take("k", quotas) is None
    assert await quota.take("k", quotas) == QuotaRefusal("daily_requests", 2, 2, 60)
    clock.advance(60)  # 2024-01-16 00:00 UTC
    assert await quota.take("k", quotas) is None
    assert await quota.take("k", quotas) == QuotaRefusal("monthly_requests", 3, 3, 16 * 86400)
    assert quota.usage("k").day_requests == 1
    assert quota.usage("k").month_requests == 3


async def test_monthly_quota_rolls_over_at_the_new_year() -> None:
    clock = FakeClock(at(2024, 12, 31, 12))
    quota = Quota(clock=clock)
    quotas = KeyQuotas(monthly_requests=1)
    assert await quota.take("k", quotas) is None
    refusal = await quota.take("k", quotas)
    assert refusal is not None
    assert refusal.retry_after == 12 * 3600
    clock.now = at(2025, 1, 1)
    assert await quota.take("k", quotas) is None


async def test_token_quota_reserves_the_estimate_and_reconciles() -> None:
    quota = Quota(clock=FakeClock(at(2024, 3, 1)))
    quotas = KeyQuotas(daily_tokens=1000)
    assert await quota.take("k", quotas, tokens=600) is None
    refusal = await quota.take("k", quotas, tokens=600)  # the estimate does not fit in what is left
    assert refusal is not None
    assert (refusal.quota, refusal.used) == ("daily_tokens", 600)
    await quota.reconcile("k", tokens=-300)  # it used 300
    assert await quota.take("k", quotas, tokens=600) is None
    assert await quota.take("k", quotas) is None  # no estimate: admitted while anything is left
    await quota.reconcile("k", tokens=200)
    assert await quota.take("k", quotas) is not None  # exhausted
    await quota.reconcile("k", requests=-100, tokens=-10_000)
    usage = quota.usage("k")
    assert (usage.day_requests, usage.day_tokens, usage.month_tokens) == (0, 0, 0)


async def test_quota_seed_and_keys_without_quotas() -> None:
    quota = Quota(clock=FakeClock(at(2024, 3, 1, 8)))
    await quota.seed("k", day_requests=5, month_tokens=70)
    refusal = await quota.take("k", KeyQuotas(daily_requests=5))
    assert refusal == QuotaRefusal("daily_requests", 5, 5, 16 * 3600)
    assert quota.usage("k").month_tokens == 70
    assert await quota.take("free", KeyQuotas(requests_per_minute=10)) is None
    await quota.reconcile("free", tokens=5)
    assert quota.usage("free").day_tokens == 0  # keys without quotas are not counted
    assert len(quota) == 1
    quota.forget("k")
    assert repr(quota) == "<Quota 0 keys>"


def test_key_rate_rules() -> None:
    quotas = KeyQuotas(requests_per_minute=60, tokens_per_minute=10_000, daily_requests=5)
    requests, tokens = key_rate_rules(quotas)
    assert (requests.scope, requests.algorithm, requests.rate, requests.period, requests.unit) == (
        "key",
        "token_bucket",
        60,
        60,
        "requests",
    )
    assert (tokens.rate, tokens.unit) == (10_000, "tokens")
    assert key_rate_rules(KeyQuotas(requests_per_minute=60, tokens_per_minute=10_000, daily_requests=5))[0] is requests
    assert key_rate_rules(KeyQuotas()) == ()
