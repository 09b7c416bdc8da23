"""Limiter state in this process: a dict of small state records, one per key.

Each step runs without an await, so it is atomic on the event loop and needs no lock. States that have gone
back to what a fresh one would be (a bucket full again, a window over) are dropped by a sweep. The sweep runs
when the table has doubled since the last one: amortized O(1) per new key, and memory stays within about twice
the keys that are actually live, however many client IPs or users pass by.
"""

from __future__ import annotations

from ..config.model import LimitRule
from .algorithms import ALGORITHMS, State
from .base import Decision

__all__ = ["MemoryBackend"]


class _Entry:
    __slots__ = ("rule", "state")

    def __init__(self, state: State, rule: LimitRule) -> None:
        self.state = state
        self.rule = rule  # what the state was last stepped with; tells the sweep how to read it


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

    # Synchronous twins: an in-process step needs no await, and a coroutine per bucket per request measured a
    # few percent of throughput. ``Limiter`` uses these when the backend has them.
    def take_now(self, key: str, cost: float, now: float, rule: LimitRule) -> Decision:
        algorithm = ALGORITHMS[rule.algorithm]
        entry = self._entries.get(key)
        if entry is not None and entry.rule is not rule:
            entry = self._reconfigure(key, entry, rule)
        if entry is None:
            if len(self._entries) >= self._sweep_at:
                self.sweep(now)
            state, decision = algorithm.take(None, cost, now, rule)
            self._entries[key] = _Entry(state, rule)
            return decision
        entry.state, decision = algorithm.take(entry.state, cost, now, rule)
        return decision

    def adjust_now(self, key: str, delta: float, now: float, rule: LimitRule) -> None:
        algorithm = ALGORITHMS[rule.algorithm]
        entry = self._entries.get(key)
        if entry is not None and entry.rule is not rule:
            entry = self._reconfigure(key, entry, rule)
        if entry is None:
            if delta > 0:  # a refund to a fresh state changes nothing, so only debt needs a record
                self._entries[key] = _Entry(algorithm.adjust(None, delta, now, rule), rule)
            return
        entry.state = algorithm.adjust(entry.state, delta, now, rule)

    def _reconfigure(self, key: str, entry: _Entry, rule: LimitRule) -> _Entry | None:
        """The config was reloaded. With the same algorithm the state's fields mean the same, so keep it;
        with another, start fresh."""
        if entry.rule.algorithm != rule.algorithm:
            del self._entries[key]
            return None
        entry.rule = rule
        return entry

    def sweep(self, now: float) -> int:
        """Drop the states that behave like fresh ones at ``now``; return how many."""
        expired = [
            key
            for key, entry in self._entries.items()
            if ALGORITHMS[entry.rule.algorithm].expires(entry.state, entry.rule) <= now
        ]
        for key in expired:
            del self._entries[key]
        self._sweep_at = max(self._min_sweep, 2 * len(self._entries))
        return len(expired)

    def state(self, key: str) -> State | None:
        """The state held for ``key`` (for tests and the admin view; do not modify)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.state

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryBackend {len(self._entries)} keys, sweep at {self._sweep_at}>"
