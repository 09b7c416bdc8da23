"""The store, on SQLite and PostgreSQL: schema from migrations, keys stored as hashes only with a version counter
bumped by every write, admin users with argon2id and expiring tokens, usage, audit, config versions, and two
processes' worth of Store objects sharing one database.

PostgreSQL: a fresh database ``modelrouter_test_<random>`` on 127.0.0.1:5432 (or on the server that
$MODELROUTER_TEST_POSTGRES names) for the session, dropped at the end and emptied before each test. Without a
server the PostgreSQL cases are skipped, except under CI=true where they fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from modelrouter.access import keys
from modelrouter.config.model import KeyQuotas, LimitRule, StoreConfig
from modelrouter.store import (
    ConflictError,
    NotFoundError,
    StaleVersionError,
    Store,
    StoreError,
    UsageRecord,
)
from modelrouter.store.engine import database_url
from modelrouter.store.schema import metadata


class Clock:
    """The store's time, moved by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def config(store_config: StoreConfig) -> StoreConfig:
    """Where a test's store lives: an empty database of each kind (``store_config`` in conftest.py)."""
    return store_config


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(config: StoreConfig, clock: Clock) -> AsyncIterator[Store]:
    store = await Store.open(config, clock=clock)
    yield store
    await store.close()


@pytest.fixture
async def raw(config: StoreConfig) -> AsyncIterator[AsyncEngine]:
    """An engine of its own, to look at the tables as they are on disk."""
    engine = create_async_engine(database_url(config))
    yield engine
    await engine.dispose()


async def rows(engine: AsyncEngine, table: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text(f"SELECT * FROM {table}"))
        return [dict(row._mapping) for row in result]


# --- key helpers -----------------------------------------------------------------------------------------------


def test_new_secret_format() -> None:
    secret = keys.new_secret()
    assert re.fullmatch(r"mr-[A-Za-z0-9_-]{40}", secret)
    assert len({keys.new_secret() for _ in range(1000)}) == 1000
    assert keys.new_secret("mrt-").startswith("mrt-")


def test_hash_prefix_and_compare() -> None:
    assert keys.hash_secret("mr-abc") == hashlib.sha256(b"mr-abc").hexdigest()
    assert keys.prefix_of("mr-0123456789abcdef") == "mr-012345678"
    assert keys.constant_time_equal("abc", "abc")
    assert not keys.constant_time_equal("abc", "abd")
    assert not keys.constant_time_equal("abc", "ab")


# --- opening and the schema ----------------------------------------------------------------------------------


async def test_open_creates_schema_at_newest_revision(store: Store, raw: AsyncEngine) -> None:
    assert [r["version_num"] for r in await rows(raw, "alembic_version")] == ["0001"]
    assert await rows(raw, "meta") == [{"name": "keys_version", "value": 0}]
    assert await store.keys_version() == 0
    assert await store.list_keys() == []


