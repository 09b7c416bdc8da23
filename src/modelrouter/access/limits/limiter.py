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

    __slots__ = ("backend", "clock", "shared")

    def __init__(self, backend: StateBackend, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.clock = clock
        # A backend shared by several processes (Redis) is called with all of a request's buckets at once and
        # awaited; one in this process runs each step synchronously.
        self.shared = not hasattr(backend, "take_now")

    async def check(self, items: Sequence[tuple[str, float, LimitRule]]) -> tuple[Decision | None, list[Decision]]:
        """Take from every bucket. Admitted: ``(None, decisions)`` in item order, for the x-ratelimit headers
        and the longest ``wait``. Refused: ``(refusal, decisions)`` where the last decision is the refusal (so
        ``items[len(decisions) - 1]`` is the bucket that refused), and whatever the earlier buckets gave has been
        put back."""
        backend: Any = self.backend
        if self.shared:
            result: tuple[Decision | None, list[Decision]] = await backend.take_all(items, self.clock())
            return result
        return self.check_now(items)

    def check_now(self, items: Sequence[tuple[str, float, LimitRule]]) -> tuple[Decision | None, list[Decision]]:
        """``check`` without awaiting, for an in-process backend."""
        backend: Any = self.backend
        result: tuple[Decision | None, list[Decision]] = backend.take_all(items, self.clock())
        return result

    def reconcile_now(self, items: Sequence[tuple[str, float, LimitRule]]) -> None:
        backend: Any = self.backend
        backend.adjust_all(items, self.clock())

    async def reconcile(self, items: Sequence[tuple[str, float, LimitRule]]) -> None:
        """Apply signed corrections ``(key, delta, rule)``: real usage minus what was taken (positive: more was
        used, the bucket may go into debt; negative: a refund, never beyond a full bucket)."""
        items = [item for item in items if item[1]]
        if not items:
            return
        if self.shared:
            backend: Any = self.backend
            await backend.adjust_all(items, self.clock())
        else:
            self.reconcile_now(items)

    def __repr__(self) -> str:
        return f"<Limiter {self.backend!r}>"
