"""Admin routes for watching the gateway: its live state, and usage queries (totals and records)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import GatewayError
from .calls import MAX_TIME, Call, Reply, invalid, only

__all__ = ["GROUPS", "state", "usage", "usage_records"]

GROUPS = ("key", "model", "key_model", "none")


async def state(call: Call) -> Reply:
    if call.live is None:
        raise GatewayError("live state is not available in this process")
    return 200, call.live()


async def usage(call: Call) -> Reply:
    """Sums over usage records, filtered by key, model and time range, grouped by key and/or model."""
    query = call.request.query()
    only(query, {"key_id", "model", "since", "until", "group_by"})
    group_by = query.get("group_by", "key_model")
    if group_by not in GROUPS:
        raise invalid(f"'group_by' must be one of {', '.join(GROUPS)}", "group_by")
    since, until = _time(query, "since"), _time(query, "until")
    totals = await call.store.usage_totals(
        key_id=query.get("key_id"), model=query.get("model"), since=since, until=until
    )
    groups: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for total in totals:
        key = (
            total.key_id if group_by in ("key", "key_model") else None,
            total.model if group_by in ("model", "key_model") else None,
        )
        row = groups.setdefault(
            key,
            {
                "key_id": key[0],
                "model": key[1],
                "requests": 0,
                "errors": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "bytes_in": 0,
                "bytes_out": 0,
            },
        )
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "bytes_in", "bytes_out"):
            row[name] += getattr(total, name)
        row["total_tokens"] += total.total_tokens
    return 200, {"object": "list", "group_by": group_by, "since": since, "until": until, "data": list(groups.values())}


async def usage_records(call: Call) -> Reply:
    """The records themselves, newest first (at most ``limit``)."""
    query = call.request.query()
    only(query, {"key_id", "model", "since", "until", "limit"})
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise invalid("'limit' must be a whole number from 1 to 1000", "limit")
    records = await call.store.query_usage(
        key_id=query.get("key_id"),
        model=query.get("model"),
        since=_time(query, "since"),
        until=_time(query, "until"),
        limit=int(limit),
    )
    return 200, {"object": "list", "data": [dataclasses.asdict(r) for r in records]}


def _time(query: dict[str, str] | Any, name: str) -> float | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_TIME:
        raise invalid(f"'{name}' must be a unix time in seconds, up to the year 9999", name)
    return value
