"""What a gateway with its store open loads (issue 19: idle memory): a real ``modelrouter serve`` in a child process
reports its ``sys.modules`` once ``/health`` answers. On an up-to-date store neither Alembic nor the ORM nor the
PostgreSQL dialect is imported; on a new store or an old schema the migrations still run - in a child of their own,
so Alembic stays out of the gateway then too. The memory figures themselves are measured by bench/idle_rss.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelrouter.config.model import StoreConfig
from modelrouter.store.engine import HEAD_REVISION, database_url

from .servers import free_port

SRC = Path(__file__).resolve().parent.parent / "src"

# Started with ``serve``'s own main(); a thread waits for /health, writes sys.modules and stops the gateway.
_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time, urllib.request
    port, data_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        with open(out, "w") as fh:
            json.dump(sorted(sys.modules), fh)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    from modelrouter.cli.main import main
    sys.exit(main(["serve", "--port", port, "--data-dir", data_dir]))
    """
)

# Loaded only when needed: migrations, a PostgreSQL store, the ORM (never), a login, websockets (never), Redis and
# Prometheus (only when configured; the embedded default config has neither).
NOT_LOADED = (
    "alembic",
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql",
    "asyncpg",
    "argon2",
    "wsproto",
    "websockets",
    "redis",
    "prometheus_client",
)


def serve_modules(data_dir: Path, tmp_path: Path) -> tuple[set[str], str]:
    """The modules of a gateway started on ``data_dir``, once healthy, and its output."""
    out = tmp_path / f"modules-{len(list(tmp_path.iterdir()))}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(free_port()), str(data_dir), str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(out.read_text())), done.stderr


def loaded(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def revision(data_dir: Path) -> str | None:
    engine = sa.create_engine(database_url(StoreConfig(data_dir=str(data_dir))).set(drivername="sqlite"))
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_gateway_on_a_new_store_migrates_in_a_child(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    modules, output = serve_modules(data_dir, tmp_path)
    assert revision(data_dir) == HEAD_REVISION
    assert "Running upgrade  -> 0001" in output  # Alembic's own log line, relayed from the child
    assert loaded(modules, "sqlalchemy")  # the store is open
    assert not loaded(modules, "alembic")
    assert not loaded(modules, "sqlalchemy.orm")


def test_gateway_on_an_up_to_date_store_loads_only_what_serving_needs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve_modules(data_dir, tmp_path)  # creates the store and its first admin
    modules, output = serve_modules(data_dir, tmp_path)
    assert "Running upgrade" not in output
    assert loaded(modules, "sqlalchemy.dialects.sqlite")
    assert [name for name in NOT_LOADED if loaded(modules, name)] == []


def test_gateway_migrates_an_existing_database_below_the_newest_revision(tmp_path: Path) -> None:
    """A database file that exists but is below the newest revision (with a single migration so far: at "base",
    holding something else) is brought up to date by the child, and what it held is kept."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine = sa.create_engine(database_url(StoreConfig(data_dir=str(data_dir))).set(drivername="sqlite"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (body TEXT)"))
        conn.execute(sa.text("INSERT INTO notes VALUES ('kept')"))
    modules, output = serve_modules(data_dir, tmp_path)
    assert "Running upgrade  -> 0001" in output
    assert not loaded(modules, "alembic")
    assert revision(data_dir) == HEAD_REVISION
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT body FROM notes")).scalar() == "kept"
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_still_migrates_in_process(url: str) -> None:
    from modelrouter.store import migrate

    assert not migrate.apart(sa.make_url(url))
