"""Serving the gateway: uvicorn run inside our own event loop, with config hot reload and graceful shutdown.

Signals are handled on the event loop (``loop.add_signal_handler``), not by uvicorn's ``capture_signals``: that one
re-raises the signal once the server has stopped, so the process would die *by* SIGTERM instead of exiting 0.

- SIGHUP: reload the config file. A file with problems is logged (one problem a line) and the running config kept.
- SIGTERM, SIGINT: drain. First ``/ready`` answers 503, at once, so a load balancer stops sending traffic; then
  uvicorn's graceful shutdown: stop listening, let requests and streams in flight finish for up to
  ``server.drain_timeout``, cancel what remains; last, the lifespan shutdown closes the upstream connections.
  Exit code 0.
- A second SIGTERM or SIGINT during the drain: cancel everything and exit at once. Exit code 1.

Besides SIGHUP, the file is polled (``server.watch_config``, every ``server.watch_interval`` seconds) and reloaded
once a change has settled. Reloads never run two at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import threading
from collections.abc import Callable, Generator
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from ..app import Gateway
from ..config.load import ConfigError, parse_config_text, read_config_text
from ..config.model import Config, ServerConfig

if TYPE_CHECKING:
    from .connections import Limits

__all__ = ["EXIT_FORCED", "EXIT_OK", "ConfigReloader", "Server", "run"]

log = logging.getLogger("modelrouter")

EXIT_OK = 0
EXIT_FORCED = 1  # a second signal cut the drain short

# Read once, when the server starts (runtime/connections.py).
_CLIENT_LIMITS = (
    "header_timeout",
    "max_header_bytes",
    "max_headers",
    "body_read_timeout",
    "keep_alive_timeout",
    "max_connections",
)

# What identifies one version of the config file. The inode changes when an editor saves by writing a new file and
# renaming it over the old one, and (through the symlink) when Kubernetes updates a mounted ConfigMap.
_Signature = tuple[int, int, int, int]


def _signature(path: str) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing for now (deleted and being rewritten?): keep serving what we have
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigReloader:
    """Loads the config file again and hands it to ``Gateway.reload``; a file with problems changes nothing."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway = gateway
        self.path = path
        self._lock = asyncio.Lock()
        self._loaded = _signature(path)  # the version last read, whatever came of it
        # The listen address is bound once; a changed one in the file is reported, not applied.
        self._address = (gateway.config.server.host, gateway.config.server.port)
        self._limits = gateway.config.server  # the client-side limits are read at start as well

    async def reload(self, reason: str) -> bool:
        """Load, validate and apply the file; True if the new config is now serving."""
        async with self._lock:
            # Stat before reading: a write that lands during the read is then seen as a change by the next poll.
            self._loaded = _signature(self.path)
            try:
                # Off the loop: parsing and validating a large file must not stall requests.
                text = await asyncio.to_thread(read_config_text, self.path)
                # As at startup: a file that routes nothing (emptied by mistake, half written) is refused.
                config = await asyncio.to_thread(parse_config_text, text, self.path)
                self._apply(config)
            except ConfigError as exc:
                log.error(
                    "config reload (%s) rejected, keeping the running config: %d problem(s) in %s",
                    reason,
                    len(exc.problems),
                    self.path,
                )
                for problem in exc.problems:
                    log.error("%s: %s", self.path, problem)
                return False
            except Exception:
                log.exception("config reload (%s) failed, keeping the running config", reason)
                return False
            control = self.gateway.control
            if control is not None:
                try:
                    await control.file_loaded(text)  # file mode: each successful load is a version
                except Exception as exc:
                    log.warning("config reloaded, but could not be recorded as a version in the store: %s", exc)
            table = self.gateway.table
            log.info(
                "config reloaded (%d models, %d instances) from %s (%s)",
                len(table.pools),
                len(table.all_instances()),
                self.path,
                reason,
            )
            return True

    def _apply(self, config: Config) -> None:
        address = (config.server.host, config.server.port)
        if address != self._address:
            log.warning(
                "server.host/server.port in %s changed to %s:%d (started with %s:%d): that needs a restart",
                self.path,
                *address,
                *self._address,
            )
        self.gateway.reload(config)
        changed = [f for f in _CLIENT_LIMITS if getattr(config.server, f) != getattr(self._limits, f)]
        if changed:
            log.warning("server.%s changed in %s: that needs a restart", ", server.".join(changed), self.path)

    async def watch(self) -> None:
        """Poll the file and reload once a change has settled: the same stat on two polls in a row, so that a file
        still being written is not read half-way. Runs until cancelled; ``watch_config`` and ``watch_interval`` are
        read at every poll, so a reload may change them."""
        pending: _Signature | None = None
        while True:
            settings = self.gateway.config.server
            await asyncio.sleep(settings.watch_interval)
            if not settings.watch_config:
                pending = None
                continue
            current = _signature(self.path)
            if current is None or current == self._loaded:
                pending = None
            elif current != pending:
                pending = current  # changed since the last poll: wait one more
            else:
                pending = None
                await self.reload("file changed")


