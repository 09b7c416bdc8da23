"""Coarse timers for the request path: one loop callback serves every pending deadline.

Each request arms and disarms a few timers (first byte, body read, the disconnect watch); with one event-loop
timer each, creating and cancelling them measured several percent of throughput. Request deadlines are
seconds long, so firing up to ``RESOLUTION`` late is harmless, and arming is then a set insertion.

The tick runs only while something is armed, so an idle gateway does not wake up.
"""

from __future__ import annotations

import asyncio

__all__ = ["RESOLUTION", "Alarm", "Clock"]

RESOLUTION = 0.025  # seconds


class Alarm:
    """Something to do at a time. Subclasses implement ``ring``; ``set``/``clear`` arm and disarm it."""

    __slots__ = ("_clock", "at")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.at = 0.0

    def set(self, at: float) -> None:
        self.at = at
        self._clock.add(self)

    def clear(self) -> None:
        self._clock.pending.discard(self)

    def ring(self) -> None:
        raise NotImplementedError


class Clock:
    """All alarms of one event loop. ``time()`` is the loop's monotonic clock."""

    __slots__ = ("_handle", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: set[Alarm] = set()
        self._handle: asyncio.TimerHandle | None = None

    def time(self) -> float:
        return self.loop.time()

    def add(self, alarm: Alarm) -> None:
        self.pending.add(alarm)
        if self._handle is None:
            self._handle = self.loop.call_later(RESOLUTION, self._tick)

    def _tick(self) -> None:
        self._handle = None
        now = self.loop.time()
        due = [a for a in self.pending if a.at <= now]
        for alarm in due:
            self.pending.discard(alarm)
            alarm.ring()
        if self.pending:
            self._handle = self.loop.call_later(RESOLUTION, self._tick)

    def __repr__(self) -> str:
        return f"<Clock {len(self.pending)} pending>"


_clocks: dict[asyncio.AbstractEventLoop, Clock] = {}


def clock() -> Clock:
    """The clock of the running loop (tests may run several loops, one per thread)."""
    loop = asyncio.get_running_loop()
    c = _clocks.get(loop)
    if c is None:
        if len(_clocks) > 8:  # forget clocks of loops that are gone
            for old in [lp for lp in _clocks if lp.is_closed()]:
                del _clocks[old]
        c = _clocks[loop] = Clock(loop)
    return c
