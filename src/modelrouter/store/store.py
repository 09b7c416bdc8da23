"""``Store``: the one object the rest of modelrouter uses for persistence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ..config.model import StoreConfig
from .activity import ActivityStore
from .admins import AdminStore
from .aio import AsyncEngine
from .changes import ChangeFeed
from .engine import check_sqlite_file, create_engine, database_url, has_schema, location, migrate
from .keys import KeyStore
from .migrate import apart, migrate_apart
from .records import NoStoreError, StoreError

__all__ = ["Store"]


class Store(KeyStore, AdminStore, ActivityStore, ChangeFeed):
    """Keys, admin users and tokens, usage, audit log and config versions, in SQLite or PostgreSQL.

    Safe to use from several processes at once (the gateway, the CLI, replicas): every write is one transaction,
    ``keys_version()`` tells a process cheaply when keys changed elsewhere, and on PostgreSQL ``listen`` hears it
    at once (``changes.py``). Methods are coroutines and return frozen records (``_records``), never database
    rows. ``clock`` (unix seconds) exists for tests."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(engine, clock=clock)

    @classmethod
    async def open(cls, config: StoreConfig, *, create: bool = True, clock: Callable[[], float] = time.time) -> Store:
        """Connect and bring the schema to the newest migration. With ``create`` (the gateway, ``store init``)
        a missing SQLite file is made and an empty database gets the schema; without it (the other CLI commands,
        which must not make a store in the wrong place) they raise ``NoStoreError`` and nothing is written."""
        url = database_url(config, create=create)
        where = location(url)
        on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        # Checked before connecting: connecting would create the file.
        if not create and on_disk and not await asyncio.to_thread(Path(str(url.database)).is_file):
            raise NoStoreError(where)
        if on_disk:
            check_sqlite_file(Path(str(url.database)))
        engine = create_engine(url)
        try:
            if not create and not await has_schema(engine):
                raise NoStoreError(where, "the database has no modelrouter tables")
            await (migrate_apart(engine, url) if apart(url) else migrate(engine))
        except NoStoreError:
            await engine.dispose()
            raise
        except Exception as exc:
            await engine.dispose()
            raise StoreError(f"cannot open the store at {where}: {exc}") from exc
        return cls(engine, clock=clock)

    @staticmethod
    def location(config: StoreConfig) -> str:
        """Where ``config`` puts the store (the SQLite file, or the URL without its password); creates nothing."""
        return location(database_url(config, create=False))

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def where(self) -> str:
        """As ``location``: the SQLite file, or the URL without its password."""
        return location(self._engine.url)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"<Store {self.url}>"
