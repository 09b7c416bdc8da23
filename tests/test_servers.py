"""The test harness itself: every server of a test session runs on one background loop, so one server that fails
to start must fail its own test and leave the loop serving the others (CI once lost 38 tests to one taken port)."""

from __future__ import annotations

import socket

import httpx2
import pytest

from .servers import BackgroundLoop, GatewayServer, free_port

CONFIG = {"services": {"chat": {"instances": [{"name": "m", "base_url": "http://127.0.0.1:9"}]}}}


def test_a_gateway_that_cannot_bind_fails_its_start_and_the_loop_serves_on() -> None:
    bg = BackgroundLoop()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            blocked = GatewayServer(bg, CONFIG)
            blocked._server.config.port = taken.getsockname()[1]
            with pytest.raises(RuntimeError, match="uvicorn exited"):
                blocked.start()
        after = GatewayServer(bg, CONFIG).start()
        try:
            assert httpx2.get(after.url + "/health", timeout=10).status_code == 200
        finally:
            after.stop()
    finally:
        bg.close()


def test_free_ports_are_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
