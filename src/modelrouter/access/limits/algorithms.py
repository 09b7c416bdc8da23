"""Rate-limit algorithms as state transitions: one class each, and the ``ALGORITHMS`` name -> class table.

Every step is a function of its arguments only (state, cost, ``now``, rule): no clock, no I/O. A state is a small
``dict[str, float]``. That is what lets a shared backend run the same step as one atomic script (Redis: HGETALL,
compute, HSET, PEXPIREAT ``expires``) and what makes the algorithms testable without sleeping. The step updates
the state it is given in place and returns it, so the in-process backend allocates nothing but the Decision.

    algorithm       state                 admits when
    token_bucket    tokens, at            the bucket holds ``cost`` (capacity burst or rate, refilled rate/period per s)
    leaky_bucket    tat                   the request conforms after waiting at most ``max_wait`` (GCRA)
    sliding_window  start, prev, curr     prev * (its share still in [now - period, now)) + curr + cost <= rate
    fixed_window    start, count          count + cost <= rate within [floor(now / period) * period, + period)
    warmup          tokens, at, heat      a token bucket whose rate and capacity ramp up with use and down with idle

Besides ``take``, each algorithm has ``adjust`` (a signed correction without a decision: reconciling a token
estimate with real usage, or refunding a take) and ``expires`` (from when a state behaves exactly like a fresh
one, so a backend may drop it).
"""

from __future__ import annotations

import math

from ...config.model import LimitRule
from .base import Decision

# Decisions are built with tuple.__new__: half the cost of calling the class, once per bucket per request.
_new = tuple.__new__

__all__ = ["ALGORITHMS", "Algorithm", "FixedWindow", "LeakyBucket", "SlidingWindow", "State", "TokenBucket", "Warmup"]

State = dict[str, float]

# Slack when comparing floats: 0.1 s of refill at 3 units/s must admit a cost of 0.3, though 0.1 * 3 < 0.3 in binary.
_EPS = 1e-9


class Algorithm:
    """The steps of one algorithm. Stateless: the table holds the classes, nothing is instantiated."""

    name = ""

    @staticmethod
    def take(state: State | None, cost: float, now: float, rule: LimitRule) -> tuple[State, Decision]:
        """Try to admit ``cost`` units at ``now``. ``state`` is ``None`` for a key never seen (or dropped)."""
        raise NotImplementedError

    @staticmethod
    def adjust(state: State | None, delta: float, now: float, rule: LimitRule) -> State:
        """Consume ``delta`` more units (may go into debt), or refund ``-delta`` (never past a fresh state)."""
        raise NotImplementedError

    @staticmethod
    def expires(state: State, rule: LimitRule) -> float:
        """The time from which ``state`` behaves exactly like a fresh one."""
        raise NotImplementedError


# -- token bucket ----------------------------------------------------------------------------------------------


def _refill(state: State, now: float, capacity: float, fill: float) -> float:
    """Move a bucket to ``now`` and return its tokens. A clock that went back refills nothing."""
    elapsed = now - state["at"]
    if elapsed > 0:
        state["at"] = now
    else:
        elapsed = 0.0
    tokens = state["tokens"] + elapsed * fill
    if tokens > capacity:  # also trims a bucket whose configured capacity was lowered
        tokens = capacity
    state["tokens"] = tokens
    return tokens