def test_head_revision_is_the_newest_migration() -> None:
    """The store skips Alembic when a database is at HEAD_REVISION: a new migration must move it."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from modelrouter.store.engine import HEAD_REVISION, MIGRATIONS

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD_REVISION]


async def test_schema_matches_migrations(store: Store, raw: AsyncEngine) -> None:
    """_schema.py (what the queries use) and the migrations (what the database has) describe the same tables."""

    def compare(conn: sa.Connection) -> list[Any]:
        diffs: list[Any] = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        return diffs

    async with raw.connect() as conn:
        assert await conn.run_sync(compare) == []


async def test_open_twice_is_idempotent(config: StoreConfig, store: Store, raw: AsyncEngine) -> None:
    record, _ = await store.create_key("a")
    async with await Store.open(config) as again:
        assert await again.list_keys() == [record]
    assert [r["version_num"] for r in await rows(raw, "alembic_version")] == ["0001"]


async def test_sqlite_default_location_and_wal(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "dir"
    async with await Store.open(StoreConfig(data_dir=str(data_dir))) as store:
        assert store.backend == "sqlite"
        assert (data_dir / "modelrouter.db").is_file()
        assert repr(store) == f"<Store sqlite+aiosqlite:///{data_dir.resolve() / 'modelrouter.db'}>"
    engine = create_async_engine(f"sqlite+aiosqlite:///{data_dir / 'modelrouter.db'}")
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
    await engine.dispose()


def test_plain_urls_get_the_async_driver() -> None:
    assert database_url(StoreConfig(database_url="postgresql://u:pw@db/mr")).drivername == "postgresql+asyncpg"
    assert database_url(StoreConfig(database_url="postgres://u@db/mr")).drivername == "postgresql+asyncpg"
    assert database_url(StoreConfig(database_url="sqlite:///x.db")).drivername == "sqlite+aiosqlite"


async def test_unreachable_database_is_a_store_error_without_password() -> None:
    config = StoreConfig(database_url="postgresql://someone:hunter2@127.0.0.1:1/nothing")
    with pytest.raises(StoreError, match="cannot open the store") as exc:
        await Store.open(config)
    assert "hunter2" not in str(exc.value)


# --- keys ----------------------------------------------------------------------------------------------------


async def test_key_secret_is_returned_once_and_only_its_hash_stored(
    store: Store, raw: AsyncEngine, config: StoreConfig
) -> None:
    record, secret = await store.create_key("ci", metadata={"team": "infra"})
    assert re.fullmatch(r"mr-[A-Za-z0-9_-]{40}", secret)
    assert record.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert record.prefix == secret[:12]
    await store.audit("tester", "key.create", f"key:{record.id}", {"prefix": record.prefix})

    [row] = await rows(raw, "api_keys")
    assert row["hash"] == record.hash
    everything = repr([await rows(raw, t) for t in ("api_keys", "audit_log", "meta")])
    assert secret not in everything
    assert secret[12:] not in everything  # not even the part after the displayed prefix
    if config.database_url is None:  # SQLite: not anywhere in the files either
        files = await asyncio.to_thread(lambda: {p: p.read_bytes() for p in Path(config.data_dir).iterdir()})
        assert {p for p, data in files.items() if secret[12:].encode() in data} == set()


async def test_key_settings_round_trip(store: Store, clock: Clock) -> None:
    quotas = KeyQuotas(requests_per_minute=60, max_concurrent=4, daily_tokens=100_000, monthly_tokens=2_000_000)
    limits = (LimitRule(scope="key", rate=10, period=1), LimitRule(scope="key", rate=1000, unit="tokens"))
    expires = clock.now + 86400
    record, _ = await store.create_key(
        "app",
        models=["gpt-4o", "llama3"],
        services=["chat", "embedding"],
        expires_at=expires,
        quotas=quotas,
        limits=limits,
        metadata={"owner": "team-a"},
    )
    assert (await store.get_key(record.id)) == record
    assert record.name == "app"
    assert record.models == ("gpt-4o", "llama3")
    assert record.services == ("chat", "embedding")
    assert record.quotas == quotas
    assert record.limits == limits
    assert record.metadata == {"owner": "team-a"}
    assert record.expires_at == pytest.approx(expires, abs=1e-5)
    assert record.created_at == record.updated_at == pytest.approx(clock.now, abs=1e-5)
    assert record.enabled
    assert not record.revoked
    assert record.is_active(clock.now)


async def test_create_key_rejects_bad_input(store: Store) -> None:
    with pytest.raises(ValueError, match="name"):
        await store.create_key("  ")
    with pytest.raises(ValueError, match="unknown service"):
        await store.create_key("x", services=["chat", "video"])
    assert await store.keys_version() == 0


async def test_keys_version_bumps_with_every_key_write(store: Store) -> None:
    versions = [await store.keys_version()]
    record, _ = await store.create_key("a")
    versions.append(await store.keys_version())
    await store.set_key_enabled(record.id, False)
    versions.append(await store.keys_version())
    await store.set_key_enabled(record.id, True)
    versions.append(await store.keys_version())
    await store.rotate_key(record.id)
    versions.append(await store.keys_version())
    await store.revoke_key(record.id)
    versions.append(await store.keys_version())
    await store.delete_key(record.id)
    versions.append(await store.keys_version())
    assert versions == [0, 1, 2, 3, 4, 5, 6]

    # Reads and non-key writes leave it alone.
    await store.list_keys()
    await store.all_active_keys()
    await store.audit("a", "b", "c")
    await store.create_admin("root", "password1")
    assert await store.keys_version() == 6

    # A failed write does not bump it (its transaction is rolled back).
    with pytest.raises(NotFoundError):
        await store.set_key_enabled(record.id, False)
    assert await store.keys_version() == 6


async def test_get_key_by_id_prefix_or_hash(store: Store) -> None:
    a, secret_a = await store.create_key("a")
    b, _ = await store.create_key("b")
    assert await store.get_key(a.id) == a
    assert await store.get_key(str(b.id)) == b
    assert await store.get_key(a.prefix) == a
    assert await store.get_key("mr-nosuchkey") is None
    assert await store.get_key(999) is None
    assert await store.get_key_by_hash(keys.hash_secret(secret_a)) == a
    assert await store.get_key_by_hash(keys.hash_secret("mr-other")) is None
    assert [k.id for k in await store.list_keys()] == [a.id, b.id]


async def test_disabled_revoked_and_expired_keys_are_not_active(store: Store, clock: Clock) -> None:
    active, _ = await store.create_key("active")
    disabled, _ = await store.create_key("disabled")
    revoked, _ = await store.create_key("revoked")
    expiring, _ = await store.create_key("expiring", expires_at=clock.now + 60)
    disabled = await store.set_key_enabled(disabled.id, False)
    revoked = await store.revoke_key(revoked.id)

    assert {k.name for k in await store.all_active_keys()} == {"active", "expiring"}
    assert not disabled.is_active(clock.now)
    assert revoked.revoked
    assert revoked.enabled
    assert not revoked.is_active(clock.now)
    clock.advance(61)
    assert {k.name for k in await store.all_active_keys()} == {"active"}
    assert not expiring.is_active(clock.now)
    assert active.is_active(clock.now)

    # Revocation is final: it cannot be undone by enabling, and rotating a revoked key makes no sense.
    with pytest.raises(StoreError, match="revoked"):
        await store.set_key_enabled(revoked.id, True)
    with pytest.raises(StoreError, match="revoked"):
        await store.rotate_key(revoked.id)
    first_revocation = revoked.revoked_at
    clock.advance(10)
    assert (await store.revoke_key(revoked.id)).revoked_at == first_revocation
    # A disabled key comes back.
    assert (await store.set_key_enabled(disabled.id, True)).is_active(clock.now)


async def test_rotate_key_keeps_settings_and_kills_the_old_secret(store: Store, clock: Clock) -> None:
    record, old = await store.create_key("svc", models=["m"], quotas=KeyQuotas(max_concurrent=2))
    clock.advance(5)
    new = await store.rotate_key(record.id)
    assert new != old
    rotated = await store.get_key(record.id)
    assert rotated is not None
    assert (rotated.hash, rotated.prefix) == (keys.hash_secret(new), new[:12])
    assert (rotated.name, rotated.models, rotated.quotas) == (record.name, record.models, record.quotas)
    assert rotated.created_at == record.created_at
    assert rotated.updated_at > record.updated_at
    assert await store.get_key_by_hash(keys.hash_secret(old)) is None


async def test_missing_keys_are_not_found(store: Store) -> None:
    record, _ = await store.create_key("gone")
    await store.delete_key(record.id)
    assert await store.get_key(record.id) is None
    for call in (
        store.delete_key(record.id),
        store.set_key_enabled(record.id, True),
        store.revoke_key(record.id),
        store.rotate_key(record.id),
    ):
        with pytest.raises(NotFoundError):
            await call


# --- admin users and tokens ----------------------------------------------------------------------------------


async def test_admin_passwords_are_argon2id(store: Store, raw: AsyncEngine) -> None:
    admin = await store.create_admin("root", "correct horse", "admin")
    await store.create_admin("ops", "battery staple", "operator")
    assert (admin.username, admin.role, admin.disabled) == ("root", "admin", False)
    stored = await rows(raw, "admin_users")
    assert all(r["password_hash"].startswith("$argon2id$") for r in stored)
    assert "correct horse" not in repr(stored)

    assert await store.verify_admin("root", "correct horse") == admin
    assert await store.verify_admin("root", "wrong") is None
    assert await store.verify_admin("nobody", "correct horse") is None
    assert await store.count_admins() == 2
    assert [(a.username, a.role) for a in await store.list_admins()] == [("root", "admin"), ("ops", "operator")]
    assert await store.get_admin("ops") is not None
    assert await store.get_admin("nope") is None

    with pytest.raises(ConflictError):
        await store.create_admin("root", "another one")
    with pytest.raises(ValueError, match="role"):
        await store.create_admin("x", "password1", "superuser")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        await store.create_admin("y", "")


async def test_unknown_user_costs_a_password_check(store: Store) -> None:
    """Login time must not tell whether a username exists: unknown users are checked against a dummy hash."""
    await store.create_admin("root", "correct horse")
    await store.verify_admin("nobody", "x")  # the dummy hash is made once, on first use

    async def timed(username: str) -> float:
        start = time.perf_counter()
        await store.verify_admin(username, "wrong password")
        return time.perf_counter() - start

    known = min([await timed("root") for _ in range(3)])
    unknown = min([await timed("nobody") for _ in range(3)])
    assert unknown > 0.5 * known, (known, unknown)


async def test_disabled_admin_cannot_log_in_or_use_tokens(store: Store) -> None:
    admin = await store.create_admin("root", "correct horse")
    token = await store.create_token(admin.id, 600)
    assert (await store.set_admin_disabled("root", True)).disabled
    assert await store.verify_admin("root", "correct horse") is None
    assert await store.lookup_token(token) is None
    await store.set_admin_disabled("root", False)
    assert await store.lookup_token(token) is not None
    assert (await store.set_admin_role("root", "viewer")).role == "viewer"
    with pytest.raises(NotFoundError):
        await store.set_admin_disabled("nobody", True)


async def test_set_password_replaces_it_and_logs_out(store: Store) -> None:
    admin = await store.create_admin("root", "old password")
    token = await store.create_token(admin.id, 600)
    await store.set_password("root", "new password")
    assert await store.verify_admin("root", "old password") is None
    assert await store.verify_admin("root", "new password") is not None
    assert await store.lookup_token(token) is None
    with pytest.raises(NotFoundError):
        await store.set_password("nobody", "whatever1")


async def test_tokens_expire_and_revoke_and_are_stored_hashed(store: Store, clock: Clock, raw: AsyncEngine) -> None:
    admin = await store.create_admin("root", "correct horse")
    token = await store.create_token(admin.id, ttl_seconds=60)
    assert token.startswith("mrt-")
    [row] = await rows(raw, "admin_tokens")
    assert row["token_hash"] == keys.hash_secret(token)
    assert token not in repr(row)

    assert await store.lookup_token(token) == admin
    assert await store.lookup_token(token + "x") is None
    clock.advance(61)
    assert await store.lookup_token(token) is None

    other = await store.create_token(admin.id, ttl_seconds=60)
    assert await store.revoke_token(other)
    assert await store.lookup_token(other) is None
    assert not await store.revoke_token(other)

    with pytest.raises(NotFoundError):
        await store.create_token(999, 60)
    with pytest.raises(ValueError, match="positive"):
        await store.create_token(admin.id, 0)


# --- usage, audit, config versions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayUsage:
    """Any object with UsageRecord's attributes can be stored (the gateway has its own record type)."""

    ts: float
    key_id: str | None
    model: str
    instance: str | None
    endpoint: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    bytes_in: int
    bytes_out: int


