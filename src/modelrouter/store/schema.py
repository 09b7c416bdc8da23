"""The tables as the queries see them (SQLAlchemy Core). The database itself is created and changed only by the
Alembic migrations in ``migrations/versions``; ``tests/test_store.py`` checks that both agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

__all__ = [
    "CONFIG_MODE",
    "KEYS_VERSION",
    "admin_tokens",
    "admin_users",
    "api_keys",
    "audit_log",
    "config_versions",
    "meta",
    "metadata",
    "usage_records",
]

KEYS_VERSION = "keys_version"  # the `meta` row bumped with every key write
CONFIG_MODE = "config_mode"  # the `meta` row saying in which config mode a gateway last started on this store

# Explicit constraint names, so that later migrations can name what they alter on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UnixTime(sa.TypeDecorator[float]):
    """A real timestamp column (``timestamptz`` on PostgreSQL) that Python sees as unix seconds. SQLite keeps
    no zone, so values are written in UTC and naive values read back as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(value, UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - the dialects return datetimes
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class JSONType(sa.TypeDecorator[Any]):
    """JSON, stored as ``jsonb`` on PostgreSQL (as the migrations create it). A decorator rather than
    ``JSON().with_variant(JSONB(), "postgresql")``, which needs the PostgreSQL dialect's types at import: a store on
    SQLite then never loads that dialect (~2 MB of a gateway's memory)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


# SQLite numbers rows only for a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, index=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("expires_at", UnixTime, nullable=True),
    sa.Column("models", JSONType, nullable=False),
    sa.Column("services", JSONType, nullable=False),
    sa.Column("quotas", JSONType, nullable=False),
    sa.Column("limits", JSONType, nullable=False),
    sa.Column("metadata", JSONType, nullable=False),
    sa.Column("created_at", UnixTime, nullable=False),
    sa.Column("updated_at", UnixTime, nullable=False),
    sa.Column("revoked_at", UnixTime, nullable=True),
)

admin_users = sa.Table(
    "admin_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(200), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", UnixTime, nullable=False),
    sa.Column("updated_at", UnixTime, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="role"),
)

admin_tokens = sa.Table(
    "admin_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("admin_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("created_at", UnixTime, nullable=False),
    sa.Column("expires_at", UnixTime, nullable=False),
    sa.Column("revoked_at", UnixTime, nullable=True),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ts", UnixTime, nullable=False, index=True),
    # The gateway's key id as text: "store:<api_keys.id>", or "config:<name>" for keys from the config file.
    # No foreign key: usage outlives deleted keys.
    sa.Column("key_id", sa.String(200), nullable=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("instance", sa.String(200), nullable=True),
    sa.Column("endpoint", sa.String(100), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("bytes_in", sa.BigInteger, nullable=True),
    sa.Column("bytes_out", sa.BigInteger, nullable=True),
    sa.Index(None, "key_id", "ts"),  # per-key quotas: tokens used by one key since a time
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ts", UnixTime, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target", sa.String(400), nullable=False),
    sa.Column("detail", JSONType, nullable=False),
)

config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", UnixTime, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