class TokenBucket(Algorithm):
    """Holds up to ``burst`` (default ``rate``) units, refilled at ``rate / period`` per second; a take is admitted
    if the bucket holds its cost. Debt from ``adjust`` is negative tokens, paid back by the refill."""

    name = "token_bucket"

    @staticmethod
    def take(state: State | None, cost: float, now: float, rule: LimitRule) -> tuple[State, Decision]:
        rate = rule.rate
        capacity = rule.burst or rate
        fill = rate / rule.period
        if state is None:
            state = {"tokens": capacity, "at": now}
            tokens = capacity
        else:  # _refill, inlined: this runs for every bucket of every request
            elapsed = now - state["at"]
            if elapsed > 0:
                state["at"] = now
                tokens = state["tokens"] + elapsed * fill
                if tokens > capacity:
                    tokens = capacity
            else:
                tokens = state["tokens"]
                if tokens > capacity:
                    tokens = capacity
        if tokens + _EPS >= cost:
            tokens -= cost
            state["tokens"] = tokens
            return state, _new(
                Decision, (True, tokens if tokens > 0.0 else 0.0, capacity, 0.0, (capacity - tokens) / fill, 0.0)
            )
        state["tokens"] = tokens  # the refill up to now, kept though nothing was taken
        retry = (cost - tokens) / fill if cost <= capacity else math.inf
        return state, _new(Decision, (False, max(tokens, 0.0), capacity, retry, (capacity - tokens) / fill, 0.0))

    @staticmethod
    def adjust(state: State | None, delta: float, now: float, rule: LimitRule) -> State:
        capacity = rule.burst or rule.rate
        if state is None:
            state = {"tokens": capacity, "at": now}
        state["tokens"] = min(_refill(state, now, capacity, rule.rate / rule.period) - delta, capacity)
        return state

    @staticmethod
    def expires(state: State, rule: LimitRule) -> float:
        return state["at"] + ((rule.burst or rule.rate) - state["tokens"]) * rule.period / rule.rate


# -- leaky bucket ----------------------------------------------------------------------------------------------


class LeakyBucket(Algorithm):
    """GCRA (virtual scheduling): units drain at ``rate / period``; ``tat`` is when the backlog would be empty.
    A take conforms if, with its cost added, the backlog is at most ``burst`` units (default 1: no bunching).
    One that would conform after waiting ``w <= max_wait`` is admitted with ``wait = w``: the caller holds it
    that long, so ``max_wait`` is a bounded queue in front of the upstream rather than a refusal."""

    name = "leaky_bucket"

    @staticmethod
    def take(state: State | None, cost: float, now: float, rule: LimitRule) -> tuple[State, Decision]:
        interval = rule.period / rule.rate  # seconds per unit
        tolerance = (rule.burst or 1.0) * interval
        horizon = tolerance + rule.max_wait  # the most backlog, in seconds, a take may leave behind
        limit = horizon / interval
        if state is None:
            state = {"tat": now}
        backlog = state["tat"] - now
        if backlog < 0:
            backlog = 0.0
        after = backlog + cost * interval
        if after <= horizon + _EPS:
            state["tat"] = now + after
            wait = after - tolerance
            return state, _new(
                Decision, (True, max((horizon - after) / interval, 0.0), limit, 0.0, after, wait if wait > 0 else 0.0)
            )
        retry = after - horizon if cost * interval <= horizon + _EPS else math.inf
        return state, _new(Decision, (False, max((horizon - backlog) / interval, 0.0), limit, retry, backlog, 0.0))

    @staticmethod
    def adjust(state: State | None, delta: float, now: float, rule: LimitRule) -> State:
        if state is None:
            state = {"tat": now}
        tat = max(state["tat"], now) + delta * rule.period / rule.rate
        state["tat"] = max(tat, now)
        return state

    @staticmethod
    def expires(state: State, rule: LimitRule) -> float:
        return state["tat"]


# -- windows ---------------------------------------------------------------------------------------------------


