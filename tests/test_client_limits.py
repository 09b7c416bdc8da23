"""Client-side limits, attacked on loopback against a real gateway process: slowloris connections, more
connections than file descriptors, oversized and unterminated request heads, bodies that stop short, idle
keep-alive connections, and clients that hang up mid-upload. Each attack checks that a second, normal client
keeps being served meanwhile; the memory attack checks the gateway's peak RSS.

Every attack loop is bounded in time and in count, and only loopback is used."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .fakes import FakeOpenAI
from .servers import free_port
from .test_lifecycle import wait_until

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]

CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"

# Short timeouts, so that each attack is seen to be cut within a few seconds.
FAST = {"header_timeout": 1, "body_read_timeout": 1, "keep_alive_timeout": 1}


class Gateway:
    """``python -m modelrouter serve --config FILE`` (optionally ``--workers N``) on a free loopback port."""

    def __init__(self, tmp: Path, config: dict[str, Any], *, fd_limit: int | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.log_path = tmp / f"gateway-{self.port}.log"
        path = tmp / f"gateway-{self.port}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        command = [sys.executable, "-m", "modelrouter", "serve", "--config", str(path)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if workers > 1:
            command += ["--workers", str(workers)]

        def limit_fds() -> None:
            if fd_limit is not None:  # soft and hard: the gateway cannot raise it
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_fds
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.request("GET", "/health")[0] == 200
            except OSError:
                return False

        wait_until(up, "the gateway to start", timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def chat(self) -> int:
        return self.request("POST", "/v1/chat/completions", CHAT)[0]

    def hwm_kib(self) -> int:
        """Peak resident memory of the gateway process so far (VmHWM)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        assert match, status
        return int(match.group(1))

    def reset_hwm_kib(self) -> int:
        """Reset the peak to the current resident memory (Linux >= 4.0) and return it: the idle baseline, without
        the peak of the startup."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert match, status
        return int(match.group(1))

    def metric(self, name: str, **labels: str) -> float:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        total = 0.0
        for line in body.decode().splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit: only the process this object started."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def gateway(tmp_path: Path, start_upstream: StartUpstream) -> Iterator[Callable[..., Gateway]]:
    """gateway(fd_limit=None, workers=1, **server) -> a running Gateway with one chat model `m`."""
    started: list[Gateway] = []
    _, upstream = start_upstream("a")

    def start(*, fd_limit: int | None = None, workers: int = 1, **server: Any) -> Gateway:
        config = {
            "health_check": {"enabled": False},
            "server": {"watch_config": False, **server},
            "store": {"data_dir": str(tmp_path / "data")},
            "services": {
                "chat": {"instances": [{"name": "m", "base_url": upstream}]},
                "stt": {"instances": [{"name": "whisper", "base_url": upstream}]},
            },
        }
        started.append(gw := Gateway(tmp_path, config, fd_limit=fd_limit, workers=workers))
        gw.wait_ready()
        assert gw.chat() == 200
        return gw

    yield start
    for gw in started:
        gw.stop()


class NormalClient:
    """Chat requests one after another, each on a new connection, in a thread, while an attack runs."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.results: list[tuple[int | str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.results) < 10_000:
            started = time.monotonic()
            try:
                status: int | str = self.gw.chat()
            except OSError as exc:
                status = repr(exc)
            self.results.append((status, time.monotonic() - started))
            time.sleep(0.05)

    def __enter__(self) -> NormalClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def check(self, slowest: float = 10.0) -> None:
        """Every request succeeded, none took longer than ``slowest`` seconds (generous: a shared machine)."""
        assert self.results, "the normal client made no request"
        failed = [r for r in self.results if r[0] != 200]
        assert not failed, f"{len(failed)} of {len(self.results)} normal requests failed: {failed[:5]}"
        worst = max(seconds for _, seconds in self.results)
        assert worst < slowest, f"a normal request took {worst:.1f}s"


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the gateway closed the connection (whatever it said first)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """What the gateway sends until it closes the connection or ``timeout`` passes."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):  # a timeout or a reset: what came so far is the answer
        while chunk := sock.recv(65536):
            data += chunk
    return data


# ---------------------------------------------------------------------------------------- slowloris, fds


def test_slowloris_beyond_the_fd_limit_is_cut_and_normal_requests_keep_working(
    gateway: Callable[..., Gateway],
) -> None:
    """300 connections that send their head a header every half second, against a gateway limited to 256 file
    descriptors: each is closed within the header timeout, connections past the cap are refused or displace the
    oldest unfinished head, and a normal client (a new connection per request) is served throughout."""
    gw = gateway(fd_limit=256, **FAST)
    attackers: list[socket.socket] = []
    closed = 0
    opened = 0
    with NormalClient(gw) as normal:
        deadline = time.monotonic() + 6
        next_trickle = 0.0
        while time.monotonic() < deadline and opened < 3000:
            # Keep 300 open: reconnect what the gateway closed, as a real slowloris does.
            while len(attackers) < 300 and opened < 3000:
                try:
                    sock = _connect(gw.port)
                    sock.send(HEAD)
                except OSError:
                    break
                attackers.append(sock)
                opened += 1
            if time.monotonic() >= next_trickle:
                next_trickle = time.monotonic() + 0.5
                for sock in list(attackers):
                    with contextlib.suppress(OSError):
                        sock.send(b"X-Slow: 1\r\n")
            for sock in list(attackers):
                if _closed_by_peer(sock):
                    attackers.remove(sock)
                    sock.close()
                    closed += 1
            time.sleep(0.05)
    for sock in attackers:
        sock.close()
    normal.check()
    # 6 s of attack with a 1 s header timeout: the first 300 have all been cut, and more after them.
    assert closed >= 300, f"only {closed} of {opened} slow connections were closed by the gateway"
    assert gw.chat() == 200


def test_connections_past_max_connections_get_a_clear_503(gateway: Callable[..., Gateway]) -> None:
    """With every connection busy with a request (none to displace), one more is answered 503 and closed."""
    gw = gateway(max_connections=10, body_read_timeout=5)
    busy = []
    for _ in range(10):  # each sends a head that promises a body: a request in flight, not displaceable
        sock = _connect(gw.port)
        sock.send(HEAD + b"Content-Length: 100\r\n\r\n{")
        busy.append(sock)
    time.sleep(0.3)
    extra = _connect(gw.port)
    answer = _answer(extra, 5)
    extra.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "overloaded_error"
    assert "max_connections" in body["error"]["message"]
    for sock in busy:
        sock.close()
    wait_until(lambda: gw.chat() == 200, "the gateway to serve again once the connections closed", 10)


# ------------------------------------------------------------------------------------------- request heads


def test_oversized_heads_get_431_and_normal_requests_keep_working(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(**FAST)
    with NormalClient(gw) as normal:
        # One 1 MB header.
        sock = _connect(gw.port)
        with contextlib.suppress(OSError):  # the gateway may close before it has read everything
            sock.setblocking(True)
            sock.sendall(HEAD + b"X-Big: " + b"a" * 1024 * 1024 + b"\r\n\r\n")
        assert _answer(sock, 5).startswith(b"HTTP/1.1 431"), "a 1 MB header was not refused"
        sock.close()
        # 100,000 small headers.
        sock = _connect(gw.port)
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.sendall(HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(100_000)) + b"\r\n")
        assert _answer(sock, 5).startswith(b"HTTP/1.1 431"), "100,000 headers were not refused"
        sock.close()
        # 300 headers: few bytes, but over the count.
        sock = _connect(gw.port)
        sock.setblocking(True)
        sock.sendall(HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"Content-Length: 0\r\n\r\n")
        assert _answer(sock, 5).startswith(b"HTTP/1.1 431"), "300 headers were not refused"
        sock.close()
    normal.check()


def test_heads_within_the_limits_are_served(gateway: Callable[..., Gateway]) -> None:
    """No false 431: 150 headers of 40 KiB in all, and a head that arrives in one read with a large body."""
    gw = gateway(**FAST)
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 260) for i in range(150))
    body = CHAT[:-1] + b',"user":"' + b"u" * 500_000 + b'"}'
    for extra in (headers, b""):
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        sock.sendall(HEAD + extra + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        answer = _answer(sock, 10)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_unterminated_heads_do_not_grow_memory(gateway: Callable[..., Gateway]) -> None:
    """8 connections at once, each sending up to 64 MiB of one header that never ends: the gateway's peak RSS
    stays within +100 MiB of idle."""
    gw = gateway(**FAST)
    for _ in range(20):
        assert gw.chat() == 200
    idle = gw.reset_hwm_kib()
    chunk = b"a" * (1024 * 1024)
    deadline = time.monotonic() + 30
    sent = 0
    with NormalClient(gw) as normal:
        socks = []
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            sock.sendall(HEAD + b"X-Endless: ")
            socks.append(sock)
        # Round robin, all kept open: 1 MiB to each in turn, up to 64 MiB each.
        live = list(socks)
        for _ in range(64):
            for sock in list(live):
                try:
                    sock.sendall(chunk)
                    sent += 1
                except OSError:  # closed by the gateway: what we want
                    live.remove(sock)
            if not live or time.monotonic() > deadline:
                break
        for sock in socks:
            sock.close()
    normal.check()
    grown = (gw.hwm_kib() - idle) / 1024
    assert grown < 100, f"peak RSS grew by {grown:.0f} MiB ({sent} MiB sent)"


# ---------------------------------------------------------------------------------- bodies and keep-alive


def test_a_body_shorter_than_its_content_length_gets_408(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(**FAST)
    with NormalClient(gw) as normal:
        sock = _connect(gw.port)
        sock.send(HEAD + b"Content-Length: 1000\r\n\r\n" + CHAT[:10])
        started = time.monotonic()
        answer = _answer(sock, 8)
        sock.close()
    normal.check()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 5
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_timeout"
    assert b"connection: close" in answer.lower()
    assert gw.metric("modelrouter_requests_total", endpoint="chat", status="408") == 1


def test_an_upload_that_stops_gets_408(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(**FAST)
    sock = _connect(gw.port)
    head = b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: gw\r\n"
    head += b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
    sock.send(head + b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF')
    answer = _answer(sock, 8)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_idle_and_trickling_connections_are_closed(gateway: Callable[..., Gateway]) -> None:
    """An idle keep-alive connection is closed after keep_alive_timeout; so is one that, answered before its
    body was read (413), goes on trickling that body, after body_read_timeout."""
    gw = gateway(max_body_bytes=1000, **FAST)
    idle = _connect(gw.port)
    idle.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT)
    trickle = _connect(gw.port)
    trickle.send(HEAD + b"Content-Length: 10000000\r\n\r\n")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and not (idle.fileno() < 0 and trickle.fileno() < 0):
        with contextlib.suppress(OSError):
            trickle.send(b"x" * 10)
        for sock in (idle, trickle):
            if sock.fileno() >= 0 and _closed_by_peer(sock):
                sock.close()
        time.sleep(0.2)
    assert idle.fileno() < 0, "an idle keep-alive connection was not closed"
    assert trickle.fileno() < 0, "a connection trickling an unread body was not closed"
    with contextlib.suppress(OSError):
        idle.close()
        trickle.close()


# ------------------------------------------------------------------------------------- clients that leave


def test_a_client_gone_mid_upload_is_a_499_without_a_traceback(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(**FAST)
    head = b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: gw\r\n"
    head += b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    sock.sendall(head + b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF')
    time.sleep(0.3)
    sock.close()
    # And a JSON body cut short, and one never started.
    for first in (CHAT[:10], b""):
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n" + first)
        time.sleep(0.3)
        sock.close()
    wait_until(lambda: gw.metric("modelrouter_requests_total", status="499") == 3, "three requests counted as 499", 10)
    assert gw.metric("modelrouter_requests_total", endpoint="transcriptions", status="499") == 1
    assert gw.metric("modelrouter_requests_total", status="500") == 0
    log = gw.log()
    assert "unexpected error" not in log, log
    assert "Traceback" not in log, log


# ------------------------------------------------------------------------------------------------ workers


def test_the_limits_apply_to_every_worker(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(workers=2, **FAST)
    socks = []
    for _ in range(8):  # a new connection each: the kernel hands them to both workers
        sock = _connect(gw.port)
        sock.send(HEAD)
        socks.append(sock)
    big = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    with contextlib.suppress(OSError):
        big.sendall(HEAD + b"X-Big: " + b"a" * 1024 * 1024 + b"\r\n\r\n")
    assert _answer(big, 5).startswith(b"HTTP/1.1 431")
    big.close()
    deadline = time.monotonic() + 5
    while socks and time.monotonic() < deadline:
        for sock in [s for s in socks if _closed_by_peer(s)]:
            socks.remove(sock)
            sock.close()
        time.sleep(0.1)
    assert not socks, f"{len(socks)} slow connections still open after the header timeout"
    for sock in socks:
        sock.close()
    assert gw.chat() == 200
