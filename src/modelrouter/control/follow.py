"""``StoreFollower``: keeps one gateway process in step with what other processes write to the store - the CLI,
the admin API of another replica, another worker.

The key version is polled every ``store.refresh_interval`` (a key created, disabled or revoked anywhere is
honoured within it) and, in store mode, the newest config version; on PostgreSQL the store also pushes
(``store/changes.py``) and a notification wakes the poll at once. With ``state.backend: redis`` on a SQLite store
it holds this host's claim (``state/machines.py``), so that replicas of other hosts with SQLite stores of their
own are refused. And it prunes old usage records and audit entries (``housekeeping.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .housekeeping import prune_forever

if TYPE_CHECKING:
    from ..config.model import Config
    from ..state import SharedState
    from ..state.machines import SQLiteClaim
    from ..store import KeyRecord, Store
    from .source import ConfigControl

__all__ = ["StoreFollower"]

log = logging.getLogger("modelrouter")


class StoreFollower:
    """``on_keys(records)`` gets the store's active keys whenever they changed; ``control`` (if any) is refreshed
    on every poll. ``config()`` is the running config, read each time (a reload may change the poll's period and
    the retention). It also runs the pruning of old usage records and audit entries (``housekeeping.py``)."""

    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        on_keys: Callable[[list[KeyRecord]], None],
        control: ConfigControl | None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_keys = on_keys
        self.control = control
        self.claim: SQLiteClaim | None = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def claim_sqlite(self, shared: SharedState, location: str) -> None:
        """Before serving: raise StoreError if a replica of another host uses its own SQLite store with the same
        Redis (``SQLiteClaim``)."""
        from ..state.machines import SQLiteClaim

        self.claim = SQLiteClaim(shared, location)
        await self.claim.take()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll(), name="store poll"))
        retention = lambda: (self.config().usage.retention_days, self.config().admin.audit_retention_days)  # noqa: E731
        # Cancelled at stop: a prune stopped between or within a batch leaves only fewer rows to delete.
        self._tasks.append(loop.create_task(prune_forever(self.store, retention), name="store prune"))
        if self.store.pushes:
            listen = self.store.listen(lambda _what: self._changed.set())
            self._tasks.append(loop.create_task(listen, name="store changes"))

    async def stop(self) -> None:
        if self.claim is not None:
            self.claim.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _poll(self) -> None:
        version = -1
        while True:
            self._changed.clear()
            try:
                current = await self.store.keys_version()
                if current != version:
                    self.on_keys(await self.store.all_active_keys())
                    version = current
                if self.control is not None:
                    await self.control.refresh()
            except Exception as exc:  # the store is down: keep what we have, try again
                log.warning("could not refresh keys or config from the store: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.config().store.refresh_interval)

    def __repr__(self) -> str:
        return f"<StoreFollower {self.store!r}>"
