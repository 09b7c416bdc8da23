"""Requests in flight per key (``max_concurrent``): counted in this process (``Concurrency``), or across every
replica as leases in Redis (``SharedConcurrency`` in shared.py). Both acquire with an await and release without
one, so that a release in a ``finally`` cannot be interrupted."""

from __future__ import annotations

__all__ = ["Concurrency"]


class Concurrency:
    """A key has a counter only while it has requests in flight, so idle keys cost nothing.

    Acquire and release are plain calls, never awaited, so a release in a ``finally`` cannot be interrupted.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    async def acquire(self, key: str, limit: int) -> bool:
        return self.try_acquire(key, limit)

    def try_acquire(self, key: str, limit: int) -> bool:
        """Count one more request for ``key`` if fewer than ``limit`` are in flight."""
        count = self._counts.get(key, 0)
        if count >= limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0)
        if count > 1:
            self._counts[key] = count - 1
        else:
            # A release without an acquire is a caller's bug; ignoring it keeps the counter from going negative.
            self._counts.pop(key, None)

    def in_flight(self, key: str) -> int:
        return self._counts.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        """Requests in flight per key (keys with none are absent)."""
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"<Concurrency {sum(self._counts.values())} in flight over {len(self._counts)} keys>"
