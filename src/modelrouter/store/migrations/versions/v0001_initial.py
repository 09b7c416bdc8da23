"""Initial schema: keys, admin users and tokens, usage, audit, config versions, meta.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the types in schema.py: a released revision must not change when the code does.
_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_bigid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        _time("expires_at", nullable=True),
        sa.Column("models", _json, nullable=False),
        sa.Column("services", _json, nullable=False),
        sa.Column("quotas", _json, nullable=False),
        sa.Column("limits", _json, nullable=False),
        sa.Column("metadata", _json, nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("hash", name=op.f("uq_api_keys_hash")),
    )
    op.create_index(op.f("ix_api_keys_prefix"), "api_keys", ["prefix"])

    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name=op.f("ck_admin_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_users")),
        sa.UniqueConstraint("username", name=op.f("uq_admin_users_username")),
    )

    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("admin_id", sa.Integer, nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["admin_id"], ["admin_users.id"], name=op.f("fk_admin_tokens_admin_id_admin_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_admin_tokens_token_hash")),
    )
    op.create_index(op.f("ix_admin_tokens_admin_id"), "admin_tokens", ["admin_id"])

    op.create_table(
        "usage_records",
        sa.Column("id", _bigid, nullable=False),
        _time("ts"),
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
    )
    op.create_index(op.f("ix_usage_records_ts"), "usage_records", ["ts"])
    op.create_index(op.f("ix_usage_records_key_id_ts"), "usage_records", ["key_id", "ts"])

    op.create_table(
        "audit_log",
        sa.Column("id", _bigid, nullable=False),
        _time("ts"),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("detail", _json, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_ts"), "audit_log", ["ts"])

    op.create_table(
        "config_versions",
        sa.Column("id", sa.Integer, nullable=False),
        _time("created_at"),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_versions")),
    )

    meta = op.create_table(
        "meta",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_meta")),
    )
    op.bulk_insert(meta, [{"name": "keys_version", "value": 0}])


def downgrade() -> None:
    for table in ("meta", "config_versions", "audit_log", "usage_records", "admin_tokens", "admin_users", "api_keys"):
        op.drop_table(table)
