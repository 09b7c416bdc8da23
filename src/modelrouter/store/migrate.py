"""Migrating in a child process: ``python -m modelrouter.store.migrate`` brings a database to the newest revision, so
that Alembic (~9 MB once imported, never given back) stays out of a long-running gateway even on its first start or
after an upgrade that brings a migration. ``modelrouter serve`` asks for it (``run_apart``); the CLI's short-lived
commands, tests and library users migrate in their own process, as before.

The child runs ``engine.migrate``, so the locking is the same (PostgreSQL's advisory lock, SQLite's write lock): two
processes starting on a new database still take turns. The database URL goes to the child on its stdin, never on its
command line, where ``ps`` would show the password. Alembic's log lines come back on its stderr and are logged here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import sqlalchemy as sa

from .aio import AsyncEngine
from .engine import HEAD_REVISION, create_engine, current_revision, migrate
from .records import StoreError

__all__ = ["apart", "migrate_apart", "run_apart"]

log = logging.getLogger("modelrouter.store")

_apart = False
# Where this package was imported from: the child imports it from there too, whatever sys.path this process was given.
_SOURCE = str(Path(__file__).resolve().parents[2])


def run_apart(on: bool = True) -> None:
    """Process-wide, for the process owner (``serve``): migrations that are due run in a child process."""
    global _apart
    _apart = on


def apart(url: sa.URL) -> bool:
    """Whether ``Store.open`` migrates ``url`` in a child: when asked to, except for an in-memory SQLite database,
    which a child could not see."""
    return _apart and not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


async def migrate_apart(engine: AsyncEngine, url: sa.URL) -> None:
    """Bring ``url``'s database to the newest revision in a child process, if it is not there yet (a cheap read on
    ``engine`` first: a gateway restarting on an up-to-date store starts no child)."""
    if await current_revision(engine) == HEAD_REVISION:
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SOURCE, env.get("PYTHONPATH")]))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        _, err = await child.communicate(url.render_as_string(hide_password=False).encode())
    except BaseException:
        # Cancelled (a shutdown during startup): the migration is one transaction, so a killed child changed nothing.
        if child.returncode is None:
            child.kill()
        raise
    lines = err.decode(errors="replace").splitlines()
    for line in lines:
        log.log(logging.INFO if child.returncode == 0 else logging.ERROR, "migration: %s", line)
    if child.returncode != 0:
        raise StoreError(f"the migrations failed ({lines[-1] if lines else f'exit code {child.returncode}'})")
    if await current_revision(engine) != HEAD_REVISION:
        raise StoreError("the migrations ran but the database is not at the newest revision")


def _main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    # Alembic names each of its plugins at INFO; the migrations it runs are what the gateway's log should show.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    engine = create_engine(sa.make_url(sys.stdin.read().strip()))

    async def run() -> None:
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