class SlidingWindow(Algorithm):
    """Sliding-window counter: a count per aligned window, the previous one weighted by how much of it the
    window [now - period, now) still covers (assuming its requests were spread evenly). Two numbers per key
    instead of a log of timestamps; admits if that estimate plus ``cost`` stays within ``rate``."""

    name = "sliding_window"

    @staticmethod
    def take(state: State | None, cost: float, now: float, rule: LimitRule) -> tuple[State, Decision]:
        period = rule.period
        rate = rule.rate
        state = _slide(state, now, period)
        start = state["start"]
        prev = state["prev"]
        curr = state["curr"]
        elapsed = now - start if now > start else 0.0
        used = prev * (1.0 - elapsed / period) + curr
        if used + cost <= rate + _EPS:
            state["curr"] = curr + cost
            reset = _sliding_reset(start, prev, curr + cost, now, period)
            return state, _new(Decision, (True, max(rate - used - cost, 0.0), rate, 0.0, reset, 0.0))
        retry = _sliding_retry(prev, curr, elapsed, cost, rate, period)
        return state, _new(
            Decision, (False, max(rate - used, 0.0), rate, retry, _sliding_reset(start, prev, curr, now, period), 0.0)
        )

    @staticmethod
    def adjust(state: State | None, delta: float, now: float, rule: LimitRule) -> State:
        state = _slide(state, now, rule.period)
        curr = state["curr"] + delta
        if curr < 0:  # a refund larger than this window's count comes out of the previous window
            state["prev"] = max(state["prev"] + curr, 0.0)
            curr = 0.0
        state["curr"] = curr
        return state

    @staticmethod
    def expires(state: State, rule: LimitRule) -> float:
        windows = 2 if state["curr"] > 0 else 1 if state["prev"] > 0 else 0
        return state["start"] + windows * rule.period


def _slide(state: State | None, now: float, period: float) -> State:
    start = now // period * period
    if state is None:
        return {"start": start, "prev": 0.0, "curr": 0.0}
    if start > state["start"]:
        # The window just before keeps its count as the previous one; anything older has slid out.
        state["prev"] = state["curr"] if start - state["start"] < 1.5 * period else 0.0
        state["curr"] = 0.0
        state["start"] = start
    return state


def _sliding_retry(prev: float, curr: float, elapsed: float, cost: float, rate: float, period: float) -> float:
    room = rate - cost  # the most the estimate may be for this cost to fit
    if room < -_EPS:
        return math.inf
    if curr <= room and prev > 0:
        # It fits before this window ends, once enough of the previous window has slid out.
        return max(period * (1.0 - (room - curr) / prev) - elapsed, 0.0)
    # From the next window on, this window's count is the one sliding out.
    later = period * (1.0 - room / curr) if curr > 0 else 0.0
    return period - elapsed + max(later, 0.0)


def _sliding_reset(start: float, prev: float, curr: float, now: float, period: float) -> float:
    """Until the estimate is zero: the end of the next window if this one has counts, else of this one."""
    if curr > 0:
        return start + 2 * period - now
    if prev > 0:
        return start + period - now
    return 0.0


class FixedWindow(Algorithm):
    """A count per aligned window [floor(now / period) * period, + period), reset at each boundary. Debt from
    ``adjust`` lasts until the window ends."""

    name = "fixed_window"

    @staticmethod
    def take(state: State | None, cost: float, now: float, rule: LimitRule) -> tuple[State, Decision]:
        period = rule.period
        rate = rule.rate
        state = _fix(state, now, period)
        count = state["count"]
        reset = state["start"] + period - now
        if count + cost <= rate + _EPS:
            count += cost
            state["count"] = count
            return state, _new(Decision, (True, max(rate - count, 0.0), rate, 0.0, reset, 0.0))
        return state, _new(
            Decision, (False, max(rate - count, 0.0), rate, reset if cost <= rate else math.inf, reset, 0.0)
        )

    @staticmethod
    def adjust(state: State | None, delta: float, now: float, rule: LimitRule) -> State:
        state = _fix(state, now, rule.period)
        state["count"] = max(state["count"] + delta, 0.0)
        return state

    @staticmethod
    def expires(state: State, rule: LimitRule) -> float:
        return state["start"] + rule.period


def _fix(state: State | None, now: float, period: float) -> State:
    start = now // period * period
    if state is None:
        return {"start": start, "count": 0.0}
    if start > state["start"]:
        state["start"] = start
        state["count"] = 0.0
    return state


# -- warm-up ---------------------------------------------------------------------------------------------------


