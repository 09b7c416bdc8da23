"""Real servers on loopback for tests: the gateway (uvicorn, as in production) and upstream apps (aiohttp.web),
each run on one background event loop so that tests may use the synchronous openai SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from aiohttp import web

from modelrouter import Gateway, create_app, parse_config
from modelrouter.control.source import ConfigControl, dump_document

T = TypeVar("T")


_handed_out: set[int] = set()

# The upstream client of every gateway the tests start (``upstream.client``), unless a test's config names one:
# MODELROUTER_TEST_UPSTREAM_CLIENT=pyqwest (or pyreqwest) runs the gateway tests over another transport.
UPSTREAM_CLIENT = os.environ.get("MODELROUTER_TEST_UPSTREAM_CLIENT", "aiohttp")


def free_port() -> int:
    """A loopback port nobody listens on, never one this process handed out before: the kernel may give the
    same ephemeral port to two binds in a row once the first socket is closed, and a test that asks for two
    ports (a gateway and its metrics address) must not get one twice."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class BackgroundLoop:
    """An event loop in a daemon thread; ``run`` executes a coroutine there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class UpstreamServer:
    def __init__(self, bg: BackgroundLoop, app: web.Application) -> None:
        self.bg = bg
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)

    async def _start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> UpstreamServer:
        self.bg.run(self._start())
        return self

    def stop(self) -> None:
        self.bg.run(self._runner.cleanup())


class GatewayServer:
    """The gateway under uvicorn with httptools/uvloop-free defaults chosen by uvicorn, on a free port."""

    def __init__(
        self, bg: BackgroundLoop, config: dict[str, Any] | Gateway, *, config_source: str | None = None
    ) -> None:
        """``config_source`` ("file" or "store") gives the gateway a config control as ``modelrouter serve`` does,
        with the config dict as its file text."""
        self.bg = bg
        if isinstance(config, dict) and "health_check" not in config:
            # Probes would show up in the request records of fake upstreams; tests about health opt back in.
            config = {**config, "health_check": {"enabled": False}}
        if isinstance(config, dict) and "upstream" not in config and UPSTREAM_CLIENT != "aiohttp":
            config = {**config, "upstream": {"client": UPSTREAM_CLIENT}}
        if isinstance(config, dict) and "store" not in config:
            # Never the working directory's ./data: each gateway gets a store of its own.
            config = {**config, "store": {"data_dir": tempfile.mkdtemp(prefix="modelrouter-test-")}}
        if isinstance(config, Gateway):
            assert config_source is None
            self.gateway = config
        else:
            control = None
            if config_source is not None:
                text = dump_document(config)
                mode: Any = config_source

                def control(gateway: Gateway) -> ConfigControl:
                    return ConfigControl(gateway, mode, text, "test config")

            self.gateway = create_app(parse_config(config), control=control)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.gateway.front,
                host="127.0.0.1",
                port=self.port,
                lifespan="on",
                log_level="warning",
                access_log=False,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.get_running_loop().create_task(self._serve())
        for _ in range(500):
            if self._server.started:
                return
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("gateway did not start")

    async def _serve(self) -> None:
        # uvicorn calls sys.exit(1) when it cannot bind; a SystemExit escaping a task stops the event loop that
        # every server of the test session runs on, so it becomes this one test's error instead.
        try:
            await self._server.serve()
        except SystemExit as exc:
            # It exits after the lifespan started the gateway (store, health checks): end that too.
            with contextlib.suppress(Exception):
                await self._server.lifespan.shutdown()
            raise RuntimeError(f"uvicorn exited with {exc.code} (port {self.port})") from None

    def start(self) -> GatewayServer:
        self.bg.run(self._start())
        return self

    async def _stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)

    def stop(self) -> None:
        self.bg.run(self._stop())

    def reload(self, config: dict[str, Any]) -> None:
        """Reload on the gateway's own loop, as a SIGHUP or an admin edit does."""
        parsed = parse_config(config)

        async def apply() -> None:
            self.gateway.reload(parsed)

        self.bg.run(apply())


@contextlib.contextmanager
def serving(server: UpstreamServer | GatewayServer) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