async def test_usage_insert_query_and_totals(store: Store) -> None:
    t0 = 1_700_000_000.0
    await store.insert_usage([])
    await store.insert_usage(
        [
            UsageRecord(
                ts=t0,
                key_id="store:1",
                model="gpt",
                endpoint="chat",
                status=200,
                instance="a",
                prompt_tokens=10,
                completion_tokens=5,
                latency_ms=120.5,
                ttft_ms=30.0,
                bytes_in=100,
                bytes_out=400,
            ),
            UsageRecord(ts=t0 + 1, key_id="store:1", model="gpt", endpoint="chat", status=502),
            UsageRecord(ts=t0 + 2, key_id="store:1", model="emb", endpoint="embeddings", status=200, prompt_tokens=7),
            GatewayUsage(t0 + 3, "config:ci", "gpt", "b", "chat", 200, 1, 2, 50.0, None, 10, 20),
            UsageRecord(ts=t0 + 4, model="gpt", endpoint="chat", status=401),
        ]
    )

    everything = await store.query_usage()
    assert [u.ts for u in everything] == [t0 + 4, t0 + 3, t0 + 2, t0 + 1, t0]  # newest first
    first = everything[-1]
    assert first == UsageRecord(
        ts=t0,
        key_id="store:1",
        model="gpt",
        endpoint="chat",
        status=200,
        instance="a",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=120.5,
        ttft_ms=30.0,
        bytes_in=100,
        bytes_out=400,
        id=first.id,
    )
    assert first.id is not None
    assert len(await store.query_usage(key_id="store:1")) == 3
    window = await store.query_usage(model="gpt", since=t0 + 1, until=t0 + 4)  # since inclusive, until exclusive
    assert [u.key_id for u in window] == ["config:ci", "store:1"]
    assert len(await store.query_usage(limit=2)) == 2

    totals = {(t.key_id, t.model): t for t in await store.usage_totals()}
    assert set(totals) == {("store:1", "gpt"), ("store:1", "emb"), ("config:ci", "gpt"), (None, "gpt")}
    gpt = totals["store:1", "gpt"]
    assert (gpt.requests, gpt.errors, gpt.prompt_tokens, gpt.completion_tokens, gpt.total_tokens) == (2, 1, 10, 5, 15)
    assert (gpt.bytes_in, gpt.bytes_out) == (100, 400)
    assert totals[None, "gpt"].errors == 1
    [since_t2] = await store.usage_totals(key_id="store:1", since=t0 + 2)
    assert (since_t2.model, since_t2.prompt_tokens) == ("emb", 7)


