"""Connecting: the database URL from ``StoreConfig``, SQLite settings for sharing one file between processes,
and bringing the schema to the newest migration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from ..config.model import StoreConfig
from .aio import AsyncEngine, create_async_engine
from .records import StoreError

__all__ = [
    "HEAD_REVISION",
    "WRITE",
    "check_sqlite_file",
    "create_engine",
    "current_revision",
    "database_url",
    "has_schema",
    "location",
    "migrate",
    "network_filesystem",
]

# The newest migration's revision (tests/test_store.py checks it against the scripts). A database already there is
# opened without importing Alembic, which would otherwise stay in every gateway's memory (~12 MB) for nothing.
HEAD_REVISION = "0001"

DB_FILE = "modelrouter.db"
MIGRATIONS = Path(__file__).parent / "migrations"
# How long a SQLite writer waits for another process's write to finish before "database is locked".
BUSY_TIMEOUT_MS = 10_000
# Execution option marking a connection that will write (see _sqlite_begin).
WRITE = "modelrouter_write"
# Any fixed number: PostgreSQL advisory lock held while migrating, so replicas starting together take turns.
_MIGRATION_LOCK = 0x6D726F75746572  # "mrouter"

# Users write the plain scheme; the store needs the asyncio driver.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs", "fuse.sshfs", "fuse.s3fs"}
)


def network_filesystem(path: Path, mounts: str | None = None) -> str | None:
    """The type of the network filesystem ``path`` is on (from /proc/mounts), or None (local, or not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    best, kind = "", None
    target = str(path)
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind if kind in NETWORK_FILESYSTEMS else None


def check_sqlite_file(database: Path) -> None:
    """Refuse a SQLite file on a network filesystem."""
    kind = network_filesystem(database.resolve().parent)
    if kind is not None:
        raise StoreError(
            f"the SQLite store {database} is on a network filesystem ({kind}): SQLite's locking does not work "
            "across machines and databases get corrupted. Use store.database_url (PostgreSQL) for replicas on "
            "several machines, or keep the SQLite file on a local disk"
        )


def database_url(config: StoreConfig, *, create: bool = True) -> sa.URL:
    """``config.database_url``, or SQLite in ``data_dir`` (the directory made if missing, with ``create``)."""
    if config.database_url:
        try:
            url = sa.make_url(config.database_url)
        except (sa.exc.ArgumentError, ValueError):  # a bad port is a ValueError; messages may repeat the password
            raise StoreError("store.database_url is not a database URL (e.g. postgresql://user@host/db)") from None
        return url.set(drivername=_ASYNC_DRIVERS.get(url.drivername, url.drivername))
    data_dir = Path(config.data_dir).expanduser()
    if create:
        data_dir.mkdir(parents=True, exist_ok=True)
    return sa.URL.create("sqlite+aiosqlite", database=str((data_dir / DB_FILE).resolve()))


def location(url: sa.URL) -> str:
    """Where the store is, to show a user: the SQLite file, or the URL without its password (in the URL or,
    as drivers also take it, in the query string)."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)


def create_engine(url: sa.URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url)
        _configure_sqlite(engine.sync_engine)
        return engine
    # A pooled connection may have been cut by a database restart since it was last used.
    return create_async_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: sa.Engine) -> None:
    """WAL lets readers (the gateway polling for key changes) go on while the CLI writes, and the busy timeout
    makes a second writer wait instead of failing. The driver's own transaction handling is replaced by explicit
    BEGINs, so that DDL is transactional and writers take the write lock up front."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",  # safe with WAL: a power cut may lose the last commits, not the file
            "PRAGMA foreign_keys = ON",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: sa.Connection) -> None:
        # A deferred transaction that reads and then writes fails at once (no busy wait) when another process
        # wrote in between; IMMEDIATE takes the write lock first, waiting up to the busy timeout.
        write = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to the newest revision, in one transaction that also holds a lock so that two
    processes opening a new database at once take turns. Alembic is synchronous; ``run_sync`` hands it the
    connection."""
    async with engine.execution_options(**{WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        if await _current_revision(connection) != HEAD_REVISION:
            await connection.run_sync(_upgrade)


async def has_schema(engine: AsyncEngine) -> bool:
    """Whether the database has modelrouter's schema (at any revision); a read, it changes nothing."""
    return await current_revision(engine) is not None


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema's revision (None: no modelrouter schema), read with the driver already in use: no Alembic."""
    async with engine.connect() as connection:
        return await _current_revision(connection)


async def _current_revision(connection: Any) -> str | None:
    def read(sync: sa.Connection) -> str | None:
        if not sa.inspect(sync).has_table("alembic_version"):
            return None
        return sync.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    revision: str | None = await connection.run_sync(read)
    return revision


def _upgrade(connection: sa.Connection) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))  # "%" interpolates
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
