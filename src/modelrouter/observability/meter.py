"""``Meter``: what one request used and how it went, filled in along the request path for token limits, usage
records and observability; and ``Ended``, a finished request as observability handles it in batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..access.usage import usage_from_body
from ..speedups import usage as compiled_usage

if TYPE_CHECKING:
    from ..dataplane.usage_tap import StreamUsageTap

__all__ = ["Ended", "Meter"]


class Meter:
    """What one request used and how it went, filled in by the request path when token limits, usage records
    or observability (metrics, access log, response headers) need it."""

    __slots__ = (
        "answer_s",
        "attempts",
        "body",
        "bytes_out",
        "completion_tokens",
        "first_at",
        "instance",
        "model",
        "needs_usage",
        "prompt_tokens",
        "request_id",
        "status",
        "strip_usage",
        "tap",
        "ttft_s",
        "upstream_labels",
        "upstream_s",
    )

    def __init__(self) -> None:
        self.request_id: str | None = None
        # A non-streamed answer whose usage is still to read (read_body): when only observability wants it, that
        # happens later, in a batch (observe.py).
        self.body: bytes | None = None
        # Token limits, quotas or usage records need the real usage: streams are then asked to report it.
        self.needs_usage = False
        self.model: str | None = None  # the model the request was routed to (a configured name)
        self.attempts = 0  # upstream attempts (more than one: failed over)
        self.upstream_s = 0.0  # time spent waiting on upstreams, summed over attempts (streams: to the first byte)
        self.ttft_s: float | None = None  # the answering upstream's time to first byte (first token when streaming)
        self.bytes_out = 0
        self.first_at: float | None = None  # monotonic time the first streamed bytes went out
        self.instance: str | None = None
        # The answering upstream's timings, observed in the metrics batch: its instance's labels, and the time
        # from sending to the end of its answer (ttft_s being the time to its first byte).
        self.upstream_labels: tuple[str, str] | None = None
        self.answer_s = 0.0
        self.status = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.strip_usage = False  # the gateway asked for stream usage on its own account
        self.tap: StreamUsageTap | None = None

    def read_body(self) -> None:
        """The usage of the answer kept in ``body``, into the meter; the answer is let go."""
        body, self.body = self.body, None
        if body is not None:
            usage = (compiled_usage(body) if compiled_usage is not None else None) or usage_from_body(body)
            if usage is not None:
                self.prompt_tokens, self.completion_tokens = usage

    def settle(self, prompt_estimate: int) -> None:
        """After the answer ended: take the stream's usage, or estimate what the upstream did not report."""
        tap = self.tap
        if tap is not None:
            if tap.usage is not None:
                self.prompt_tokens, self.completion_tokens = tap.usage
            else:
                self.completion_tokens = tap.estimated_completion()
        if not self.prompt_tokens and self.status and self.status < 400:
            self.prompt_tokens = prompt_estimate

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# A request that ended, as observability handles it in batches (observe.py): endpoint name, its meter, status,
# seconds taken, perf_counter() at its end, key id, client address. A plain tuple: one is made per request.
Ended = tuple[str, Meter, int, float, float, str | None, str | None]
