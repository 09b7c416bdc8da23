"""The retry policy: which failures are worth another instance, which statuses say the backend (not the client)
is in trouble, and how an upstream's Retry-After keeps requests away from it (``retry.max_retry_after``)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable

from ..config.model import RetryConfig
from ..errors import GatewayError, UpstreamConnectError, UpstreamInvalid, UpstreamStatusError, UpstreamTimeout
from ..routing.instance import Instance

__all__ = ["backend_failure", "cool_down", "retry_after_seconds", "retryable", "usable_in"]


def backend_failure(status: int) -> bool:
    """Whether an error status says the backend is in trouble (a client's own 4xx says nothing about it)."""
    return status >= 500 or status in (408, 429)


def retryable(exc: GatewayError, retry: RetryConfig) -> bool:
    """Whether another instance may do better. Only failures before any byte reached the client get here:
    attempts return before streaming starts."""
    if isinstance(exc, UpstreamStatusError):
        return exc.status in retry.on_status
    return isinstance(exc, UpstreamConnectError | UpstreamTimeout | UpstreamInvalid)


def cool_down(instance: Instance, headers: Iterable[tuple[bytes, bytes]], retry: RetryConfig) -> None:
    """Honour Retry-After (seconds or an HTTP date) by keeping requests away from the instance until then."""
    for k, v in headers:
        if k == b"retry-after":
            seconds = retry_after_seconds(v.decode("latin-1"))
            if seconds is not None and seconds > 0:
                instance.cooldown_until = time.monotonic() + min(seconds, retry.max_retry_after)
            return


def retry_after_seconds(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def usable_in(instances: Iterable[Instance]) -> float | None:
    """Seconds until the first of ``instances`` is expected to be usable again (a cool-down ending, a breaker
    going half-open), for the 503's Retry-After; None when no instance's wait is known. A client told when to come
    back does not retry in a tight loop, nor give up on a backend that is back in seconds."""
    now = time.monotonic()
    waits = [w for inst in instances if (w := inst.usable_in(now)) is not None]
    return min(waits) if waits else None
