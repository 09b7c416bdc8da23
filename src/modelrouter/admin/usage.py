"""Admin routes for usage: totals by key, model and day (as JSON or a CSV file), and the records themselves."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..store.records import UsageTotal
from .calls import Call, Reply, Routes
from .http import Download
from .schema import Limit, Query, UnixTime, list_of, obj, ref

__all__ = ["GROUPS", "RecordsQuery", "UsageFilters", "UsageQuery", "routes", "usage", "usage_records"]

Group = Literal["key", "model", "key_model", "none"]
GROUPS: tuple[str, ...] = Group.__args__  # type: ignore[attr-defined]
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "bytes_in", "bytes_out")
# A spreadsheet runs a cell that starts with one of these as a formula; model names come from clients.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

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
    per: Literal["day", "none"] = Field("none", description="day: totals per calendar day as well")
    utc_offset: int = Field(
        0, ge=-720, le=840, description="minutes east of UTC of the days counted (the reader's time zone)"
    )
    format: Literal["json", "csv"] = Field("json", description="csv: the same rows as a file to download")


class RecordsQuery(UsageFilters):
    limit: Limit = 100


_ROW = ref("UsageTotal")


@routes(
    "GET",
    "/admin/api/usage",
    "viewer",
    reply=obj(
        {
            "object": {"const": "list"},
            "group_by": {"type": "string", "enum": list(GROUPS)},
            "per": {"type": "string", "enum": ["day", "none"]},
            "since": {"type": ["number", "null"]},
            "until": {"type": ["number", "null"]},
            "data": {"type": "array", "items": _ROW},
        },
        ["object", "group_by", "per", "data"],
    ),
)
async def usage(call: Call, query: UsageQuery) -> Reply:
    """Usage totals, filtered and grouped, per day if asked; as JSON or CSV (unknown query parameters are refused).

    Sums over usage records, filtered by key, model and time range, grouped by key and/or model and, with
    ``per=day``, by calendar day at ``utc_offset`` minutes east of UTC (ordered by day, then key, then model).
    ``key_name`` is the key's name now (null for requests without a key or a key since deleted); ``last_used``
    the newest record's time. ``format=csv`` answers the same rows as ``usage.csv``."""
    per_day = query.per == "day"
    totals = await call.store.usage_totals(
        key_id=query.key_id,
        model=query.model,
        since=query.since,
        until=query.until,
        per_day=per_day,
        utc_offset=query.utc_offset,
    )
    names = {f"store:{key.id}": key.name for key in await call.store.list_keys()}
    rows = _grouped(totals, query.group_by, names)
    if query.format == "csv":
        return 200, Download(_csv(rows, per_day), "text/csv; charset=utf-8", "usage.csv")
    return 200, {
        "object": "list",
        "group_by": query.group_by,
        "per": query.per,
        "since": query.since,
        "until": query.until,
        "data": rows,
    }


def _grouped(totals: Iterable[UsageTotal], group_by: str, names: Mapping[str, str]) -> list[dict[str, Any]]:
    by_key, by_model = group_by in ("key", "key_model"), group_by in ("model", "key_model")
    groups: dict[tuple[str | None, str | None, str | None], dict[str, Any]] = {}
    for total in totals:
        key_id = total.key_id if by_key else None
        group = (total.day, key_id, total.model if by_model else None)
        row = groups.get(group)
        if row is None:
            row = groups[group] = {"key_id": key_id, "key_name": _key_name(key_id, names), "model": group[2]}
            if total.day is not None:
                row["day"] = total.day
            row |= dict.fromkeys(SUMS, 0)
            row["last_used"] = None
        for name in SUMS:
            row[name] += getattr(total, name)
        if total.last_used is not None and (row["last_used"] is None or total.last_used > row["last_used"]):
            row["last_used"] = total.last_used
    return [groups[group] for group in sorted(groups, key=lambda g: tuple(part or "" for part in g))]


def _key_name(key_id: str | None, names: Mapping[str, str]) -> str | None:
    if key_id is None:
        return None
    if key_id.startswith("config:"):
        return key_id.removeprefix("config:")
    return names.get(key_id)


def _csv(rows: Iterable[Mapping[str, Any]], per_day: bool) -> bytes:
    columns = [*(["day"] if per_day else []), "key_id", "key_name", "model", *SUMS, "last_used"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(_cell(row[column], column) for column in columns)
    return out.getvalue().encode()


def _cell(value: Any, column: str) -> Any:
    if value is None:
        return ""
    if column == "last_used":
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@routes("GET", "/admin/api/usage/records", "viewer", reply=list_of(ref("UsageRecord")))
async def usage_records(call: Call, query: RecordsQuery) -> Reply:
    """Usage records, newest first (unknown query parameters are refused)."""
    records = await call.store.query_usage(
        key_id=query.key_id, model=query.model, since=query.since, until=query.until, limit=query.limit
    )
    return 200, {"object": "list", "data": [dataclasses.asdict(r) for r in records]}
