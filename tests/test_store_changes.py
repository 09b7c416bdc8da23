"""Store changes pushed on PostgreSQL (store/changes.py): a key written by one process is heard by a listening
one at once, the listener survives its connection being killed, and SQLite (no notifications) is polled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa

from modelrouter.config.model import StoreConfig
from modelrouter.store import Store

from .conftest import _empty_postgres


async def _heard(events: list[str], what: str, since: int, within: float = 5.0) -> float:
    """Seconds until ``what`` appears in ``events`` after index ``since``."""
    started = time.monotonic()
    while what not in events[since:]:
        assert time.monotonic() - started < within, events
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_a_key_written_elsewhere_is_heard_at_once_and_after_the_connection_is_killed(pg_database: str) -> None:
    async def scenario() -> None:
        await _empty_postgres(pg_database)
        listening = await Store.open(StoreConfig(database_url=pg_database))
        writer = await Store.open(StoreConfig(database_url=pg_database))
        events: list[str] = []
        assert listening.pushes
        task = asyncio.get_running_loop().create_task(listening.listen(events.append))
        try:
            await _heard(events, "listening", 0)
            mark = len(events)
            await writer.create_key("team")
            assert await _heard(events, "keys", mark) < 1.0
            mark = len(events)
            await writer.add_config_version("services: {}\n", author="test")
            assert await _heard(events, "config", mark) < 1.0
            # The listening connection dies (a database restart, a proxy timeout): the feed reconnects by itself.
            mark = len(events)
            async with writer._engine.begin() as conn:
                killed = await conn.scalar(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                    )
                )
            assert killed == 1
            await _heard(events, "listening", mark, within=10)
            mark = len(events)
            await writer.create_key("other")
            assert await _heard(events, "keys", mark) < 1.0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await listening.close()
            await writer.close()

    asyncio.run(scenario())


def test_sqlite_has_no_push_and_is_polled(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(StoreConfig(data_dir=str(tmp_path)))
        try:
            assert not store.pushes
            await asyncio.wait_for(store.listen(lambda _what: None), 1)  # returns at once
        finally:
            await store.close()

    asyncio.run(scenario())