async def test_usage_totals_per_day_in_the_readers_days(store: Store) -> None:
    # 2023-11-14 22:13:20 UTC: 23:30 and 00:30 the next day in UTC; at UTC+8 both on the 15th; at UTC-10 on the 14th.
    t0 = 1_700_000_000.0
    late, next_day = t0 + 4_600, t0 + 8_200
    await store.insert_usage(
        [
            UsageRecord(ts=late, key_id="store:1", model="gpt", endpoint="chat", status=200, prompt_tokens=3),
            UsageRecord(ts=next_day, key_id="store:1", model="gpt", endpoint="chat", status=500),
            UsageRecord(ts=next_day + 1, key_id="store:2", model="gpt", endpoint="chat", status=200),
        ]
    )
    utc = await store.usage_totals(per_day=True)
    assert [(t.day, t.key_id, t.requests, t.errors) for t in utc] == [
        ("2023-11-14", "store:1", 1, 0),
        ("2023-11-15", "store:1", 1, 1),
        ("2023-11-15", "store:2", 1, 0),
    ]
    assert utc[0].last_used == pytest.approx(late, abs=1e-5)
    east = await store.usage_totals(per_day=True, utc_offset=480)
    assert [(t.day, t.key_id, t.requests, t.prompt_tokens) for t in east] == [
        ("2023-11-15", "store:1", 2, 3),
        ("2023-11-15", "store:2", 1, 0),
    ]
    assert east[0].last_used == pytest.approx(next_day, abs=1e-5)
    west = await store.usage_totals(per_day=True, utc_offset=-600, key_id="store:1")
    assert [(t.day, t.requests) for t in west] == [("2023-11-14", 2)]
    [whole] = await store.usage_totals(key_id="store:1")
    assert (whole.day, whole.requests) == (None, 2)
    assert whole.last_used == pytest.approx(next_day, abs=1e-5)


