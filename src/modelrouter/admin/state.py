"""Admin routes for watching the gateway: its live state, and usage queries (totals and records)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..errors import GatewayError
from ..observability.telemetry import replica_id
from .calls import Call, Reply, Routes
from .schema import Limit, Query, UnixTime, list_of, obj, ref

__all__ = [
    "GROUPS",
    "HistoryQuery",
    "RecordsQuery",
    "UsageFilters",
    "UsageQuery",
    "metrics_history",
    "routes",
    "state",
    "usage",
    "usage_records",
]

Group = Literal["key", "model", "key_model", "none"]
GROUPS: tuple[str, ...] = Group.__args__  # type: ignore[attr-defined]

routes = Routes()


class UsageFilters(Query):
    """What usage queries filter by. Unknown parameters are refused: a misspelt filter must not widen a query
    to every record."""

    model_config = ConfigDict(extra="forbid")

    key_id: str | None = Field(None, description='"store:<id>" for a stored key, "config:<name>" for the file')
    model: str | None = None
    since: UnixTime | None = Field(None, description="records at or after this time")
    until: UnixTime | None = Field(None, description="records before this time")


class UsageQuery(UsageFilters):
    group_by: Group = "key_model"


class RecordsQuery(UsageFilters):
    limit: Limit = 100


@routes("GET", "/admin/api/state", "viewer", reply=ref("LiveState"))
async def state(call: Call) -> Reply:
    """Live state: instances (health, breaker, load, latency) and rate limits."""
    if call.live is None:
        raise GatewayError("live state is not available in this process")
    return 200, call.live()


class HistoryQuery(Query):
    model_config = ConfigDict(extra="forbid")

    since: UnixTime | None = Field(None, description="only the points after this time (what a poller has not seen)")


_RATES = {"type": "object", "additionalProperties": {"type": "object"}}


@routes(
    "GET",
    "/admin/api/metrics/history",
    "viewer",
    reply=obj(
        {
            "object": {"const": "list"},
            "enabled": {"type": "boolean"},
            "interval": {"type": "number"},
            "replica": {"type": "string"},
            "data": {
                "type": "array",
                "items": obj(
                    {"t": {"type": "number"}, "seconds": {"type": "number"}, "models": _RATES, "instances": _RATES},
                    ["t", "seconds", "models", "instances"],
                ),
            },
        },
        ["object", "enabled", "data"],
    ),
)
async def metrics_history(call: Call, query: HistoryQuery) -> Reply:
    """The traffic of the last hour, one point per sample, oldest first (for the console's charts).

    Each point covers the ``seconds`` before ``t``: per model (``*``: all models) requests, rps, error_rate (5xx
    share), client_error_rate (4xx), p50_ms/p99_ms at the gateway, prompt/completion tokens and tokens_per_min;
    per instance requests, rps, upstream p50_ms/p99_ms, ttft_p50_ms/ttft_p99_ms and the breaker window's
    error_rate. Sampled every ``observability.history_interval`` seconds from the metrics counters (the whole
    gateway's with ``--workers``); ``enabled`` is false when there is no history (``metrics`` off or interval 0)."""
    history = call.history
    return 200, {
        "object": "list",
        "enabled": history is not None,
        "interval": history.interval if history is not None else 0,
        "replica": replica_id(),
        "data": history.since(query.since) if history is not None else [],
    }


@routes(
    "GET",
    "/admin/api/usage",
    "viewer",
    reply=obj(
        {
            "object": {"const": "list"},
            "group_by": {"type": "string", "enum": list(GROUPS)},
            "since": {"type": ["number", "null"]},
            "until": {"type": ["number", "null"]},
            "data": {"type": "array", "items": ref("UsageTotal")},
        },
        ["object", "group_by", "data"],
    ),
)
async def usage(call: Call, query: UsageQuery) -> Reply:
    """Usage totals, filtered and grouped (unknown query parameters are refused).

    Sums over usage records, filtered by key, model and time range, grouped by key and/or model."""
    group_by = query.group_by
    totals = await call.store.usage_totals(key_id=query.key_id, model=query.model, since=query.since, until=query.until)
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
    return 200, {
        "object": "list",
        "group_by": group_by,
        "since": query.since,
        "until": query.until,
        "data": list(groups.values()),
    }


@routes("GET", "/admin/api/usage/records", "viewer", reply=list_of(ref("UsageRecord")))
async def usage_records(call: Call, query: RecordsQuery) -> Reply:
    """Usage records, newest first (unknown query parameters are refused)."""
    records = await call.store.query_usage(
        key_id=query.key_id, model=query.model, since=query.since, until=query.until, limit=query.limit
    )
    return 200, {"object": "list", "data": [dataclasses.asdict(r) for r in records]}
