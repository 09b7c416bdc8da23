"""Login throttling: at most N attempts per minute per (username, client IP), a few times N per client IP, and a
global cap on all attempts, counted in this process.

Why these keys: a limit per username alone let anyone lock the real admin out (N bad passwords a minute for
`admin`, from any address, and the right password failed too). Per (username, address), a guesser slows down only
itself; per address, spraying many usernames from one address is slowed too; and the global cap bounds the work
that the password hash (argon2id, the expensive part) can be made to do by many addresses at once - the one way
left to refuse a correct password from an address of its own, and only while the whole process is being flooded.

A sliding log (the times of recent attempts) rather than a token bucket: the limit reads as "N per minute", and the
Retry-After it gives is exact. Counted in this process, or with ``state.backend: redis`` in Redis for every replica
(``SharedAttemptLimiter``, the same log as a sorted set per key): N replicas must not mean N times the guesses."""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import Callable

from ..state import SharedState, StateUnavailable, script

__all__ = ["AttemptLimiter", "SharedAttemptLimiter", "retry_after_header"]


class AttemptLimiter:
    """``check(*limits)`` records an attempt under every key if each is under its limit; otherwise records nothing
    and returns the seconds until the busiest key has room again. A refused attempt is not counted, so that a
    client which waits as told gets in on time (and a throttled guesser does not use up the global cap)."""

    def __init__(self, clock: Callable[[], float], window: float = 60.0) -> None:
        self._clock = clock
        self._window = window
        self._attempts: dict[str, deque[float]] = {}
        self._last_sweep = clock()

    def check(self, *limits: tuple[str, int]) -> float | None:
        """``limits``: (key, attempts a window). None: allowed (and counted). A number: refused; retry after that
        many seconds."""
        now = self._clock()
        self._sweep(now)
        wait = 0.0
        for key, limit in limits:
            times = self._attempts.get(key)
            if times is None:
                continue
            _expire(times, now - self._window)
            if len(times) >= limit:
                # Room again when enough of the oldest attempts have aged out (the limit may have been lowered).
                wait = max(wait, times[len(times) - limit] + self._window - now)
        if wait > 0:
            return wait
        for key, _limit in limits:
            self._attempts.setdefault(key, deque()).append(now)
        return None

    async def attempt(self, *limits: tuple[str, int]) -> float | None:
        """``check``, as the shared limiter is called."""
        return self.check(*limits)

    def _sweep(self, now: float) -> None:
        """Forget keys without recent attempts, so guessing many usernames does not grow memory forever."""
        if now - self._last_sweep < self._window:
            return
        self._last_sweep = now
        for key in list(self._attempts):
            times = self._attempts[key]
            _expire(times, now - self._window)
            if not times:
                del self._attempts[key]

    def __len__(self) -> int:
        return len(self._attempts)

    def __repr__(self) -> str:
        return f"<AttemptLimiter {len(self._attempts)} key(s) in a {self._window:g}s window>"


class SharedAttemptLimiter(AttemptLimiter):
    """The same throttle over Redis (its clock, its sorted sets). While Redis cannot answer, this process's own log
    counts (``on_error: allow``) or every attempt is refused for a second (``deny``): login is the one place a
    guesser gains from an open door."""

    def __init__(self, state: SharedState, window: float = 60.0) -> None:
        super().__init__(time.monotonic, window)
        self.state = state
        self.script = script("attempts.lua")

    async def attempt(self, *limits: tuple[str, int]) -> float | None:
        keys = [f"{self.state.prefix}login:{key}" for key, _ in limits]
        args = [str(int(self._window * 1000)), f"{_PROCESS}:{next(_ATTEMPTS)}", *(str(limit) for _, limit in limits)]
        try:
            wait_ms = await self.state.run(self.script, keys, args)
        except StateUnavailable:
            return self.check(*limits) if self.state.allow_on_error else 1.0
        return None if not wait_ms else int(wait_ms) / 1000


_PROCESS = secrets.token_hex(6)
_ATTEMPTS = itertools.count(1)


def _expire(times: deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()


def retry_after_header(wait: float) -> bytes:
    """Whole seconds, rounded up, at least 1: Retry-After takes an integer."""
    return str(max(1, math.ceil(wait))).encode()
