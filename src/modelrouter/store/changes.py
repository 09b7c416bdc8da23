"""Changes pushed between processes: a write to keys or config versions on PostgreSQL also sends a NOTIFY, and
every gateway LISTENs, so a key created, disabled or revoked - by the CLI, the admin API, another replica - or a
new config version reaches every replica in milliseconds instead of at its next poll.

The poll stays (``store.refresh_interval``): it is the fallback for a notification missed while the listening
connection was down, and the only way on SQLite, which has no notifications (one machine's processes share a
SQLite file; polling it is cheap). A notification only says "look now"; what changed is always read from the
tables, so a duplicate or a stray one costs one cheap read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .aio import AsyncConnection
from .base import StoreBase

__all__ = ["CHANNEL", "ChangeFeed", "announce"]

CHANNEL = "modelrouter_changes"
_CHECK_EVERY = 15.0  # a query on the listening connection this often: a dead one shows, and is replaced
_MAX_BACKOFF = 10.0

log = logging.getLogger("modelrouter.store")


async def announce(conn: AsyncConnection, what: str) -> None:
    """In a writing transaction: when it commits, tell every listening gateway that ``what`` changed (``keys``,
    ``config``). Nothing on SQLite."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, what)))


class ChangeFeed(StoreBase):
    @property
    def pushes(self) -> bool:
        """Whether ``listen`` hears changes (PostgreSQL), or returns at once (SQLite)."""
        return self._engine.dialect.name == "postgresql"

    async def listen(self, changed: Callable[[str], None]) -> None:
        """Call ``changed(what)`` for every change announced, until cancelled; on a lost connection, reconnect
        with a growing back-off and call ``changed("reconnected")`` (something may have been missed)."""
        if not self.pushes:
            return
        loop = asyncio.get_running_loop()
        backoff = 0.5
        while True:
            started = loop.time()
            try:
                await self._listen_once(changed)
            except Exception as exc:  # the database away, a driver error: never the end of the feed
                log.warning("listening for store changes failed (%r); polling meanwhile, retrying", exc)
            if loop.time() - started > _CHECK_EVERY:
                backoff = 0.5  # it had been listening: a fresh failure
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _listen_once(self, changed: Callable[[str], None]) -> None:
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg's connection
            lost = asyncio.Event()

            def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                changed(payload)

            def terminated(_conn: Any) -> None:
                lost.set()

            await driver.add_listener(CHANNEL, heard)
            driver.add_termination_listener(terminated)
            try:
                changed("listening")  # whatever happened before now is read by the poll this wakes
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), _CHECK_EVERY)
                    if not lost.is_set():
                        await asyncio.wait_for(driver.execute("SELECT 1"), _CHECK_EVERY)
            finally:
                driver.remove_termination_listener(terminated)
                if not driver.is_closed():
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(CHANNEL, heard)
            raise OSError("the connection listening for store changes was closed")
