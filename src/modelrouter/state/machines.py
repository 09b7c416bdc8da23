"""A SQLite store belongs to one machine. Replicas on several machines that share one Redis but each open their
own SQLite file would each hold a different truth - a key created on one machine unknown on the others, usage
records scattered - while their limits look shared. And one SQLite file on a network filesystem, opened from
several machines, breaks SQLite's locking (it corrupts databases). Both are refused at startup with what to do:
``store.database_url`` on PostgreSQL, the documented store for several machines (the second by ``Store.open``,
store/engine.py).

The first is seen in Redis: a replica on SQLite claims ``{prefix}store:sqlite`` for its host (renewed while it
runs, expiring ``CLAIM_SECONDS`` after it stops); a replica of another host finding the claim refuses to start.
Processes of one machine (``serve --workers N``, several gateways on one host) share the file and the claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from ..store.records import StoreError
from .connection import SharedState

__all__ = ["CLAIM_SECONDS", "SQLiteClaim"]

CLAIM_SECONDS = 120
log = logging.getLogger("modelrouter.state")


class SQLiteClaim:
    """This host's claim on the Redis that ``state`` names, for a SQLite store at ``location``."""

    def __init__(self, state: SharedState, location: str, host: str | None = None) -> None:
        self.state = state
        self.location = location
        self.host = host or socket.gethostname()
        self.key = state.key("store:sqlite")
        self._renewer: asyncio.Task[None] | None = None

    async def take(self) -> None:
        """Claim, or raise StoreError if a replica of another host holds the claim. Redis not answering: logged,
        not refused (the gateway must start while Redis is away)."""
        redis = self.state.redis
        try:
            async with asyncio.timeout(max(self.state.timeout, 1.0)):
                if not await redis.set(self.key, self.host, nx=True, ex=CLAIM_SECONDS):
                    owner = await redis.get(self.key)
                    owner_name = owner.decode() if isinstance(owner, bytes) else str(owner)
                    if owner is not None and owner_name != self.host:
                        raise StoreError(
                            f"the store is SQLite on this machine ({self.location}), but a replica on host "
                            f"{owner_name!r} uses the same Redis (state.prefix {self.state.prefix!r}) with its own "
                            "SQLite store: keys and usage would differ from machine to machine. Give every replica "
                            "the same store.database_url (PostgreSQL), or each machine a state.prefix of its own "
                            f"(a stopped replica's claim expires within {CLAIM_SECONDS} s)"
                        )
                    await redis.set(self.key, self.host, ex=CLAIM_SECONDS)
        except StoreError:
            raise
        except Exception as exc:
            log.warning("could not check in Redis that no other machine uses its own SQLite store: %r", exc)
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever(), name="sqlite claim")

    async def _renew_forever(self) -> None:
        """Kept while this process runs; it lapses ``CLAIM_SECONDS`` after the host's last process stops."""
        redis = self.state.redis
        while True:
            await asyncio.sleep(CLAIM_SECONDS / 4)
            with contextlib.suppress(Exception):  # Redis away: renewed next time, or taken again at a restart
                if await redis.set(self.key, self.host, nx=True, ex=CLAIM_SECONDS):
                    continue
                owner = await redis.get(self.key)
                if owner is not None and (owner.decode() if isinstance(owner, bytes) else owner) != self.host:
                    # Another machine claimed while this host's claim had lapsed (Redis lost it): not this
                    # process's to end, but never silent.
                    log.error("replicas on %r and on this host use their own SQLite stores with one Redis", owner)
                else:
                    await redis.expire(self.key, CLAIM_SECONDS)

    def stop(self) -> None:
        """At shutdown: stop renewing (the claim lapses unless another process of this host renews it)."""
        if self._renewer is not None:
            self._renewer.cancel()

    def __repr__(self) -> str:
        return f"<SQLiteClaim {self.key!r} by {self.host!r}>"
