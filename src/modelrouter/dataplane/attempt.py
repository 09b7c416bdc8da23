"""``Attempt``: one try of one request on one instance, from the moment it is sent until it is finished.

It owns what must happen exactly once per try, whichever way the try ends: the instance's in-flight count taken
and given back, one breaker verdict (success, failure, or abandoned: no verdict, a half-open probe's slot freed),
the end of its trace span, and its timings in the request's meter. The non-streamed path finishes it when the
answer is read; a stream's ``StreamResponse.aclose`` finishes it when the stream ends. A stream's verdict is
given when it ends (success if it ended cleanly, failure if the backend broke it off), not at its first token:
a stream that breaks midway is one failure, not a success and a failure.
"""

from __future__ import annotations

import time
from typing import Literal

from ..observability.meter import Meter
from ..observability.observe import Span
from ..resilience.breaker import Cause
from ..routing.instance import Instance

__all__ = ["Attempt", "Verdict"]

Verdict = Literal["success", "failure", "abandoned"]


class Attempt:
    __slots__ = ("finished", "instance", "meter", "probe", "span", "started", "verdict")

    def __init__(self, instance: Instance, meter: Meter | None, span: Span | None) -> None:
        self.instance = instance
        self.meter = meter
        self.span = span
        self.probe = instance.breaker.on_send()  # a half-open breaker's probe: its verdict decides the breaker
        instance.acquire()
        if meter is not None:
            meter.attempts += 1
        self.started = time.perf_counter()
        self.verdict: Verdict | None = None
        self.finished = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def judge(self, ok: bool, cause: Cause = None) -> None:
        """The breaker's verdict on this try; only the first one counts. A failure passes its ``cause`` (the
        status or the error) as is: the breaker words it only if it trips."""
        if self.verdict is None:
            self.verdict = "success" if ok else "failure"
            self.instance.breaker.record(ok, self.probe, cause)

    def abandon(self) -> None:
        """No verdict on the backend (the client went away, the request was cancelled); only if none was given."""
        if self.verdict is None:
            self.verdict = "abandoned"
            if self.probe:
                self.instance.breaker.release_probe()

    def finish(self, error: BaseException | None = None) -> None:
        """Give the instance back and end the span, once. A try that got no verdict by now is abandoned."""
        if self.finished:
            return
        self.finished = True
        self.abandon()
        self.instance.release()
        if self.span is not None:
            self.span.end(error)
