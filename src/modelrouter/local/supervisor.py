"""Runs the local pack's model servers beside the gateway: ports chosen, health-checked, restarted when they
die or stop answering, stopped with the gateway, their output in the gateway's log.

It runs on threads, not on the gateway's event loop: it lives in the process that starts the gateway (the
supervisor of ``serve --workers N`` included) and must keep working while that process blocks in uvicorn. Each
child also gets the parent-death signal (Linux), so a gateway killed with SIGKILL takes its models with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

from .catalog import LocalModel
from .serving import EXIT_MISSING, INSTALL_HINT, Missing, require

__all__ = ["Child", "Supervisor"]

log = logging.getLogger("modelrouter.local")

HEALTH_EVERY = 5.0  # seconds between health probes of a ready model
HEALTH_TIMEOUT = 2.0
UNANSWERED_LIMIT = 3  # probes in a row without an answer: the model hangs, it is restarted
MAX_BACKOFF = 30.0
MAX_LOG_LINE = 4096  # a child printing without newlines cannot grow our memory


@dataclass
class Child:
    model: LocalModel
    host: str
    port: int
    state: str = "starting"  # starting | ready | restarting | missing | failed | stopped
    why: str = ""  # for missing / failed / restarting: what the log said last
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready_after: float | None = None  # seconds from start to the first 200 on /health
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    unanswered: int = 0
    next_try: float = 0.0  # when a restart is due (after a back-off)
    next_probe: float = 0.0  # when /health is asked next
    last_line: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _free_port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens there, else one the kernel picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free port on {host}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(
        self,
        models: Iterable[LocalModel],
        *,
        host: str = "127.0.0.1",
        threads: int = 2,
        on_change: Callable[[Child], None] | None = None,
    ) -> None:
        self.host, self.threads = host, threads
        self.children = [Child(m, host, 0) for m in models]
        self.on_change = on_change
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start every model whose packages are installed; returns the URL variables to publish."""
        urls: dict[str, str] = {}
        for child in self.children:
            child.port = _free_port(self.host, child.model.port)
            urls[child.model.url_variable] = child.url
            try:
                require(*child.model.modules)
            except Missing as exc:
                self._set(child, "missing", str(exc))
                continue
            self._spawn(child)
        self._thread = threading.Thread(target=self._watch, name="local-supervisor", daemon=True)
        self._thread.start()
        return urls

    def wait_ready(self, timeout: float) -> bool:
        """Block until no model is still starting (or ``timeout``); whether every one that can run is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(c.state != "starting" for c in self.children):
                break
            time.sleep(0.1)
        return all(c.state in ("ready", "missing") for c in self.children)

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            running = [c for c in self.children if c.process is not None and c.process.poll() is None]
            for child in running:
                assert child.process is not None
                child.process.terminate()
            deadline = time.monotonic() + grace
            for child in running:
                assert child.process is not None
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait(timeout=5)
                self._set(child, "stopped", "")

    # --- internals ---------------------------------------------------------------------------------------

    def _set(self, child: Child, state: str, why: str) -> None:
        changed = (child.state, child.why) != (state, why)
        child.state, child.why = state, why
        if changed and self.on_change is not None:
            self.on_change(child)

    def _spawn(self, child: Child) -> None:
        argv = child.model.argv(self.host, child.port, self.threads)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # only prctl: no locks
        )
        child.process, child.pid = process, process.pid
        child.started_at, child.unanswered, child.next_probe = time.monotonic(), 0, 0.0
        assert process.stdout is not None
        threading.Thread(
            target=self._drain, args=(child, process.stdout), name=f"local-{child.model.kind}-log", daemon=True
        ).start()

    def _drain(self, child: Child, stream: IO[bytes]) -> None:
        """The child's output, line by line, into our log under its kind (bounded lines, never blocking it)."""
        logger = logging.getLogger(f"modelrouter.local.{child.model.kind}")
        for raw in iter(lambda: stream.readline(MAX_LOG_LINE), b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                child.last_line = line
                logger.info("%s", line)
        stream.close()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                if self._stop.is_set():
                    return
                for child in self.children:
                    self._check(child)

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.state in ("missing", "stopped"):
            return
        process = child.process
        if process is None:  # waiting out a back-off before a restart
            if now >= child.next_try:
                child.restarts += 1
                self._spawn(child)
                self._set(child, "starting", "")
            return
        code = process.poll()
        if code is not None:
            child.process = None
            if code == EXIT_MISSING:
                self._set(child, "missing", child.last_line or f"a package is missing: {INSTALL_HINT}")
                return
            backoff = min(MAX_BACKOFF, 2.0 ** min(child.restarts, 5))
            child.next_try = now + backoff
            why = f"exited with {code}" + (f": {child.last_line}" if child.last_line else "")
            log.warning("local %s %s; restarting in %.0f s", child.model.kind, why, backoff)
            self._set(child, "restarting", why)
            return
        if now >= child.next_probe:
            self._probe(child, now)

    def _probe(self, child: Child, now: float) -> None:
        status = _health(child.url)
        if status == 200:
            if child.state != "ready":
                child.ready_after = round(now - child.started_at, 2)
                log.info("local %s ready on %s in %.1f s", child.model.kind, child.url, child.ready_after)
            child.unanswered = 0
            child.next_probe = now + HEALTH_EVERY
            self._set(child, "ready", "")
            return
        if child.state == "starting":
            return  # still loading (503) or not listening yet: the process is alive, so wait
        child.unanswered += 1
        child.next_probe = now + HEALTH_EVERY / 2
        if child.unanswered >= UNANSWERED_LIMIT and child.process is not None:
            log.warning("local %s did not answer %d health probes: restarting it", child.model.kind, UNANSWERED_LIMIT)
            child.process.kill()  # the next check sees it exited and restarts it


def _health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=HEALTH_TIMEOUT) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None