async def test_audit_log_filters_and_pages(store: Store, clock: Clock) -> None:
    for n in range(5):
        await store.audit("admin:ann", "key.create", f"key:{n}")
        clock.advance(1)
    await store.audit("admin:bob", "key_x.odd", "key:9")  # '_' must not act as a wildcard
    await store.audit("admin:bob", "keys", "key:9")  # nor a longer word count as under "key"
    await store.audit("admin:bob", "config.apply", "config")
    await store.audit("admin:bob", "key", "key:9")
    assert [e.action for e in await store.list_audit(action="key")] == ["key"] + ["key.create"] * 5
    assert [e.action for e in await store.list_audit(action="key.create", limit=2)] == ["key.create"] * 2
    assert [e.target for e in await store.list_audit(actor="admin:ann", target="key:3")] == ["key:3"]
    assert {e.actor for e in await store.list_audit(actor="admin:bob")} == {"admin:bob"}
    first = await store.list_audit(limit=3)
    rest = await store.list_audit(limit=100, before_id=first[-1].id)
    assert [e.id for e in first + rest] == sorted((e.id for e in await store.list_audit(1000)), reverse=True)
    assert len(first + rest) == 9
    start = (await store.list_audit(target="key:1"))[0].ts
    window = await store.list_audit(action="key", since=start, until=start + 2)
    assert [e.target for e in window] == ["key:2", "key:1"]


