"""The asyncio face of SQLAlchemy Core that the store uses: ``AsyncEngine`` and ``AsyncConnection``, whose coroutines
run SQLAlchemy's synchronous methods through its greenlet bridge (``sqlalchemy.util.concurrency``), the way
``sqlalchemy.ext.asyncio`` does.

Why not that package: importing it imports its ``AsyncSession`` and with it the whole ORM, which the store never uses
(Core tables and statements only) - about 6 MB of every gateway's idle memory. Only what the store calls is here.
Results are SQLAlchemy's own ``CursorResult``: the asyncio drivers fetch every row before ``execute`` returns (no
server-side cursors are ever asked for), so reading one needs no await.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.util.concurrency import greenlet_spawn

__all__ = ["AsyncConnection", "AsyncEngine", "create_async_engine"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def create_async_engine(url: sa.URL, **options: Any) -> AsyncEngine:
    """As ``sqlalchemy.ext.asyncio.create_async_engine``: ``_is_async`` gives the dialect its asyncio adaptation and
    the engine a pool that is safe to use from the event loop."""
    return AsyncEngine(sa.create_engine(url, _is_async=True, **options))


async def _to_completion(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` (giving a connection back to the pool) to its end even if the caller is cancelled meanwhile,
    then let the cancellation through: abandoned halfway, the connection would be lost to the pool, or returned to
    it after the engine was disposed."""
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                raise
            cancelled = exc
        else:
            break
    if cancelled is not None:
        raise cancelled


class AsyncConnection:
    """One pooled connection; use it inside ``AsyncEngine.connect()`` or ``begin()``, which give it back."""

    __slots__ = ("sync_connection",)

    def __init__(self, sync_connection: Connection) -> None:
        self.sync_connection = sync_connection

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync_connection.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        # _require_await: a statement that never waited on the driver means a synchronous driver slipped in.
        result: CursorResult[Any] = await greenlet_spawn(
            self.sync_connection.execute, statement, parameters, _require_await=True
        )
        return result

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> CursorResult[Any]:
        result: CursorResult[Any] = await greenlet_spawn(
            self.sync_connection.exec_driver_sql, statement, parameters, _require_await=True
        )
        return result

    async def run_sync(self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs) -> _T:
        """``fn(sync_connection, ...)``: synchronous SQLAlchemy code (Alembic, the inspector) on this connection."""
        return await greenlet_spawn(functools.partial(fn, self.sync_connection, *args, **kw))

    async def get_raw_connection(self) -> PoolProxiedConnection:
        """The pool's DBAPI connection (``.driver_connection`` is asyncpg's or aiosqlite's own)."""
        raw: PoolProxiedConnection = await greenlet_spawn(getattr, self.sync_connection, "connection")
        return raw

    async def close(self) -> None:
        await greenlet_spawn(self.sync_connection.close)


class AsyncEngine:
    """A pool of connections to one database; ``dispose()`` closes them."""

    __slots__ = ("sync_engine",)

    def __init__(self, sync_engine: Engine) -> None:
        self.sync_engine = sync_engine

    @property
    def url(self) -> sa.URL:
        return self.sync_engine.url

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync_engine.dialect

    def execution_options(self, **options: Any) -> AsyncEngine:
        """The same pool, its connections carrying ``options`` (seen by the engine's event listeners)."""
        return AsyncEngine(self.sync_engine.execution_options(**options))

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection; closing it on exit rolls back whatever transaction it still has."""
        conn = AsyncConnection(await greenlet_spawn(self.sync_engine.connect))
        try:
            yield conn
        finally:
            await _to_completion(conn.close())

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on a normal exit and rolled back on an exception."""
        async with self.connect() as conn:
            transaction = await greenlet_spawn(conn.sync_connection.begin)
            try:
                yield conn
            except BaseException as exc:
                await greenlet_spawn(transaction.__exit__, type(exc), exc, exc.__traceback__)
                raise
            await greenlet_spawn(transaction.__exit__, None, None, None)

    async def dispose(self) -> None:
        await greenlet_spawn(self.sync_engine.dispose)
