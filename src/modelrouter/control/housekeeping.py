"""What the gateway does with the store in the background: deleting usage records and audit entries past their
retention, and seeding quota counts from today's and this month's usage records at start."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..access.limits.quota import Quota

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["PRUNE_FIRST", "PRUNE_INTERVAL", "prune_forever", "seed_quotas"]

log = logging.getLogger("modelrouter")

# Usage records and audit entries past their retention are deleted this often; the first time a random part of
# PRUNE_FIRST after the store opens, so that replicas and workers started together do not all prune at once (each
# pruning is harmless: they delete the same expired rows, and whoever comes second finds fewer or none).
PRUNE_INTERVAL = 3600.0
PRUNE_FIRST = 300.0


async def seed_quotas(store: Store, quota: Quota, until: float) -> None:
    """Daily and monthly quotas count from the store's usage records, so a restart does not reset them. Only
    records before ``until`` (when the quotas started counting in this process) are added: later ones were
    counted here already."""
    day = until - until % 86400
    month = datetime.fromtimestamp(until, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    per_key: dict[str, list[float]] = {}
    for since, slot in ((month, 2), (day, 0)):
        for total in await store.usage_totals(since=since, until=until):
            if total.key_id is None:
                continue
            counts = per_key.setdefault(total.key_id, [0, 0, 0, 0])
            counts[slot] += total.requests
            counts[slot + 1] += total.prompt_tokens + total.completion_tokens
    for key_id, (day_requests, day_tokens, month_requests, month_tokens) in per_key.items():
        await quota.seed(
            key_id,
            day_requests=int(day_requests),
            day_tokens=day_tokens,
            month_requests=int(month_requests),
            month_tokens=month_tokens,
        )


async def prune_forever(store: Store, retention: Callable[[], tuple[int | None, int | None]]) -> None:
    """Delete usage records and audit entries older than ``retention()`` days (usage, audit; None: keep them),
    read at each run so that a reload applies. Its own task, never on the request path; the store deletes in short
    batches, so the usage recorder and admin writes get in between. Every replica runs one: only one is needed,
    several do no harm."""
    await asyncio.sleep(random.uniform(0, PRUNE_FIRST))
    while True:
        now = time.time()
        usage_days, audit_days = retention()
        for what, days, prune in (
            ("usage records", usage_days, store.prune_usage),
            ("audit log entries", audit_days, store.prune_audit),
        ):
            if days is None:
                continue
            try:
                deleted = await prune(now - days * 86400)
            except Exception as exc:  # the store is down: try again next time
                log.warning("could not delete %s older than %d days: %s", what, days, exc)
                continue
            if deleted:
                log.info("deleted %d %s older than %d days", deleted, what, days)
        await asyncio.sleep(PRUNE_INTERVAL)
