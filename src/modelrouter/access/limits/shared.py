"""Limiter state and quota counts in Redis (``state.backend: redis``), shared by every process and replica.

All the buckets one request falls under are taken by one call of ``state/limits.lua``: the same algorithms as
``algorithms.py``, step for step, atomic in Redis, with Redis's clock (``TIME``) so that replicas whose clocks
differ still count one set of windows. All limits or none, as in this process: at a refusal the script gives the
earlier takes back before it returns. The calls of one event-loop tick share one pipeline (``SharedState``).

A key's daily and monthly quotas are counted by ``state/quota.lua`` (``SharedQuota``): the same rules as
``quota.py``, per UTC day and month, the counts expiring when their period has ended. A key's requests in flight
(``max_concurrent``) are leases in ``state/concurrency.lua`` (``SharedConcurrency``), renewed while held, so that
a replica that dies cannot keep them past ``LEASE_SECONDS``.

When Redis cannot answer, ``state.on_error`` decides: ``allow`` counts in this process instead (the request is
admitted and limited as one process would; the shared counts miss it), ``deny`` refuses with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...config.model import KeyQuotas, LimitRule
from ...errors import GatewayError
from ...state import SharedState, StateUnavailable, script
from .base import Decision
from .concurrency import Concurrency
from .leases import Leases, Plan
from .memory import MemoryBackend
from .quota import Quota, QuotaRefusal, has_quota

__all__ = ["LEASE_SECONDS", "RedisBackend", "SharedConcurrency", "SharedQuota", "SharedStateUnavailable"]

LEASE_SECONDS = 30.0  # how long a lease outlives a replica that stopped renewing it

_Item = tuple[str, float, LimitRule]
_Ask = tuple[str, float, float, LimitRule]  # key, amount, lease wanted, rule
# What limits.lua reads and answers, packed: a bucket's algorithm (by its place in ORDER) and rule, and a decision.
ORDER = ("token_bucket", "leaky_bucket", "sliding_window", "fixed_window", "warmup")
_BUCKET = struct.Struct("<Bdddddddd")
_DECISIONS = struct.Struct("<ddddddd")
_NUMBERS = {name: n for n, name in enumerate(ORDER, 1)}
_rules: dict[int, tuple[LimitRule, int, tuple[float, ...]]] = {}


def _rule_bytes(rule: LimitRule, amount: float, extra: float) -> bytes:
    """A bucket's part of the script's argument. The rule's numbers are looked up once per rule object."""
    entry = _rules.get(id(rule))
    if entry is None or entry[0] is not rule:
        if len(_rules) > 4096:
            _rules.clear()
        numbers = (rule.rate, rule.period, rule.burst or 0.0, rule.max_wait, rule.warmup, rule.cold_factor)
        entry = _rules[id(rule)] = (rule, _NUMBERS[rule.algorithm], numbers)
    return _BUCKET.pack(entry[1], amount, extra, *entry[2])


