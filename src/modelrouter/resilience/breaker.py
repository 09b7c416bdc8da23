"""The per-instance circuit breaker: stop sending to an instance that keeps failing, probe it carefully, and
take it back when it answers again.

    CLOSED --(N consecutive failures, or failure rate >= R over the window with >= M requests)--> OPEN
    OPEN --(open period elapsed; period = open_for * 2**(trips-1), capped)--> HALF_OPEN
    HALF_OPEN --(a probe fails)--> OPEN (one more trip: the next period is twice as long)
    HALF_OPEN --(close_after probe successes)--> CLOSED (trips reset)

Half-open admits at most ``half_open_probes`` requests at a time; everything else goes elsewhere. Only backend
failures count: connection errors, timeouts, broken answers, 5xx, 408 and 429 - never a client's own 4xx.
Each opening keeps why (the failure that tripped it: "HTTP 503", the transport's "connecting to the backend timed
out" …) and when, for the admin view; the reason is worded only then, so failures that do not trip cost nothing.
The clock is injectable so the machine can be tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeAlias

from ..config.model import BreakerConfig

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Cause", "CircuitBreaker", "describe"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

_BUCKETS = 10  # the failure-rate window is kept as this many time slices
_REASON_CHARS = 300  # an error message quoted as a reason stays readable in a table cell

# What a failure verdict may carry: the upstream's error status, or the error the try ended with.
Cause: TypeAlias = int | BaseException | None


def describe(cause: Cause) -> str | None:
    """A failure's cause in words: "HTTP 503" for a status, else the error's own message."""
    if cause is None:
        return None
    if isinstance(cause, int):
        return f"HTTP {cause}"
    text = str(getattr(cause, "message", None) or cause) or type(cause).__name__
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "…"


class CircuitBreaker:
    __slots__ = (
        "_bucket_at",
        "_buckets",
        "_clock",
        "config",
        "consecutive",
        "on_change",
        "opened_at",
        "opened_until",
        "probe_successes",
        "probes",
        "reason",
        "state",
        "trips",
    )

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.state = CLOSED
        self.consecutive = 0  # failures in a row while closed
        self.trips = 0  # openings since the breaker was last closed
        self.opened_until = 0.0
        self.probes = 0  # half-open requests in flight
        self.probe_successes = 0
        # [requests, failures] per slice of window / _BUCKETS seconds; _bucket_at is the current slice number.
        self._buckets = [[0, 0] for _ in range(_BUCKETS)]
        self._bucket_at = 0
        self.on_change: Callable[[CircuitBreaker, str, str], None] | None = None
        # The last opening: why (the failure that tripped it, in words) and when (Unix time); kept after it
        # closes again, so an admin can still see what happened.
        self.reason: str | None = None
        self.opened_at: float | None = None

    # -- asked while choosing an instance ------------------------------------------------------------
    def allows(self) -> bool:
        """May a request go to this instance now? (Does not reserve a probe slot; ``on_send`` does.)"""
        if self.state == CLOSED or not self.config.enabled:
            return True
        if self.state == OPEN:
            if self._clock() < self.opened_until:
                return False
            self._move(HALF_OPEN)
            self.probes = 0
            self.probe_successes = 0
        return self.probes < self.config.half_open_probes

    def wait(self) -> float | None:
        """Seconds until a request may go through: 0 now, the rest of the open period while open (it then goes
        half-open), None while half-open with every probe slot taken (only the probes' outcome tells). Unlike
        ``allows`` it changes no state: it answers a 503's Retry-After, not a routing question."""
        if self.state == CLOSED or not self.config.enabled:
            return 0.0
        if self.state == OPEN:
            return max(self.opened_until - self._clock(), 0.0)
        return 0.0 if self.probes < self.config.half_open_probes else None

    def on_send(self) -> bool:
        """Called when a request is sent here; returns True if it is a half-open probe."""
        if self.state == HALF_OPEN:
            self.probes += 1
            return True
        return False

    def health_ok(self) -> None:
        """An active health probe succeeded: an open breaker need not wait out its period to try again."""
        if self.state == OPEN and self.config.enabled:
            self.opened_until = self._clock()

    def release_probe(self) -> None:
        """A probe ended without a verdict (its client went away): free its slot, count nothing."""
        self.probes = max(self.probes - 1, 0)

    # -- told after the outcome is known -------------------------------------------------------------
    def record(self, ok: bool, probe: bool, cause: Cause = None) -> None:
        """A try's verdict; a failure may say its ``cause``, kept (worded) only if it opens the breaker."""
        if not self.config.enabled:
            return
        if probe:
            self.probes = max(self.probes - 1, 0)
            if self.state != HALF_OPEN:
                return
            if not ok:
                self._trip(cause)
            else:
                self.probe_successes += 1
                if self.probe_successes >= self.config.close_after:
                    self._close()
            return
        if self.state != CLOSED:
            return  # a request sent before the breaker opened; its outcome is old news
        self._count(ok)
        if ok:
            self.consecutive = 0
            return
        self.consecutive += 1
        if self.consecutive >= self.config.consecutive_failures or self._rate_exceeded():
            self._trip(cause)

    def window_counts(self) -> tuple[int, int]:
        """(requests, failures) within the failure-rate window, for the admin view."""
        self._slice()  # let slices that have aged out be cleared first
        return sum(b[0] for b in self._buckets), sum(b[1] for b in self._buckets)

    # -- internals -----------------------------------------------------------------------------------
    def _slice(self) -> list[int]:
        slice_no = int(self._clock() / (self.config.window / _BUCKETS))
        if slice_no != self._bucket_at:
            # Clear the slices skipped since the last request (all of them after a long quiet spell).
            for n in range(max(self._bucket_at + 1, slice_no - _BUCKETS + 1), slice_no + 1):
                self._buckets[n % _BUCKETS] = [0, 0]
            self._bucket_at = slice_no
        return self._buckets[slice_no % _BUCKETS]

    def _count(self, ok: bool) -> None:
        bucket = self._slice()
        bucket[0] += 1
        if not ok:
            bucket[1] += 1

    def _rate_exceeded(self) -> bool:
        requests = sum(b[0] for b in self._buckets)
        if requests < self.config.min_requests:
            return False
        failures = sum(b[1] for b in self._buckets)
        return failures / requests >= self.config.failure_rate

    def _trip(self, cause: Cause) -> None:
        self.reason = describe(cause)
        self.opened_at = time.time()
        self.trips += 1
        period = min(self.config.open_for * 2 ** (self.trips - 1), self.config.max_open_for)
        self.opened_until = self._clock() + period
        self.probes = 0
        self.probe_successes = 0
        self._move(OPEN)

    def _close(self) -> None:
        self.trips = 0
        self.consecutive = 0
        self._buckets = [[0, 0] for _ in range(_BUCKETS)]
        self._move(CLOSED)

    def _move(self, state: str) -> None:
        old, self.state = self.state, state
        if self.on_change is not None and old != state:
            self.on_change(self, old, state)

    def __repr__(self) -> str:
        extra = ""
        if self.state == OPEN:
            extra = f" for {max(self.opened_until - self._clock(), 0):.1f}s"
        elif self.state == HALF_OPEN:
            extra = f" probes={self.probes} ok={self.probe_successes}/{self.config.close_after}"
        return f"<CircuitBreaker {self.state}{extra} trips={self.trips} consecutive={self.consecutive}>"
