"""Limiter state in this process: a dict of small state records, one per key.

Each step runs without an await, so it is atomic on the event loop and needs no lock. States that have gone
back to what a fresh one would be (a bucket full again, a window over) are dropped by a sweep. The sweep runs
when the table has doubled since the last one: amortized O(1) per new key, and memory stays within about twice
the keys that are actually live, however many client IPs or users pass by.
"""

from __future__ import annotations

from collections.abc import Sequence

from ... import speedups
from ...config.model import LimitRule
from .algorithms import ALGORITHMS, Algorithm, State, TokenBucket
from .base import Decision

__all__ = ["MemoryBackend"]

# The token-bucket steps compiled (speedups.py): the same arithmetic, for the buckets a request already stepped.
_token_take_all = speedups.token_take_all
_token_adjust_all = speedups.token_adjust_all


class _Entry:
    __slots__ = ("algorithm", "bucket", "rule", "state")

    def __init__(self, state: State | None, rule: LimitRule) -> None:
        self.state = state  # None until the first step
        self.algorithm: type[Algorithm] = ALGORITHMS[rule.algorithm]
        self.rule = rule
        self.bucket: tuple[LimitRule, float, float] | None = None
        self.set_rule(rule)

    def set_rule(self, rule: LimitRule) -> None:
        """What the state was last stepped with (it tells the sweep how to read it), and for a token bucket what
        the compiled steps read: (rule, size, refill per second), worked out once. Read from C, a pydantic model's
        attributes are slow (its ``__getattr__`` sends every lookup through a Python-level call), and each
        attribute of this entry is a lookup too."""
        self.rule = rule
        rate, period, burst = rule.rate, rule.period, rule.burst
        exact = type(rate) is float and type(period) is float and (burst is None or type(burst) is float)
        # None (another algorithm, or not floats): the compiled steps decline, and the Python step runs.
        self.bucket = (rule, burst or rate, rate / period) if exact and self.algorithm is TokenBucket else None


class MemoryBackend:
    __slots__ = ("_entries", "_min_sweep", "_sweep_at")

    def __init__(self, min_sweep: int = 1024) -> None:
        self._entries: dict[str, _Entry] = {}
        self._min_sweep = min_sweep  # below this many keys, never sweep
        self._sweep_at = min_sweep

    async def take(self, key: str, cost: float, now: float, rule: LimitRule) -> Decision:
        return self.take_now(key, cost, now, rule)

    async def adjust(self, key: str, delta: float, now: float, rule: LimitRule) -> None:
        self.adjust_now(key, delta, now, rule)

    def take_all(
        self, items: Sequence[tuple[str, float, LimitRule]], now: float
    ) -> tuple[Decision | None, list[Decision]]:
        """Take from every bucket in order; at a refusal, give back what the earlier ones gave (all or none)."""
        if _token_take_all is not None:
            done: tuple[Decision | None, list[Decision]] | None = _token_take_all(self._entries, items, now, Decision)
            if done is not None:
                return done
        decisions: list[Decision] = []
        for key, cost, rule in items:
            decision = self.take_now(key, cost, now, rule)
            if not decision.allowed:
                for (taken_key, taken_cost, taken_rule), _ in zip(items, decisions, strict=False):
                    self.adjust_now(taken_key, -taken_cost, now, taken_rule)
                return decision, [*decisions, decision]
            decisions.append(decision)
        return None, decisions

    def adjust_all(self, items: Sequence[tuple[str, float, LimitRule]], now: float) -> None:
        if _token_adjust_all is not None and _token_adjust_all(self._entries, items, now) is not None:
            return
        for key, delta, rule in items:
            if delta:
                self.adjust_now(key, delta, now, rule)

    # Synchronous twins: an in-process step needs no await, and a coroutine per bucket per request measured a
    # few percent of throughput. ``Limiter`` uses these when the backend has them.
    def take_now(self, key: str, cost: float, now: float, rule: LimitRule) -> Decision:
        entry = self._entries.get(key)
        if entry is None or entry.rule is not rule:
            entry = self._entry(key, entry, rule, now)
        entry.state, decision = entry.algorithm.take(entry.state, cost, now, rule)
        return decision

    def adjust_now(self, key: str, delta: float, now: float, rule: LimitRule) -> None:
        entry = self._entries.get(key)
        if entry is None and delta <= 0:
            return  # a refund to a fresh state changes nothing, so only debt needs a record
        if entry is None or entry.rule is not rule:
            entry = self._entry(key, entry, rule, now)
        entry.state = entry.algorithm.adjust(entry.state, delta, now, rule)

    def _entry(self, key: str, entry: _Entry | None, rule: LimitRule, now: float) -> _Entry:
        """The entry for a key never seen (or swept), or one whose rule object changed: the config was
        reloaded. With the same algorithm the state's fields mean the same, so it is kept; with another, the
        key starts fresh."""
        if entry is not None:
            if entry.rule.algorithm == rule.algorithm:
                entry.set_rule(rule)
                return entry
            del self._entries[key]
        elif len(self._entries) >= self._sweep_at:
            self.sweep(now)
        entry = self._entries[key] = _Entry(None, rule)
        return entry

    def sweep(self, now: float) -> int:
        """Drop the states that behave like fresh ones at ``now``; return how many."""
        expired = [
            key
            for key, entry in self._entries.items()
            if entry.state is None or entry.algorithm.expires(entry.state, entry.rule) <= now
        ]
        for key in expired:
            del self._entries[key]
        self._sweep_at = max(self._min_sweep, 2 * len(self._entries))
        return len(expired)

    def state(self, key: str) -> State | None:
        """The state held for ``key`` (for tests and the admin view; do not modify)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.state

    def items(self) -> list[tuple[str, State | None]]:
        """Every key with its state, for the admin view (do not modify the states)."""
        return [(key, entry.state) for key, entry in self._entries.items()]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryBackend {len(self._entries)} keys, sweep at {self._sweep_at}>"