class SharedStateUnavailable(GatewayError):
    """``state.on_error: deny`` and Redis did not answer: the limits cannot be checked, so nothing is admitted."""

    status = 503
    type = "overloaded_error"
    code = "state_unavailable"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class RedisBackend:
    """Buckets in Redis, with leases (``leases.py``) so that a busy bucket far from its limit is mostly taken from
    in this process. ``leases=False`` sends every take to Redis; ``redis_time=False`` uses the ``now`` the limiter
    passes instead of Redis's clock (tests compare the script with the in-process algorithms at chosen times).
    ``clock`` is the limiter's: it times the leases, and ends them."""

    __slots__ = ("_returner", "clock", "leases", "local", "redis_time", "script", "state")

    def __init__(
        self,
        state: SharedState,
        *,
        redis_time: bool = True,
        leases: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.script = script("limits.lua")
        self.redis_time = redis_time
        self.clock = clock
        self.leases = Leases() if leases else None
        self.local = MemoryBackend()  # on_error: allow - the buckets used while Redis cannot answer
        self._returner: asyncio.Task[None] | None = None

    async def take_all(self, items: Sequence[_Item], now: float) -> tuple[Decision | None, list[Decision]]:
        leases = self.leases
        if leases is None:
            asks = [(key, cost, 0.0, rule) for key, cost, rule in items]
            return _decided(await self._take(asks, items, now))
        plan = leases.plan(items, now)
        if not isinstance(plan, Plan):
            return plan
        try:
            answers = await self._take(plan.asks, items, now)
        except BaseException:  # deny and Redis away, or the request cancelled: the leases take nothing
            leases.cancel(items, plan)
            raise
        if isinstance(answers, tuple):  # Redis away, on_error allow: this process decided the whole request
            leases.cancel(items, plan)
            return answers
        result = leases.settle(items, plan, answers, now)
        if leases and (self._returner is None or self._returner.done()):
            self._returner = asyncio.get_running_loop().create_task(self._return_forever(), name="lease returns")
        return result

    async def _take(
        self, asks: list[_Ask], items: Sequence[_Item], now: float
    ) -> list[tuple[Decision, float]] | tuple[Decision | None, list[Decision]]:
        """Redis's answers to ``asks``; when Redis cannot answer, the request's answer from this process's
        buckets (``on_error: allow``), or SharedStateUnavailable."""
        try:
            flat = await self.state.run(self.script, self._keys(asks), self._args("take", asks, now))
        except StateUnavailable as exc:
            if not self.state.allow_on_error:
                raise _unavailable("Rate limits") from exc
            return self.local.take_all(items, now)
        return [(Decision(allowed == 1.0, *rest), granted) for allowed, *rest, granted in _DECISIONS.iter_unpack(flat)]

    async def adjust_all(self, items: Sequence[_Item], now: float) -> None:
        if self.leases is not None:
            items = self.leases.adjust(items, now)
        if items:
            await self._adjust(items, now)

    async def _adjust(self, items: Sequence[_Item], now: float) -> None:
        # A correction Redis misses is lost (the request it corrects may have been counted there): applying it to
        # this process's buckets, which never counted that request, would be wrong twice.
        asks = [(key, delta, 0.0, rule) for key, delta, rule in items]
        with contextlib.suppress(StateUnavailable):
            await self.state.run(self.script, self._keys(asks), self._args("adjust", asks, now))

    async def _return_forever(self) -> None:
        """Give back what ended leases hold, every half lease lifetime, while there are leases."""
        leases = self.leases
        assert leases is not None
        while leases:
            await asyncio.sleep(leases.seconds / 2)
            now = self.clock()
            owed = leases.expired(now)
            if owed:
                await self._adjust(owed, now)

    async def aclose(self) -> None:
        """Give back every lease (at shutdown: another replica can use the units at once)."""
        if self._returner is not None:
            self._returner.cancel()
            await asyncio.gather(self._returner, return_exceptions=True)
        if self.leases is not None:
            owed = self.leases.drain()
            if owed:
                await self._adjust(owed, self.clock())

    async def take(self, key: str, cost: float, now: float, rule: LimitRule) -> Decision:
        _, decisions = await self.take_all([(key, cost, rule)], now)
        return decisions[-1]

    async def adjust(self, key: str, delta: float, now: float, rule: LimitRule) -> None:
        await self.adjust_all([(key, delta, rule)], now)

    def _keys(self, asks: Sequence[_Ask]) -> list[str]:
        prefix = self.state.prefix + "limit:"
        return [prefix + ask[0] for ask in asks]

    def _args(self, mode: str, asks: Sequence[_Ask], now: float) -> list[str | bytes]:
        packed = b"".join([_rule_bytes(rule, amount, extra) for _, amount, extra, rule in asks])
        return [mode, "" if self.redis_time else repr(now), packed]

    def __repr__(self) -> str:
        leases = "" if self.leases is None else f", {len(self.leases)} leases"
        return f"<RedisBackend {self.state!r}{leases}>"


def _decided(
    answers: list[tuple[Decision, float]] | tuple[Decision | None, list[Decision]],
) -> tuple[Decision | None, list[Decision]]:
    if isinstance(answers, tuple):
        return answers
    decisions = [decision for decision, _ in answers]
    last = decisions[-1]
    return (None if last.allowed else last), decisions


class SharedQuota(Quota):
    """Daily and monthly quotas counted in Redis; the calendar (which UTC day and month it is, when they end) is
    this process's, as in ``Quota``. ``local`` counts while Redis cannot answer (``on_error: allow``)."""

    __slots__ = ("local", "script", "state")

    def __init__(self, state: SharedState, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.state = state
        self.script = script("quota.lua")
        self.local = Quota(clock)

    def _keys(self, key: str) -> list[str]:
        prefix = f"{self.state.prefix}quota:{key}:"
        return [f"{prefix}d{self._day}", f"{prefix}m{self._month}"]

    def _ttls(self, now: float) -> list[str]:
        # Kept an hour past their period's end: a replica whose clock is behind still finds them.
        return [str(math.ceil((end - now + 3600) * 1000)) for end in (self._day_end, self._month_end)]

    async def take(self, key: str, quotas: KeyQuotas, tokens: float = 0.0) -> QuotaRefusal | None:
        if not has_quota(quotas):
            return None
        now = self._now()
        limits = [
            "" if limit is None else repr(float(limit))
            for limit in (quotas.daily_requests, quotas.daily_tokens, quotas.monthly_requests, quotas.monthly_tokens)
        ]
        args = ["take", repr(tokens), *self._ttls(now), *limits]
        try:
            refused = await self.state.run(self.script, self._keys(key), args)
        except StateUnavailable as exc:
            if not self.state.allow_on_error:
                raise _unavailable("Quotas") from exc
            return await self.local.take(key, quotas, tokens)
        if not refused:
            return None
        name = refused[0].decode()
        end = self._day_end if name.startswith("daily") else self._month_end
        return QuotaRefusal(name, float(refused[1]), float(refused[2]), end - now)

    async def reconcile(self, key: str, *, requests: int = 0, tokens: float = 0.0) -> None:
        now = self._now()
        args = ["adjust", repr(float(tokens)), *self._ttls(now), str(requests)]
        with contextlib.suppress(StateUnavailable):  # lost, as a limiter correction is (RedisBackend.adjust_all)
            await self.state.run(self.script, self._keys(key), args)

    async def seed(
        self,
        key: str,
        *,
        day_requests: int = 0,
        day_tokens: float = 0.0,
        month_requests: int = 0,
        month_tokens: float = 0.0,
    ) -> None:
        """Once per key and day (month), whichever replica comes first: the store's counts of the period."""
        now = self._now()
        args = ["seed", repr(float(day_tokens)), *self._ttls(now), str(day_requests), repr(float(month_tokens))]
        args.append(str(month_requests))
        await self.state.run(self.script, self._keys(key), args)

    def __repr__(self) -> str:
        return f"<SharedQuota {self.state!r}>"


class SharedConcurrency(Concurrency):
    """Requests in flight per key across replicas. This process remembers the leases it holds (by key, in the
    in-process counter it inherits, and their ids), renews them every third of ``LEASE_SECONDS`` in one pipeline,
    and releases them without an await (the release is sent in the background). ``local`` counts while Redis
    cannot answer (``on_error: allow``)."""

    __slots__ = ("_held", "_renewer", "_tasks", "local", "script", "state")

    def __init__(self, state: SharedState) -> None:
        super().__init__()
        self.state = state
        self.script = script("concurrency.lua")
        self.local = Concurrency()
        self._held: dict[str, list[str]] = {}  # key -> ids of the leases this process holds
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _name(self, key: str) -> str:
        return f"{self.state.prefix}inflight:{key}"

    async def acquire(self, key: str, limit: int) -> bool:
        lease = f"{_PROCESS}:{next(_LEASES)}"
        args = ["acquire", str(int(LEASE_SECONDS * 1000)), str(limit), lease]
        try:
            held = await self.state.run(self.script, [self._name(key)], args) == 1
        except StateUnavailable as exc:
            if not self.state.allow_on_error:
                raise _unavailable("Concurrency caps") from exc
            held, lease = self.local.try_acquire(key, limit), ""  # "": a local slot, released locally
        if not held:
            return False
        self._held.setdefault(key, []).append(lease)
        self.try_acquire(key, 1 << 62)  # the in-process count: what this replica has in flight, for /admin/api/state
        if lease and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever(), name="lease renewal")
        return True

    def release(self, key: str) -> None:
        leases = self._held.get(key)
        if not leases:
            return
        lease = leases.pop()
        if not leases:
            del self._held[key]
        super().release(key)
        if not lease:
            self.local.release(key)
            return
        task = asyncio.get_running_loop().create_task(self._release(key, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, key: str, lease: str) -> None:
        # Not released (Redis away): the lease expires by itself within LEASE_SECONDS.
        with contextlib.suppress(StateUnavailable):
            await self.state.run(self.script, [self._name(key)], ["release", "0", lease])

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(LEASE_SECONDS / 3)
            ttl = str(int(LEASE_SECONDS * 1000))
            calls = [
                self.state.run(self.script, [self._name(key)], ["renew", ttl, *(lease for lease in leases if lease)])
                for key, leases in list(self._held.items())
                if any(leases)
            ]
            await asyncio.gather(*calls, return_exceptions=True)  # one pipeline; a miss is retried next time

    def __repr__(self) -> str:
        return f"<SharedConcurrency {sum(map(len, self._held.values()))} leases held, {self.state!r}>"


_PROCESS = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"  # lease ids say who holds them
_LEASES = itertools.count(1)


def _unavailable(what: str) -> SharedStateUnavailable:
    return SharedStateUnavailable(f"{what} cannot be checked right now (the shared state does not answer); try again")