class Warmup(Algorithm):
    """A token bucket that warms up, after Guava's SmoothWarmingUp. ``heat`` (0 .. ``warmup`` seconds) scales
    both the refill rate and the size of the bucket, from ``1 / cold_factor`` of the configured ones when cold
    to all of them when warm. While the bucket holds less than its cold size it is in use, and heats a second
    per second; above that it is idle, and cools as fast. So after idling the permitted rate starts at
    rate / cold_factor and ramps linearly to rate over ``warmup`` seconds of sustained use; a steady load keeps
    it near its own level, with the cold size in the bucket as headroom. A fresh key starts cold and full.

    The mark between use and idle is the cold size, not the current one, because the current size grows with
    heat: measured against it, a bucket refilling slower than it grows would count as in use with no load.

    A take larger than the current size (within the warm one) is admitted from a full bucket and leaves it in
    debt, as Guava lets the next caller pay: it could never pass otherwise, since a cold bucket is never big
    enough. Its ``retry_after`` is an estimate, the size changing as the bucket warms or cools meanwhile.
    """

    name = "warmup"

    @staticmethod
    def take(state: State | None, cost: float, now: float, rule: LimitRule) -> tuple[State, Decision]:
        capacity = rule.burst or rule.rate
        if state is None:
            state = _cold(now, rule, capacity)
        tokens, share = _warm(state, now, rule, capacity)
        size = capacity * share
        fill = rule.rate / rule.period * share
        if tokens + _EPS >= cost or (tokens + _EPS >= size and cost <= capacity):
            tokens -= cost
            state["tokens"] = tokens
            return state, _new(Decision, (True, max(tokens, 0.0), capacity, 0.0, (size - tokens) / fill, 0.0))
        retry = (min(cost, size) - tokens) / fill if cost <= capacity else math.inf
        return state, _new(Decision, (False, max(tokens, 0.0), capacity, retry, (size - tokens) / fill, 0.0))

    @staticmethod
    def adjust(state: State | None, delta: float, now: float, rule: LimitRule) -> State:
        capacity = rule.burst or rule.rate
        if state is None:
            state = _cold(now, rule, capacity)
        tokens, share = _warm(state, now, rule, capacity)
        state["tokens"] = min(tokens - delta, capacity * share)
        return state

    @staticmethod
    def expires(state: State, rule: LimitRule) -> float:
        # In use (heating) until it holds the cold size again, then idle until all the heat is gone.
        capacity = rule.burst or rule.rate
        cold = _share(0.0, rule)
        fill = rule.rate / rule.period * _share(state["heat"], rule)
        busy = max(capacity * cold - state["tokens"], 0.0) / fill
        return state["at"] + busy + min(state["heat"] + busy, rule.warmup)


def _cold(now: float, rule: LimitRule, capacity: float) -> State:
    return {"tokens": capacity * _share(0.0, rule), "at": now, "heat": 0.0}


def _share(heat: float, rule: LimitRule) -> float:
    """The share of the configured rate and capacity permitted at ``heat``."""
    cold = 1.0 / rule.cold_factor
    return cold + (1.0 - cold) * heat / rule.warmup


def _warm(state: State, now: float, rule: LimitRule, capacity: float) -> tuple[float, float]:
    """Move a warm-up bucket to ``now``; return its tokens and share. The refill over the step uses the rate at
    its start: steps are short while the bucket is in use, and an idle bucket fills whatever the rate."""
    heat = state["heat"]
    share = _share(heat, rule)
    tokens = state["tokens"]
    elapsed = now - state["at"]
    if elapsed <= 0:
        return tokens, share
    fill = rule.rate / rule.period * share
    mark = capacity * _share(0.0, rule)
    busy = (mark - tokens) / fill if tokens < mark else 0.0
    if busy > elapsed:
        busy = elapsed
    tokens = min(tokens + elapsed * fill, capacity * share)
    heat = max(min(heat + busy, rule.warmup) - (elapsed - busy), 0.0)
    share = _share(heat, rule)
    size = capacity * share
    if tokens > size:  # cooling shrinks the bucket
        tokens = size
    state["tokens"] = tokens
    state["at"] = now
    state["heat"] = heat
    return tokens, share


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (TokenBucket, LeakyBucket, SlidingWindow, FixedWindow, Warmup)
}
