"""Append-mostly records: usage per request, the audit log, saved config versions."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import sqlalchemy as sa

from .base import StoreBase
from .changes import announce
from .records import (
    USAGE_FIELDS,
    AuditRecord,
    ConfigVersion,
    StaleVersionError,
    UsageRecord,
    UsageTotal,
)
from .schema import CONFIG_MODE, audit_log, config_versions, meta, usage_records

__all__ = ["ANY", "ActivityStore"]


def _upsert_insert(dialect: str) -> Any:
    """The dialect's own ``insert`` (the one with ``on_conflict_do_update``), imported when first needed: the
    PostgreSQL dialect's modules are not loaded into a gateway whose store is SQLite."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class _Unset(enum.Enum):
    ANY = "any"


ANY = _Unset.ANY  # ``add_config_version(based_on=ANY)``: no optimistic check (an import, a file load)

ConfigMode = Literal["file", "store"]

# Pruning deletes this many rows per transaction, pausing between transactions: on SQLite a write transaction locks
# the whole database, so a backlog of millions of rows (a first prune, months of records) deleted in one statement
# would hold off the usage recorder and every admin write for as long as it takes. A batch takes ~8 ms on SQLite.
PRUNE_BATCH = 2000
PRUNE_PAUSE = 0.01  # seconds between batches: long enough for a writer waiting on the lock to take it
_MODES: tuple[ConfigMode, ...] = ("file", "store")  # kept in `meta`, whose values are numbers: 1, 2


