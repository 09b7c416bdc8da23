"""``state.sentinel``: the gateway finds Redis through Sentinel, and a failover (the master killed, its replica
promoted) does not lose the counts or need a restart. Real redis-server processes of the test's own: a master,
its replica and one Sentinel, on free ports, stopped by pid."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .fakes import FakeOpenAI
from .servers import free_port
from .test_lifecycle import wait_until
from .test_scale_out import PrivateRedis, _chat_status, need_redis_server

MASTER = "mymaster"


class Trio:
    def __init__(self, tmp_path: Path) -> None:
        self.master = PrivateRedis()
        self.replica = PrivateRedis(None, "--replicaof", "127.0.0.1", str(self.master.port))
        sentinel_port = free_port()
        conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: one of the test's own
        conf.write_text(
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 300\n"
            f"sentinel failover-timeout {MASTER} 2000\n"
        )
        self.sentinel = PrivateRedis(sentinel_port, str(conf), "--sentinel")

    def master_port(self) -> int:
        client = redis.Redis(port=self.sentinel.port, socket_timeout=2)
        try:
            host_port = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            return int(host_port[1])
        finally:
            client.close()

    def replica_caught_up(self) -> bool:
        """The replica has everything the master wrote (replication is asynchronous)."""
        master = redis.Redis(port=self.master.port, socket_timeout=2)
        replica = redis.Redis(port=self.replica.port, socket_timeout=2)
        try:
            wrote = master.info("replication")["master_repl_offset"]
            info = replica.info("replication")
            return bool(info.get("master_link_status") == "up" and info.get("slave_repl_offset") == wrote)
        finally:
            master.close()
            replica.close()

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Trio]:
    need_redis_server()
    made = Trio(tmp_path)
    try:
        made.master.start()
        made.replica.start()
        made.sentinel.start()
        yield made
    finally:
        made.stop()


def test_limits_count_through_sentinel_and_survive_a_failover(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., Any], trio: Trio
) -> None:
    _, upstream = start_upstream("a")
    gw = start_gateway(
        {
            "state": {
                "backend": "redis",
                "sentinel": {"master": MASTER, "nodes": [f"127.0.0.1:{trio.sentinel.port}"]},
                "timeout_ms": 500,
                "on_error": "deny",
            },
            "limits": [{"scope": "global", "algorithm": "fixed_window", "rate": 3, "period": 3600}],
            "services": {"chat": {"instances": [{"name": "m", "base_url": upstream}]}},
        }
    )
    assert [_chat_status(gw.url) for _ in range(2)] == [200, 200]
    master = redis.Redis(port=trio.master.port)
    assert master.keys("mr:limit:*")  # counted in the master Sentinel named
    master.close()
    wait_until(trio.replica_caught_up, "the replica to have the counts", 10)

    trio.master.stop()
    wait_until(lambda: trio.master_port() == trio.replica.port, "Sentinel to promote the replica", 20)
    # The first call after the failover may still go to the dead master's connection (503: on_error deny);
    # then the promoted replica answers with the counts it replicated: one more request fits, then 429.
    statuses = []
    for _ in range(5):
        statuses.append(_chat_status(gw.url))
        time.sleep(0.3)
    settled = statuses[1:] if statuses[0] == 503 else statuses
    assert settled == [200, 429, 429, 429][: len(settled)], statuses
    assert 503 not in settled, statuses
