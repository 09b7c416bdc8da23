"""A SQLite store belongs to one machine (state/machines.py, store/engine.py): a replica on another host that
shares the Redis but has its own SQLite file refuses to start, with what to do; processes of one host share the
claim; a SQLite file on a network filesystem is refused."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from modelrouter.config.model import StoreConfig
from modelrouter.state import SharedState
from modelrouter.state.machines import CLAIM_SECONDS, SQLiteClaim
from modelrouter.store import Store
from modelrouter.store.engine import network_filesystem
from modelrouter.store.records import StoreError
from tests.conftest import REDIS_URL, _redis_or_skip

MOUNTS = """\
/dev/vda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
fileserver:/export/data /mnt/shared nfs4 rw,relatime,vers=4.2 0 0
//nas/share /mnt/my\\040nas cifs rw 0 0
tmpfs /mnt/shared/tmp tmpfs rw 0 0
"""


async def test_a_replica_on_another_host_with_its_own_sqlite_is_refused(state: SharedState) -> None:
    first = SQLiteClaim(state, "/srv/a/modelrouter.db", host="machine-a")
    await first.take()
    same_host = SQLiteClaim(state, "/srv/a/modelrouter.db", host="machine-a")
    await same_host.take()  # another process of the same machine: fine
    other = SQLiteClaim(state, "/srv/b/modelrouter.db", host="machine-b")
    with pytest.raises(StoreError, match=r"replica on host 'machine-a'.*store\.database_url \(PostgreSQL\)"):
        await other.take()
    ttl = await state.redis.ttl(first.key)
    assert 0 < ttl <= CLAIM_SECONDS  # a stopped replica's claim lapses
    first.stop()
    same_host.stop()


async def test_a_claim_that_lapsed_is_taken_by_the_next_host(state: SharedState) -> None:
    await state.redis.set(state.key("store:sqlite"), "machine-a", px=50)
    await asyncio.sleep(0.1)
    claim = SQLiteClaim(state, "/srv/b/modelrouter.db", host="machine-b")
    await claim.take()
    assert await state.redis.get(claim.key) == b"machine-b"
    claim.stop()


def test_the_gateway_refuses_to_start_next_to_another_hosts_sqlite(tmp_path: Path) -> None:
    from modelrouter.app import Gateway
    from modelrouter.config.model import Config

    prefix = f"mrtest:{secrets.token_hex(6)}:"
    config = Config.model_validate(
        {
            "state": {"backend": "redis", "url": REDIS_URL, "prefix": prefix, "timeout_ms": 2000},
            "store": {"data_dir": str(tmp_path)},
            "auth": {"enabled": True},
            "services": {"chat": {"instances": [{"name": "m", "base_url": "http://127.0.0.1:9"}]}},
        }
    )

    async def scenario() -> None:
        seeded = SharedState(config.state)
        await _redis_or_skip(seeded)
        await seeded.redis.set(seeded.key("store:sqlite"), "some-other-machine", ex=60)
        gateway = Gateway(config)
        try:
            with pytest.raises(StoreError, match="some-other-machine"):
                await gateway.startup()
            assert gateway.store is None  # closed again
        finally:
            await gateway.shutdown()
            await seeded.redis.delete(seeded.key("store:sqlite"))
            await seeded.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/mnt/shared/gw/modelrouter.db", "nfs4"),
        ("/mnt/shared", "nfs4"),
        ("/mnt/my nas/x.db", "cifs"),
        ("/mnt/shared/tmp/x.db", None),  # a local mount inside the network one
        ("/mnt/sharedness/x.db", None),  # not inside /mnt/shared
        ("/var/lib/modelrouter/x.db", None),
    ],
)
def test_network_filesystems_are_recognised(path: str, kind: str | None) -> None:
    assert network_filesystem(Path(path), MOUNTS) == kind


def test_a_sqlite_store_on_a_network_filesystem_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelrouter.store import engine

    mounts = f"/dev/vda1 / ext4 rw 0 0\nserver:/x {tmp_path} nfs rw 0 0\n"
    real = engine.network_filesystem
    monkeypatch.setattr(engine, "network_filesystem", lambda path, _=None: real(path, mounts))

    async def scenario() -> None:
        with pytest.raises(StoreError, match=r"network filesystem \(nfs\).*PostgreSQL"):
            await Store.open(StoreConfig(data_dir=str(tmp_path / "data")))

    asyncio.run(scenario())
