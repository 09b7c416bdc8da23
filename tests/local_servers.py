"""Local model servers (``python -m modelrouter.local.<module>``) as subprocesses on loopback, for tests.

The servers are started the way the supervisor starts them: a free port, ``--host 127.0.0.1``, ``/health``
polled until 200 (bounded), stopped by pid with SIGTERM and killed if they do not go. Their output goes to a
file, shown when a server fails to come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

__all__ = ["LocalServer", "local_process", "run_local", "start_local"]

SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    # This checkout's source, not whatever the venv's editable install points at.
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(SRC) if not path else f"{SRC}{os.pathsep}{path}")


def _command(module: str, port: int, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", f"modelrouter.local.{module}", "--host", "127.0.0.1", "--port", str(port), *args]


@dataclass
class LocalServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_file: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self.log_file.flush()
        return Path(self.log_file.name).read_text("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


@contextlib.contextmanager
def local_process(module: str, *args: str, ready_timeout: float = 120.0) -> Iterator[LocalServer]:
    """The running server (``/health`` answered 200); stopped when the block ends."""
    port = _free_port()
    with tempfile.NamedTemporaryFile(prefix=f"local-{module}-", suffix=".log") as log_file:
        proc = subprocess.Popen(
            _command(module, port, args), stdout=log_file, stderr=subprocess.STDOUT, env=_env(), cwd=SRC.parent
        )
        server = LocalServer(f"http://127.0.0.1:{port}", proc, log_file)
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{module} exited with {proc.returncode} before it was ready:\n{server.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module} not ready after {ready_timeout} s:\n{server.log()}")
                try:
                    if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.1)
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def start_local(module: str, *args: str, ready_timeout: float = 120.0) -> Iterator[str]:
    """The base URL of a running local server; stopped when the block ends."""
    with local_process(module, *args, ready_timeout=ready_timeout) as server:
        yield server.url


def run_local(module: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a server to its end (one that is expected to exit by itself, e.g. on a missing package)."""
    command = _command(module, _free_port(), args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=SRC.parent)
