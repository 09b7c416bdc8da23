"""Several worker processes on one port: ``modelrouter serve --workers N``.

One Python process uses one core; a busy gateway wants more. The supervisor (this module) binds the listening
socket once and starts N ``modelrouter serve`` processes that inherit it, so the kernel spreads connections over
them. Each worker is a complete gateway: it opens the store (migrations and the first admin are safe to race),
watches the config file or polls the store, and drains on SIGTERM on its own. The supervisor forwards SIGTERM,
SIGINT and SIGHUP, restarts a worker that dies (giving up if they keep dying at once), and exits with the
workers' worst exit code.

Metrics: each worker writes a snapshot of its counters (and its gauges) to a directory shared by the workers
every second and whenever it answers a scrape; the worker answering ``GET /metrics`` adds up the others', so
any scrape sees the whole gateway. Gauges carry a ``worker`` label. A restarted worker's predecessor's counts
are kept (as a retired snapshot), so counters never go back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

__all__ = ["FD_ENV", "INDEX_ENV", "METRICS_DIR_ENV", "MetricsExchange", "supervise"]

log = logging.getLogger("modelrouter.workers")

FD_ENV = "MODELROUTER_WORKER_FD"  # the inherited listening socket
INDEX_ENV = "MODELROUTER_WORKER_INDEX"  # 0 .. N-1
METRICS_DIR_ENV = "MODELROUTER_METRICS_DIR"  # where workers exchange metric snapshots

_QUICK_DEATH = 5.0  # a worker that dies this soon after starting counts towards giving up
_MAX_QUICK_DEATHS = 3


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def supervise(worker_argv: list[str], *, host: str, port: int, workers: int) -> int:
    """Run ``workers`` copies of ``python -m modelrouter <worker_argv>`` on one socket until they all exit."""
    try:
        sock = bind(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="modelrouter-metrics-")
    env = {**os.environ, FD_ENV: str(sock.fileno()), METRICS_DIR_ENV: metrics_dir}
    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    stopping = False
    quick_deaths = 0

    def start(index: int) -> None:
        procs[index] = subprocess.Popen(
            [sys.executable, "-m", "modelrouter", *worker_argv],
            env={**env, INDEX_ENV: str(index)},
            pass_fds=(sock.fileno(),),
        )
        started[index] = time.monotonic()

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    log.info("modelrouter supervisor: %d workers on http://%s:%d", workers, host, port)
    try:
        for index in range(workers):
            start(index)
        codes: dict[int, int] = {}
        while procs:
            time.sleep(0.1)
            for index, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[index]
                if stopping:
                    codes[index] = code
                    continue
                quick = time.monotonic() - started[index] < _QUICK_DEATH
                quick_deaths = quick_deaths + 1 if quick else 0
                if quick_deaths >= _MAX_QUICK_DEATHS:
                    log.error("workers keep exiting right after start (last code %d); stopping", code)
                    codes[index] = code or 1
                    stopping = True
                    forward(signal.SIGTERM, None)
                    continue
                log.warning("worker %d exited with code %d; starting it again", index, code)
                start(index)
        return max(codes.values(), default=0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class MetricsExchange:
    """A worker's side of the shared metrics directory."""

    def __init__(self, directory: str, index: int) -> None:
        self.directory = Path(directory)
        self.index = index
        self.own = self.directory / f"worker-{index}.json"
        if self.own.exists():  # our predecessor's counts: kept, so that counters never go back
            self.own.rename(self.directory / f"retired-{index}-{time.time_ns()}.json")

    def publish(self, snapshot: dict[str, Any]) -> None:
        temporary = self.directory / f".worker-{self.index}.tmp"
        temporary.write_bytes(orjson.dumps(snapshot))
        temporary.replace(self.own)  # atomic: a reader sees the old snapshot or the new one

    def peers(self) -> Iterable[dict[str, Any]]:
        for path in sorted(self.directory.glob("*.json")):
            if path == self.own:
                continue
            try:
                snapshot: dict[str, Any] = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker's file vanishing or being replaced: read it next time
            if path.name.startswith("retired-"):
                snapshot.pop("gauges", None)  # a dead worker has nothing in flight
            yield snapshot
