"""All the limits one request is subject to, taken together: all or nothing.

A request usually falls under several rules at once (global, per key, per IP; requests and tokens). It passes
only if every bucket admits it, and a refusal by one must not cost it anything in the others, or a client
retrying against a full token bucket would drain its request bucket for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ...config.model import LimitRule
from .base import Decision, StateBackend

__all__ = ["Limiter"]


class Limiter:
    """Items are ``(key, cost, rule)``: the caller builds the key (e.g. ``"key:abc|rule:3"``) and the cost (1
    for a request, the token estimate for a token rule). ``now`` comes from ``clock``; a backend shared by several
    processes needs a clock they share (``time.time``)."""

    __slots__ = ("backend", "clock")

    def __init__(self, backend: StateBackend, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.clock = clock

    async def check(self, items: Sequence[tuple[str, float, LimitRule]]) -> tuple[Decision | None, list[Decision]]:
        """Take from every bucket. Admitted: ``(None, decisions)`` in item order, for the x-ratelimit headers
        and the longest ``wait``. Refused: ``(refusal, decisions)`` where the last decision is the refusal (so
        ``items[len(decisions) - 1]`` is the bucket that refused), and whatever the earlier buckets gave has been
        put back."""
        now = self.clock()
        decisions: list[Decision] = []
        for key, cost, rule in items:
            decision = await self.backend.take(key, cost, now, rule)
            if not decision.allowed:
                for taken_key, taken_cost, taken_rule in items[: len(decisions)]:
                    await self.backend.adjust(taken_key, -taken_cost, now, taken_rule)
                return decision, [*decisions, decision]
            decisions.append(decision)
        return None, decisions

    def check_now(self, items: Sequence[tuple[str, float, LimitRule]]) -> tuple[Decision | None, list[Decision]]:
        """``check`` without awaiting, for an in-process backend (one with ``take_now``/``adjust_now``)."""
        backend: Any = self.backend
        now = self.clock()
        decisions: list[Decision] = []
        for key, cost, rule in items:
            decision = backend.take_now(key, cost, now, rule)
            if not decision.allowed:
                for (taken_key, taken_cost, taken_rule), _ in zip(items, decisions, strict=False):
                    backend.adjust_now(taken_key, -taken_cost, now, taken_rule)
                return decision, [*decisions, decision]
            decisions.append(decision)
        return None, decisions

    def reconcile_now(self, items: Sequence[tuple[str, float, LimitRule]]) -> None:
        backend: Any = self.backend
        now = self.clock()
        for key, delta, rule in items:
            if delta:
                backend.adjust_now(key, delta, now, rule)

    @property
    def in_process(self) -> bool:
        return hasattr(self.backend, "take_now")

    async def reconcile(self, items: Sequence[tuple[str, float, LimitRule]]) -> None:
        """Apply signed corrections ``(key, delta, rule)``: real usage minus what was taken (positive: more was
        used, the bucket may go into debt; negative: a refund, never beyond a full bucket)."""
        now = self.clock()
        for key, delta, rule in items:
            if delta:
                await self.backend.adjust(key, delta, now, rule)

    def __repr__(self) -> str:
        return f"<Limiter {self.backend!r}>"
