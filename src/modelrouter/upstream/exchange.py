"""What every transport shares at the upstream boundary: one exchange's deadline on the coarse clock, the response
headers never passed on, and the wording of the errors each transport raises the same way.

Kept apart from the implementations so that two clients cannot drift: the same timeout fires at the same moment
with the same message, and a client learns the same (nothing) of the backend's address whichever one is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from ..dataplane.timers import Alarm, clock
from ..errors import GatewayError, UpstreamInvalid, UpstreamResponseTooLarge, UpstreamTimeout

__all__ = [
    "DROP_HEADERS",
    "Deadline",
    "broke_off",
    "describe",
    "finish_later",
    "logged",
    "no_answer",
    "read_timeout",
    "stream_timeout",
    "too_large",
]

log = logging.getLogger("modelrouter.upstream")

# Headers never passed back to the client: hop-by-hop, framing (the gateway frames its own response), and
# the upstream's identity.
DROP_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
        b"server",
    }
)


class Deadline(Alarm):
    """The timer of one exchange, armed only around awaits on the upstream - never while a slow client is being
    written to. It does what ``asyncio.timeout`` does, on the shared coarse clock (see ``timers``)."""

    __slots__ = ("_task", "expired", "total_at")

    def __init__(self, total: float | None) -> None:
        super().__init__(clock())
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.expired = False
        self.total_at = None if total is None else self._clock.time() + total

    def now(self) -> float:
        return self._clock.time()

    def arm(self, phase: float | None) -> None:
        """Expire after ``phase`` seconds or at the total deadline, whichever is first."""
        at = self.total_at
        if phase is not None:
            phase_at = self._clock.time() + phase
            at = phase_at if at is None or phase_at < at else at
        if at is not None:
            self.set(at)

    def ring(self) -> None:
        self.expired = True
        self._task.cancel()

    def disarm(self) -> None:
        self.clear()

    def caused(self) -> bool:
        """After a CancelledError: True if this deadline cancelled the task (the cancellation is then undone)."""
        if self.expired and self._task.uncancel() == 0:
            self.expired = False
            return True
        return False


def no_answer() -> UpstreamTimeout:
    return UpstreamTimeout("the backend sent no answer in time")


def read_timeout() -> UpstreamTimeout:
    return UpstreamTimeout("the backend timed out sending its answer")


def stream_timeout(before_first: bool) -> UpstreamTimeout:
    if before_first:
        return UpstreamTimeout("the backend sent no first token in time")
    return UpstreamTimeout("the backend stalled mid-answer")


def broke_off() -> UpstreamInvalid:
    return UpstreamInvalid("the backend broke off its answer")


def too_large(limit: int, length: int | None) -> UpstreamResponseTooLarge:
    if length is None:
        return UpstreamResponseTooLarge(f"the backend's answer went on past the limit of {limit} bytes")
    return UpstreamResponseTooLarge(
        f"the backend's answer is {length} bytes long (Content-Length), over the limit of {limit} bytes"
    )


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def logged(url: str, error: GatewayError, cause: BaseException | None = None) -> GatewayError:
    # Debug only: the request path logs failures with the instance's name, health checks log state changes.
    log.debug("%s: %s%s", url, error.message, f" ({describe(cause)})" if cause else "")
    return error


_closing: set[asyncio.Task[None]] = set()  # closes finishing on the loop (a task nobody holds may be collected)


def finish_later(step: Awaitable[None], errors: tuple[type[BaseException], ...]) -> None:
    """Finish a close the client could not finish in its call, on the loop; ``errors`` are the client's own
    failures, which leave nothing to do."""

    async def finish() -> None:
        with contextlib.suppress(*errors):
            await step

    task = asyncio.get_running_loop().create_task(finish())
    _closing.add(task)
    task.add_done_callback(_closing.discard)