class Server(uvicorn.Server):
    """uvicorn's server for the gateway: signals handled on the event loop, shutdown starting by marking the gateway
    not ready, and the config file (if any) reloaded on SIGHUP and when it changes."""

    def __init__(self, gateway: Gateway, *, host: str, port: int, config_path: str | None, log_level: str) -> None:
        super().__init__(
            uvicorn.Config(
                gateway.front,  # the front door itself: no call layer in between on every request
                host=host,
                port=port,
                loop="auto",
                http=_http_protocol(gateway),
                # The gateway serves no websockets (the front door ignores that scope): with "auto", uvicorn would
                # import a websocket implementation (wsproto, ~1.5 MB) at startup for nothing. An upgrade request is
                # now answered as plain HTTP.
                ws="none",
                # What our protocol class (runtime/connections.py) does not replace: h11, if httptools is missing.
                timeout_keep_alive=gateway.config.server.keep_alive_timeout,  # type: ignore[arg-type]
                h11_max_incomplete_event_size=gateway.config.server.max_header_bytes,
                lifespan="on",
                access_log=False,
                server_header=False,
                proxy_headers=False,  # which proxies to trust is the gateway's own decision (trusted_proxies)
                log_level=log_level,
                # uvicorn annotates this as int, but only hands it to asyncio.wait_for: fractions work.
                timeout_graceful_shutdown=gateway.config.server.drain_timeout,  # type: ignore[arg-type]
            )
        )
        self.gateway = gateway
        self.reloader = ConfigReloader(gateway, config_path) if config_path is not None else None
        self._serving: asyncio.Task[Any] | None = None
        self._reloads: set[asyncio.Task[Any]] = set()

    async def serve_until_stopped(self, sockets: list[socket.socket] | None = None) -> int:
        """Serve until a signal (or ``should_exit``) stops the server; returns the process exit code."""
        try:
            await self.serve(sockets)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.force_exit or task is None:
                raise
            task.uncancel()  # the cancellation was our own (a second signal), and it is handled here
            return EXIT_FORCED
        return EXIT_OK

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._serving = asyncio.current_task()
        watcher = None
        if self.reloader is not None:
            watcher = asyncio.get_running_loop().create_task(self.reloader.watch(), name="config watcher")
        try:
            await super().serve(sockets)
        finally:
            if watcher is not None:
                watcher.cancel()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (an in-process test server runs elsewhere)
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        loop.add_signal_handler(signal.SIGHUP, self.handle_hangup)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if not self.should_exit:
            # Before anything else, so that /ready says 503 for the whole drain, not only after it.
            self.gateway.accepting = False
            self.should_exit = True  # uvicorn's main loop sees this within 0.1 s and starts its shutdown
            log.info(
                "%s: draining: no new connections; requests in flight may finish within %gs (%s again to exit now)",
                name,
                self.gateway.config.server.drain_timeout,
                name,
            )
        elif not self.force_exit:
            self.force_exit = True
            log.warning("%s again: exiting now, cutting %d request(s)", name, len(self.server_state.tasks))
            for task in self.server_state.tasks:
                task.cancel()
            # The serving task itself too: that also ends a lifespan shutdown that hangs (upstream connections slow to
            # close). Not only uvicorn's force_exit, which just stops waiting for connections.
            if self._serving is not None:
                self._serving.cancel()

    def handle_hangup(self) -> None:
        control = self.gateway.control
        if self.reloader is not None:
            coro: Any = self.reloader.reload("SIGHUP")
        elif control is not None and control.mode == "store":
            log.info("SIGHUP: store mode, checking the store for a newer config version")
            coro = control.refresh()
        else:
            log.info("SIGHUP: nothing to reload (serving the embedded default config; start with --config FILE)")
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._reloads.add(task)  # a task nobody references may be garbage-collected mid-run
        task.add_done_callback(self._reloads.discard)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Also when uvicorn stops by itself (should_exit set without a signal).
        self.gateway.accepting = False
        # A reload may have changed the drain timeout since startup.
        self.config.timeout_graceful_shutdown = self.gateway.config.server.drain_timeout  # type: ignore[assignment]
        await super().shutdown(sockets)


