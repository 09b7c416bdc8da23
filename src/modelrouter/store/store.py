"""``Store``: the one object the rest of modelrouter uses for persistence."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from ..config.model import StoreConfig
from ._activity import ActivityStore
from ._admins import AdminStore
from ._engine import create_engine, database_url, migrate
from ._keys import KeyStore
from ._records import StoreError

__all__ = ["Store"]


class Store(KeyStore, AdminStore, ActivityStore):
    """Keys, admin users and tokens, usage, audit log and config versions, in SQLite or PostgreSQL.

    Safe to use from several processes at once (the gateway, the CLI, replicas): every write is one transaction,
    and ``keys_version()`` tells a process cheaply when keys changed elsewhere. Methods are coroutines and return
    frozen records (``_records``), never database rows. ``clock`` (unix seconds) exists for tests."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(engine, clock=clock)

    @classmethod
    async def open(cls, config: StoreConfig, *, clock: Callable[[], float] = time.time) -> Store:
        """Connect and bring the schema to the newest migration (creating it in an empty database)."""
        url = database_url(config)
        engine = create_engine(url)
        try:
            await migrate(engine)
        except Exception as exc:
            await engine.dispose()
            raise StoreError(f"cannot open the store at {url.render_as_string(hide_password=True)}: {exc}") from exc
        return cls(engine, clock=clock)

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
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def __repr__(self) -> str:
        return f"<Store {self.url}>"
