"""Per-key quotas: daily and monthly request and token counts by calendar day and month in UTC, and the
per-minute ceilings of ``KeyQuotas`` as rate-limit rules.

Counters live in this process (``Quota``), or in Redis (``SharedQuota`` in shared.py, the same rules). ``seed``
loads what the store already recorded for today and this month, so a restart does not hand out a fresh quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache

from ...config.model import KeyQuotas, LimitRule

__all__ = ["Quota", "QuotaRefusal", "QuotaUsage", "has_quota", "key_rate_rules"]

_DAY = 86400.0


@dataclass(slots=True, frozen=True)
class QuotaRefusal:
    quota: str  # the exhausted KeyQuotas field: daily_requests, daily_tokens, monthly_requests or monthly_tokens
    limit: float
    used: float
    retry_after: float  # seconds until the UTC day or month ends


@dataclass(slots=True)
class QuotaUsage:
    """One key's counts in the current day and month."""

    day: int = 0  # days since the epoch, UTC
    day_requests: int = 0
    day_tokens: float = 0.0
    month: int = 0  # year * 12 + month - 1, UTC
    month_requests: int = 0
    month_tokens: float = 0.0


def has_quota(quotas: KeyQuotas) -> bool:
    return not (
        quotas.daily_requests is None
        and quotas.daily_tokens is None
        and quotas.monthly_requests is None
        and quotas.monthly_tokens is None
    )


def _over(used: float, cost: float, limit: float) -> bool:
    # Exhausted, or this request's estimate would not fit in what is left.
    return used >= limit or used + cost > limit


class Quota:
    """``clock`` is wall time (``time.time``): quotas follow the calendar, not the process."""

    __slots__ = ("_clock", "_day", "_day_end", "_day_start", "_month", "_month_end", "_usage")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._usage: dict[str, QuotaUsage] = {}
        # The current day and month, recomputed only when the clock leaves [_day_start, _day_end).
        self._day = 0
        self._day_start = self._day_end = 0.0
        self._month = 0
        self._month_end = 0.0

    def _now(self) -> float:
        now = self._clock()
        if not self._day_start <= now < self._day_end:
            self._day = int(now // _DAY)
            self._day_start = self._day * _DAY
            self._day_end = self._day_start + _DAY
            date = datetime.fromtimestamp(now, UTC)
            self._month = date.year * 12 + date.month - 1
            year, month = divmod(self._month + 1, 12)
            self._month_end = datetime(year, month + 1, 1, tzinfo=UTC).timestamp()
        return now

    def _current(self, key: str) -> QuotaUsage:
        """``key``'s usage with counters of a day or month that has ended set back to zero."""
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = QuotaUsage(day=self._day, month=self._month)
        if usage.day != self._day:
            usage.day, usage.day_requests, usage.day_tokens = self._day, 0, 0.0
        if usage.month != self._month:
            usage.month, usage.month_requests, usage.month_tokens = self._month, 0, 0.0
        return usage

    async def take(self, key: str, quotas: KeyQuotas, tokens: float = 0.0) -> QuotaRefusal | None:
        """Count one request and ``tokens`` (the estimate) against ``key``'s quotas, or nothing if one is
        exhausted; then say which."""
        if not has_quota(quotas):
            return None
        now = self._now()
        usage = self._current(key)
        refusal = None
        if quotas.daily_requests is not None and _over(usage.day_requests, 1, quotas.daily_requests):
            refusal = QuotaRefusal("daily_requests", quotas.daily_requests, usage.day_requests, self._day_end - now)
        elif quotas.daily_tokens is not None and _over(usage.day_tokens, tokens, quotas.daily_tokens):
            refusal = QuotaRefusal("daily_tokens", quotas.daily_tokens, usage.day_tokens, self._day_end - now)
        elif quotas.monthly_requests is not None and _over(usage.month_requests, 1, quotas.monthly_requests):
            refusal = QuotaRefusal(
                "monthly_requests", quotas.monthly_requests, usage.month_requests, self._month_end - now
            )
        elif quotas.monthly_tokens is not None and _over(usage.month_tokens, tokens, quotas.monthly_tokens):
            refusal = QuotaRefusal("monthly_tokens", quotas.monthly_tokens, usage.month_tokens, self._month_end - now)
        if refusal is None:
            usage.day_requests += 1
            usage.month_requests += 1
            usage.day_tokens += tokens
            usage.month_tokens += tokens
        return refusal

    async def reconcile(self, key: str, *, requests: int = 0, tokens: float = 0.0) -> None:
        """Apply signed corrections: real tokens minus the estimate, or ``requests=-1, tokens=-estimate`` to give
        back a take whose request was then refused elsewhere. A correction arriving after the day (month) ended
        lands in the new one; counts never go below zero."""
        if key not in self._usage:
            return  # no quota counted for this key
        self._now()
        usage = self._current(key)
        usage.day_requests = max(usage.day_requests + requests, 0)
        usage.month_requests = max(usage.month_requests + requests, 0)
        usage.day_tokens = max(usage.day_tokens + tokens, 0.0)
        usage.month_tokens = max(usage.month_tokens + tokens, 0.0)

    async def seed(
        self,
        key: str,
        *,
        day_requests: int = 0,
        day_tokens: float = 0.0,
        month_requests: int = 0,
        month_tokens: float = 0.0,
    ) -> None:
        """Add the store's counts of the current day and month to ``key``'s: what was used before this process
        counted (at startup, or when quotas came on with a reload while requests were already being counted)."""
        self._now()
        usage = self._current(key)
        usage.day_requests += day_requests
        usage.day_tokens += day_tokens
        usage.month_requests += month_requests
        usage.month_tokens += month_tokens

    def usage(self, key: str) -> QuotaUsage:
        """A copy of ``key``'s counts for the current day and month."""
        self._now()
        if key not in self._usage:
            return QuotaUsage(day=self._day, month=self._month)
        return replace(self._current(key))

    def forget(self, key: str) -> None:
        """Drop ``key``'s counters (the key was deleted)."""
        self._usage.pop(key, None)

    def __len__(self) -> int:
        return len(self._usage)

    def __repr__(self) -> str:
        return f"<Quota {len(self._usage)} keys>"


@lru_cache(maxsize=1024)
def key_rate_rules(quotas: KeyQuotas) -> tuple[LimitRule, ...]:
    """``requests_per_minute`` and ``tokens_per_minute`` as token-bucket rules scoped to the key. Cached: equal
    KeyQuotas give the same rule objects, so this costs a dict lookup per request."""
    rules = []
    if quotas.requests_per_minute is not None:
        rules.append(LimitRule(scope="key", rate=quotas.requests_per_minute, period=60, unit="requests"))
    if quotas.tokens_per_minute is not None:
        rules.append(LimitRule(scope="key", rate=quotas.tokens_per_minute, period=60, unit="tokens"))
    return tuple(rules)