async def test_audit_log(store: Store, clock: Clock) -> None:
    await store.audit("cli:ann", "key.create", "key:1", {"name": "a"})
    clock.advance(1)
    await store.audit("admin:bob", "key.revoke", "key:1")
    [latest, first] = await store.list_audit()
    assert (latest.actor, latest.action, latest.target, latest.detail) == ("admin:bob", "key.revoke", "key:1", {})
    assert (first.actor, first.detail) == ("cli:ann", {"name": "a"})
    assert latest.ts == pytest.approx(first.ts + 1, abs=1e-5)
    assert len(await store.list_audit(limit=1)) == 1


async def test_prune_deletes_usage_and_audit_past_their_retention_in_batches(store: Store, clock: Clock) -> None:
    day = 86400.0
    now = clock.now = float(int(clock.now))  # whole seconds: the store keeps microseconds
    old = [UsageRecord(ts=now - 100 * day + n, model="gpt", endpoint="chat", status=200) for n in range(2500)]
    recent = [UsageRecord(ts=now - 89 * day + n, model="gpt", endpoint="chat", status=200) for n in range(3)]
    await store.insert_usage(old + recent)
    # Three batches of at most 1,000 rows, each its own transaction; the boundary itself is kept.
    assert await store.prune_usage(now - 90 * day, batch=1000) == 2500
    assert sorted(u.ts for u in await store.query_usage()) == [r.ts for r in recent]
    assert await store.prune_usage(now - 90 * day) == 0
    assert await store.prune_usage(recent[1].ts) == 1  # strictly older than `before`
    assert [u.ts for u in await store.query_usage()] == [recent[2].ts, recent[1].ts]

    clock.now = now - 400 * day
    await store.audit("cli:ann", "key.create", "key:1")
    clock.now = now - 10 * day
    await store.audit("admin:bob", "key.revoke", "key:1")
    clock.now = now
    assert await store.prune_audit(now - 365 * day) == 1
    assert [e.actor for e in await store.list_audit()] == ["admin:bob"]
    assert len(await store.query_usage()) == 2  # each table by its own retention


async def test_config_versions(store: Store) -> None:
    v1 = await store.add_config_version("server: {port: 1}\n", author="root", comment="first")
    v2 = await store.add_config_version("server: {port: 2}\n", author="root")
    assert [v.id for v in await store.list_config_versions()] == [v2.id, v1.id]
    assert await store.get_config_version(v1.id) == v1
    assert (v1.config, v1.comment, v2.comment) == ("server: {port: 1}\n", "first", "")
    assert await store.get_config_version(999) is None


