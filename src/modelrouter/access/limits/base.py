"""What a rate-limit step answers (``Decision``) and where limiter state lives (``StateBackend``).

The backend owns the state and runs the algorithm steps of all of one request's buckets at once, all or none:
the in-process backend between two awaits (``memory.py``), the shared one as one Redis script (``shared.py``).
Keys are opaque strings the caller builds, e.g. ``"key:abc|rule:3"``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ...config.model import LimitRule

__all__ = ["Decision", "StateBackend"]


class Decision(NamedTuple):  # a tuple: the cheapest record to build, once per bucket per request
    """The outcome of one take. Times are seconds from the take; amounts are in the rule's unit."""

    allowed: bool
    remaining: float  # units left after this take (>= 0), for x-ratelimit-remaining-*
    limit: float  # the ceiling ``remaining`` counts down from, for x-ratelimit-limit-*
    retry_after: float  # until this cost could be admitted; 0 if allowed, inf if it never can be
    reset_after: float  # until the bucket is full / the window is empty again, for x-ratelimit-reset-*
    wait: float = 0.0  # leaky bucket: hold the request this long before forwarding it


class StateBackend(Protocol):
    """One step per call. Both backends also take a request's buckets together (``take_all(items, now)``, all or
    none) and apply its corrections together (``adjust_all``): synchronously in this process, awaited in Redis."""

    async def take(self, key: str, cost: float, now: float, rule: LimitRule) -> Decision:
        """Run ``rule``'s algorithm on ``key``'s state for ``cost`` units at ``now``, atomically per key."""
        ...

    async def adjust(self, key: str, delta: float, now: float, rule: LimitRule) -> None:
        """Apply a signed correction to ``key``'s state: positive consumes (may go into debt), negative refunds
        (never above a full bucket / an empty window)."""
        ...
