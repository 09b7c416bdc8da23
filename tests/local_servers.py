"""Local model servers (``python -m modelrouter.local.<name>``) as subprocesses on loopback, for tests.

Each runs this checkout's code (its ``src`` goes first on the child's PYTHONPATH, whatever the venv's editable
install points at), listens on a free port, and is waited for until ``/health`` answers 200 within a deadline;
it is stopped by its pid: SIGTERM, then SIGKILL if it has not gone after a timeout. Its stderr goes to a file,
shown when it fails to start, so a pipe never fills and blocks it.
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
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import modelrouter

from .servers import free_port

__all__ = ["SRC", "LocalServer", "local_process", "port_is_free", "run_local", "start_local"]

SRC = Path(modelrouter.__file__).resolve().parent.parent


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a restarted server could listen on the port. With SO_REUSEADDR, as servers bind (uvicorn and
    llama.cpp both do): connections the old process closed linger in TIME_WAIT for a minute and only a plain bind
    is refused by those; a listener still there (or a process holding the socket) is refused either way."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _module(name: str) -> str:
    """``speech`` is short for ``modelrouter.local.speech``."""
    return name if "." in name else f"modelrouter.local.{name}"


class LocalServer:
    """One local model server process. ``start()`` waits for ``/health`` 200; ``stop()`` returns its exit code."""

    def __init__(self, module: str, *args: str, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
        self.module = _module(module)
        self.args = args
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = child_env(env)
        self._log = tempfile.NamedTemporaryFile(prefix=f"{module}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def log(self) -> str:
        """What the server wrote to stderr (and stdout) so far."""
        if self._final_log is not None:
            return self._final_log
        return Path(self._log.name).read_text(errors="replace")

    def start(self, deadline: float = 60.0) -> LocalServer:
        argv = [sys.executable, "-m", self.module, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(argv, env=self._env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode} before it was ready:\n{self.log}")
            if self.health() == 200:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.module} was not healthy within {deadline} s:\n{self.log}")

    def health(self) -> int | None:
        """The status of ``GET /health``, or None when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code (negative: killed by that signal)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._final_log is None:
            self._final_log = self.log
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
        return proc.returncode


@contextlib.contextmanager
def start_local(module: str, *args: str, env: Mapping[str, str] | None = None, deadline: float = 60.0) -> Iterator[str]:
    """``with start_local("modelrouter.local.rerank") as url:`` — the server's base URL while it runs."""
    server = LocalServer(module, *args, env=env).start(deadline)
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def local_process(module: str, *args: str, deadline: float = 120.0) -> Iterator[LocalServer]:
    """The running server itself (its pid, process and log), stopped when the block ends."""
    server = LocalServer(module, *args).start(deadline)
    try:
        yield server
    finally:
        server.stop()


def run_local(module: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a server to its end: one expected to exit by itself (a missing package, a bad argument)."""
    argv = [sys.executable, "-m", _module(module), "--host", "127.0.0.1", "--port", str(free_port()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=child_env(), check=False)