async def test_config_versions_are_numbered_and_refuse_stale_writes(store: Store) -> None:
    assert await store.latest_config_version() is None
    assert await store.latest_config_version_id() is None
    v1 = await store.add_config_version("a: 1\n", author="seed", based_on=None)
    assert v1.id == 1
    with pytest.raises(StaleVersionError, match="based on version None, the current one is 1"):
        await store.add_config_version("a: 2\n", author="x", based_on=None)
    v2 = await store.add_config_version("a: 2\n", author="x", based_on=1)
    with pytest.raises(StaleVersionError):
        await store.add_config_version("a: 3\n", author="y", based_on=1)  # made from v1 while v2 came first
    assert (await store.latest_config_version()) == v2
    assert await store.latest_config_version_id() == 2
    assert [v.id for v in await store.list_config_versions()] == [2, 1]


async def test_racing_config_writers_one_wins(config: StoreConfig) -> None:
    """Two processes applying a change made from the same version: exactly one becomes the next version."""
    async with await Store.open(config) as a, await Store.open(config) as b:
        base = await a.latest_config_version_id()
        results = await asyncio.gather(
            *(s.add_config_version(f"w: {i}\n", author=f"w{i}", based_on=base) for i, s in enumerate((a, b, a, b))),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1, results
        assert all(isinstance(r, StaleVersionError) for r in results if r not in won)
        assert won[0].id == (base or 0) + 1


# --- several processes ---------------------------------------------------------------------------------------


async def test_a_key_name_is_taken_once_even_by_concurrent_creators(config: StoreConfig) -> None:
    async with await Store.open(config) as one, await Store.open(config) as other:
        results = await asyncio.gather(
            *(s.create_key("shared") for _ in range(5) for s in (one, other)), return_exceptions=True
        )
        created = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ConflictError)]
        assert (len(created), len(refused)) == (1, 9), results
        assert [k.name for k in await one.list_keys()] == ["shared"]


async def test_two_stores_see_each_others_writes(config: StoreConfig) -> None:
    """What the CLI and a running gateway (or two replicas) do: separate Store objects on one database."""
    async with await Store.open(config) as cli, await Store.open(config) as gateway:
        seen = await gateway.keys_version()
        record, secret = await cli.create_key("from-cli")
        assert await gateway.keys_version() > seen
        assert await gateway.get_key_by_hash(keys.hash_secret(secret)) == record
        await gateway.set_key_enabled(record.id, False)
        assert await cli.all_active_keys() == []

        # Both writing at once: every write lands (SQLite writers wait for each other, none fails).
        before = await cli.keys_version()
        await asyncio.gather(
            *(s.create_key(f"{who}-{i}") for i in range(20) for who, s in (("cli", cli), ("gw", gateway)))
        )
        assert len(await cli.list_keys()) == 41
        assert await gateway.keys_version() == before + 40


def test_the_gateway_prunes_its_store_in_the_background(
    start_gateway: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelrouter.control import housekeeping
    from modelrouter.store.schema import audit_log

    monkeypatch.setattr(housekeeping, "PRUNE_FIRST", 0.0)
    monkeypatch.setattr(housekeeping, "PRUNE_INTERVAL", 0.05)
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "usage": {"enabled": True, "retention_days": 30},
            "admin": {"audit_retention_days": 60},
        }
    )
    store: Store = gw.gateway.store
    day, now = 86400.0, time.time()
    records = [UsageRecord(ts=now - days * day, model="m", endpoint="chat", status=200) for days in (40, 31, 29, 1)]

    async def fill() -> None:
        await store.insert_usage(records)
        async with store._write() as conn:
            for days in (70, 50):
                await conn.execute(
                    audit_log.insert().values(ts=now - days * day, actor="a", action="x", target="t", detail={})
                )

    gw.bg.run(fill())

    async def left() -> tuple[list[float], list[float]]:
        return [u.ts for u in await store.query_usage()], [e.ts for e in await store.list_audit()]

    deadline = time.monotonic() + 10
    while len(gw.bg.run(left())[0]) > 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    usage, audit = gw.bg.run(left())
    assert usage == pytest.approx([now - 1 * day, now - 29 * day])
    assert audit[-1:] == pytest.approx([now - 50 * day])  # the audit log by its own, longer, retention
    follower = gw.gateway._follower
    assert follower is not None
    pruner = next(task for task in follower._tasks if task.get_name() == "store prune")
    assert not pruner.done()
    gw.stop()
    assert pruner.done()