# File descriptors kept for everything but client connections (the listening socket, the store, logs, spooled
# uploads, DNS); of the rest, half are for client connections and half for the upstream connection each request
# in flight holds.
_FD_RESERVE = 64


def _raise_fd_limit(wanted: int) -> int:
    """Raise the soft file-descriptor limit towards ``wanted`` (never past the hard one); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the file-descriptor limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else wanted


def connection_limits(server: ServerConfig) -> Limits:
    """The client-side limits of ``server``, with ``max_connections`` fitted to the file-descriptor limit: a
    cap the process cannot reach is no cap, and running out of descriptors fails every request, not only the
    ones past the cap."""
    from .connections import Limits  # imports httptools

    wanted = server.max_connections
    fds = _raise_fd_limit(2 * wanted + _FD_RESERVE)
    fit = max(1, (fds - _FD_RESERVE) // 2)
    if wanted > fit:
        log.warning(
            "server.max_connections %d does not fit the file-descriptor limit (%d, hard limit reached): %d "
            "connections instead (raise `ulimit -n`)",
            wanted,
            fds,
            fit,
        )
    return Limits(
        header_timeout=server.header_timeout,
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        body_read_timeout=server.body_read_timeout,
        keep_alive_timeout=server.keep_alive_timeout,
        max_connections=min(wanted, fit),
    )


def _http_protocol(gateway: Gateway) -> type[asyncio.Protocol] | str:
    """Our protocol class with the client-side limits; uvicorn's h11 where httptools is missing (PyPy): it caps
    the head's size (as a 400), not its time, and has no connection cap of its own."""
    server = gateway.config.server
    # Read at start: the front door times body reads with the same setting as the server layer.
    gateway.body_read_timeout = server.body_read_timeout
    try:
        from .connections import protocol_class
    except ImportError:  # httptools is a dependency on CPython only
        log.warning("httptools is not installed: request heads are not timed and connections not capped")
        return "h11"
    return protocol_class(connection_limits(server))


def _loop_factory(config: uvicorn.Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``loop="auto"``: uvloop when installed."""
    get_loop_factory = getattr(config, "get_loop_factory", None)
    if get_loop_factory is None:  # uvicorn < 0.36 sets an event loop policy instead
        config.setup_event_loop()
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] | None = get_loop_factory()
    return factory


def run(
    gateway: Gateway,
    *,
    host: str,
    port: int,
    config_path: str | None = None,
    log_level: str = "info",
    sockets: list[socket.socket] | None = None,
) -> int:
    """Serve ``gateway`` in this process until SIGTERM/SIGINT; returns the exit code. ``config_path`` is the file
    the gateway's config came from (reloaded on SIGHUP and when it changes); None for the embedded default.
    ``sockets``: already listening (a worker of ``serve --workers N``); otherwise ``host:port`` is bound."""
    server = Server(gateway, host=host, port=port, config_path=config_path, log_level=log_level)
    with asyncio.Runner(loop_factory=_loop_factory(server.config)) as runner:
        return runner.run(server.serve_until_stopped(sockets))