class ActivityStore(StoreBase):
    async def insert_usage(self, records: Sequence[UsageRecord]) -> None:
        """Store a batch in one statement (executemany). Ids given in ``records`` are ignored."""
        if not records:
            return
        rows = [{name: getattr(record, name) for name in USAGE_FIELDS} for record in records]
        async with self._write() as conn:
            await conn.execute(usage_records.insert(), rows)

    async def query_usage(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[UsageRecord]:
        """Records with ``since <= ts < until`` matching the filters, newest first, at most ``limit``."""
        query = (
            usage_records.select()
            .where(*_usage_filters(key_id, model, since, until))
            .order_by(usage_records.c.ts.desc(), usage_records.c.id.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [UsageRecord(**row._mapping) for row in rows]

    async def usage_totals(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
        per_day: bool = False,
        utc_offset: int = 0,
    ) -> list[UsageTotal]:
        """Sums per (key_id, model) over the records the filters select, ordered by key then model; with
        ``per_day`` per (day, key_id, model), ordered by day first, a day being the calendar day at ``utc_offset``
        minutes east of UTC (the reader's own days, not the server's)."""
        c = usage_records.c
        group: list[sa.ColumnElement[Any]] = [c.key_id, c.model]
        if per_day:
            group.insert(0, _day(self._engine.dialect.name, utc_offset).label("day"))
        query = (
            sa.select(
                *group,
                sa.func.count().label("requests"),
                sa.func.coalesce(sa.func.sum(sa.case((c.status >= 400, 1), else_=0)), 0).label("errors"),
                *(
                    sa.func.coalesce(sa.func.sum(column), 0).label(column.name)
                    for column in (c.prompt_tokens, c.completion_tokens, c.bytes_in, c.bytes_out)
                ),
                sa.func.max(c.ts).label("last_used"),
            )
            .where(*_usage_filters(key_id, model, since, until))
            .group_by(*group)
            .order_by(*group)
        )
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [
                UsageTotal(
                    key_id=row.key_id,
                    model=row.model,
                    # PostgreSQL sums integers as NUMERIC (Decimal).
                    requests=int(row.requests),
                    errors=int(row.errors),
                    prompt_tokens=int(row.prompt_tokens),
                    completion_tokens=int(row.completion_tokens),
                    bytes_in=int(row.bytes_in),
                    bytes_out=int(row.bytes_out),
                    last_used=row.last_used,
                    day=row.day if per_day else None,
                )
                for row in rows
            ]

    async def prune_usage(self, before: float, *, batch: int = PRUNE_BATCH) -> int:
        """Delete usage records older than ``before`` (unix seconds), in batches; how many were deleted."""
        return await self._prune(usage_records, before, batch)

    async def prune_audit(self, before: float, *, batch: int = PRUNE_BATCH) -> int:
        """Delete audit log entries older than ``before`` (unix seconds), in batches; how many were deleted."""
        return await self._prune(audit_log, before, batch)

    async def _prune(self, table: sa.Table, before: float, batch: int) -> int:
        """Oldest first, ``batch`` rows per short transaction, so that a crash or a shutdown half-way leaves only
        the newest of the expired rows. Safe to run in several processes at once: each deletes what is left."""
        total = 0
        while True:
            # DELETE ... LIMIT is not in SQLite's default build nor in PostgreSQL; a bounded IN (SELECT) is in both,
            # and walks the `ts` index.
            oldest = sa.select(table.c.id).where(table.c.ts < before).order_by(table.c.ts).limit(batch)
            async with self._write() as conn:
                result = await conn.execute(table.delete().where(table.c.id.in_(oldest)))
            deleted = result.rowcount
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(PRUNE_PAUSE)

    async def audit(self, actor: str, action: str, target: str, detail: Mapping[str, Any] | None = None) -> None:
        """Record who did what to what. ``detail`` must be JSON-serialisable and must never hold a secret."""
        async with self._write() as conn:
            await conn.execute(
                audit_log.insert().values(
                    ts=self._now(), actor=actor, action=action, target=target, detail=dict(detail or {})
                )
            )

    async def list_audit(
        self,
        limit: int = 100,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: int | None = None,
    ) -> list[AuditRecord]:
        """Newest first, at most ``limit``. ``action`` matches itself and the actions under it (``key`` matches
        ``key.create``); ``before_id`` pages on: the entries older than one already read."""
        c = audit_log.c
        filters: list[sa.ColumnElement[bool]] = []
        if actor is not None:
            filters.append(c.actor == actor)
        if action is not None:
            # A prefix match through LIKE would take '_' and '%' in the text as wildcards.
            filters.append(sa.or_(c.action == action, sa.func.substr(c.action, 1, len(action) + 1) == action + "."))
        if target is not None:
            filters.append(c.target == target)
        if since is not None:
            filters.append(c.ts >= since)
        if until is not None:
            filters.append(c.ts < until)
        if before_id is not None:
            # Pages follow the order below, (ts, id) descending: what comes after the entry read last. Replicas'
            # clocks differ a little, so ids alone need not be in time order.
            last = sa.select(c.ts).where(c.id == before_id).scalar_subquery()
            filters.append(sa.or_(c.ts < last, sa.and_(c.ts == last, c.id < before_id)))
        query = audit_log.select().where(*filters).order_by(c.ts.desc(), c.id.desc()).limit(limit)
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [AuditRecord(**row._mapping) for row in rows]

    async def add_config_version(
        self, config: str, *, author: str, comment: str = "", based_on: int | _Unset | None = ANY
    ) -> ConfigVersion:
        """Save a new version, numbered one past the newest. With ``based_on`` (the version the change was made
        from; ``None`` for the very first), refuse with ``StaleVersionError`` if another version came first -
        also when two processes race: both would take the same number, and the primary key lets one win."""
        now = self._now()
        try:
            async with self._write() as conn:
                latest = (await conn.execute(sa.select(sa.func.max(config_versions.c.id)))).scalar()
                if based_on is not ANY and based_on != latest:
                    raise StaleVersionError(based_on, latest)
                version_id = (latest or 0) + 1
                await conn.execute(
                    config_versions.insert().values(
                        id=version_id, created_at=now, author=author, comment=comment, config=config
                    )
                )
                row = (await conn.execute(config_versions.select().where(config_versions.c.id == version_id))).one()
                await announce(conn, "config")
        except sa.exc.IntegrityError:
            raise StaleVersionError(None if based_on is ANY else based_on, None) from None
        return ConfigVersion(**row._mapping)

    async def latest_config_version(self) -> ConfigVersion | None:
        async with self._read() as conn:
            query = config_versions.select().order_by(config_versions.c.id.desc()).limit(1)
            row = (await conn.execute(query)).first()
        return None if row is None else ConfigVersion(**row._mapping)

    async def latest_config_version_id(self) -> int | None:
        """The newest version's number: one cheap query, polled by gateways to pick up changes made elsewhere."""
        async with self._read() as conn:
            latest: int | None = (await conn.execute(sa.select(sa.func.max(config_versions.c.id)))).scalar()
        return latest

    async def list_config_versions(self, limit: int = 50) -> list[ConfigVersion]:
        """Newest first."""
        query = config_versions.select().order_by(config_versions.c.id.desc()).limit(limit)
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [ConfigVersion(**row._mapping) for row in rows]

    async def record_config_mode(self, mode: ConfigMode) -> None:
        """Note the mode a gateway starts in on this store (the last one to start wins), so that the CLI can refuse
        to save versions that a gateway in file mode would never serve."""
        code = _MODES.index(mode) + 1
        async with self._write() as conn:
            insert = _upsert_insert(conn.dialect.name)
            statement = insert(meta).values(name=CONFIG_MODE, value=code)
            # An upsert: two workers starting at once would otherwise both insert the row.
            await conn.execute(statement.on_conflict_do_update(index_elements=[meta.c.name], set_={"value": code}))

    async def config_mode(self) -> ConfigMode | None:
        """The mode recorded by ``record_config_mode``; None if no gateway has started on this store yet."""
        async with self._read() as conn:
            value = await conn.scalar(sa.select(meta.c.value).where(meta.c.name == CONFIG_MODE))
        return None if value is None else _MODES[int(value) - 1]

    async def get_config_version(self, version_id: int) -> ConfigVersion | None:
        async with self._read() as conn:
            row = (await conn.execute(config_versions.select().where(config_versions.c.id == version_id))).first()
        return None if row is None else ConfigVersion(**row._mapping)


def _day(dialect: str, utc_offset: int) -> sa.ColumnElement[str]:
    """A usage record's calendar day ("YYYY-MM-DD") at ``utc_offset`` minutes east of UTC. SQLite keeps times as
    UTC text, which its date() reads; PostgreSQL keeps timestamptz, read in UTC first so the session's zone does
    not count."""
    ts = usage_records.c.ts
    if dialect == "postgresql":
        local = sa.func.timezone("UTC", ts) + sa.func.make_interval(0, 0, 0, 0, 0, utc_offset)
        return sa.func.to_char(local, "YYYY-MM-DD", type_=sa.String)
    return sa.func.date(ts, f"{utc_offset:+d} minutes", type_=sa.String)


def _usage_filters(
    key_id: str | None, model: str | None, since: float | None, until: float | None
) -> list[sa.ColumnElement[bool]]:
    c = usage_records.c
    filters: list[sa.ColumnElement[bool]] = []
    if key_id is not None:
        filters.append(c.key_id == key_id)
    if model is not None:
        filters.append(c.model == model)
    if since is not None:
        filters.append(c.ts >= since)
    if until is not None:
        filters.append(c.ts < until)
    return filters
