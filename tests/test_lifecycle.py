"""The serving lifecycle, mostly in real processes (``python -m modelrouter serve``): config hot reload (SIGHUP, file
changes, files with problems, reloads under load) and graceful shutdown (SIGTERM lets open streams finish and refuses
new connections; what outlives ``drain_timeout`` is cut; a second signal exits at once)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from modelrouter import create_app, parse_config
from modelrouter.runtime.server import ConfigReloader, Server

from .fakes import FakeOpenAI
from .servers import free_port

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def make_config(*instances: tuple[str, str], **server: Any) -> dict[str, Any]:
    """A chat-only config: one instance per (model, base_url); no health checks, no file watching unless asked."""
    return {
        "health_check": {"enabled": False},
        "server": {"watch_config": False, **server},
        "services": {"chat": {"instances": [{"name": model, "base_url": url} for model, url in instances]}},
    }


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Replace the file whole (write + rename), as careful tools and editors do: never seen half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config), encoding="utf-8")
    os.replace(tmp, path)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class GatewayProcess:
    """``modelrouter serve --config FILE`` in a child process on a free loopback port; its log goes to a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "modelrouter", "serve", "--config", str(config_path)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.get("/health")[0] == 200
            except OSError:
                return False

        wait_until(up, "the gateway to start", timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def models(self) -> set[str]:
        status, body = self.get("/v1/models")
        assert status == 200, body
        return {m["id"] for m in json.loads(body)["data"]}

    def chat(self, model: str) -> str:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="k", max_retries=0, timeout=10)
        out = client.chat.completions.create(model=model, messages=MESSAGES)
        content = out.choices[0].message.content
        assert content is not None
        return content

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], GatewayProcess]]:
    """start_process(config) -> a running GatewayProcess (config in tmp_path/config.yaml); killed after the test."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any]) -> GatewayProcess:
        path = tmp_path / "config.yaml"
        write_config(path, config)
        started.append(gw := GatewayProcess(path, tmp_path / f"gateway{len(started)}.log"))
        gw.wait_ready()
        return gw

    yield start
    for gw in started:
        gw.kill()


# ------------------------------------------------------------------------------------------------------ reload


def test_sighup_reloads_the_file(start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]) -> None:
    _, url_a = start_upstream("a")
    _, url_b = start_upstream("b")
    gw = start_process(make_config(("m-a", url_a)))
    assert gw.models() == {"m-a"}
    assert gw.chat("m-a") == "hello from a"

    new = make_config(("m-a", url_a), ("m-b", url_b))
    new["server"]["port"] = 8081  # the listen address needs a restart: reported, otherwise ignored
    write_config(gw.config_path, new)
    gw.send(signal.SIGHUP)
    wait_until(lambda: "m-b" in gw.models(), "m-b to be served")
    assert gw.chat("m-b") == "hello from b"
    assert gw.chat("m-a") == "hello from a"
    log = gw.log()
    assert "config reloaded (2 models, 2 instances)" in log
    assert "needs a restart" in log
    assert gw.get("/health")[0] == 200  # still on the port it started on


def test_file_change_reloads_without_a_signal(
    start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]
) -> None:
    _, url = start_upstream("a")
    watched = {"watch_config": True, "watch_interval": 0.2}
    gw = start_process(make_config(("m-a", url), **watched))

    # Replaced via rename (a new inode), as most editors save.
    write_config(gw.config_path, make_config(("m-a", url), ("m-b", url), **watched))
    wait_until(lambda: gw.models() == {"m-a", "m-b"}, "the renamed-over file to be loaded")

    # Rewritten in place (same inode).
    gw.config_path.write_text(yaml.safe_dump(make_config(("m-c", url), **watched)), encoding="utf-8")
    wait_until(lambda: gw.models() == {"m-c"}, "the rewritten file to be loaded")
    assert gw.chat("m-c") == "hello from a"
    assert "(file changed)" in gw.log()


def test_file_with_problems_is_rejected_and_the_old_config_kept(
    start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]
) -> None:
    _, url = start_upstream("a")
    gw = start_process(make_config(("m-a", url)))

    write_config(gw.config_path, make_config(("m-a", url), ("m-b", "not-a-url")))
    gw.send(signal.SIGHUP)
    wait_until(lambda: "rejected" in gw.log(), "the reload to be rejected")
    assert "services.chat.instances[1].base_url: not a URL" in gw.log()
    assert gw.models() == {"m-a"}
    assert gw.chat("m-a") == "hello from a"

    # Fixed, it loads.
    write_config(gw.config_path, make_config(("m-a", url), ("m-b", url)))
    gw.send(signal.SIGHUP)
    wait_until(lambda: gw.models() == {"m-a", "m-b"}, "the fixed file to be loaded")
    assert gw.proc.poll() is None


def test_reloads_under_load_lose_no_request(
    start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]
) -> None:
    """The model is swapped between two backends 20 times (through SIGHUP) while 4 clients keep asking for it."""
    fake_a, url_a = start_upstream("a")
    fake_b, url_b = start_upstream("b")
    configs = [make_config(("m", url_b)), make_config(("m", url_a))]
    gw = start_process(configs[1])

    stop = threading.Event()
    answers: list[str] = []
    failures: list[BaseException] = []

    def client() -> None:
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)
        for _ in range(5000):  # bounded, in case `stop` is never set
            if stop.is_set():
                return
            try:
                out = sdk.chat.completions.create(model="m", messages=MESSAGES)
                answers.append(out.choices[0].message.content or "")
            except Exception as exc:
                failures.append(exc)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            write_config(gw.config_path, configs[i % 2])
            gw.send(signal.SIGHUP)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert len(answers) > 100
    assert {"hello from a", "hello from b"} <= set(answers)
    assert fake_a.requests
    assert fake_b.requests
    assert gw.log().count("config reloaded") >= 10  # SIGHUPs close together may be delivered as one


# ---------------------------------------------------------------------------------------------------- shutdown


async def _stream(session: aiohttp.ClientSession, url: str, started: Callable[[], None]) -> bytes:
    async with session.post(
        url + "/v1/chat/completions", json={"model": "m", "stream": True, "messages": MESSAGES}
    ) as resp:
        assert resp.status == 200
        first = await resp.content.readany()
        started()
        return first + await resp.content.read()


async def _refused(port: int, within: float) -> bool:
    """True once a new connection to ``port`` is refused (tried for ``within`` seconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        except ConnectionRefusedError:
            return True
        writer.close()
        await asyncio.sleep(0.02)
    return False


async def test_sigterm_lets_open_streams_finish(
    start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]
) -> None:
    fake, url = start_upstream("a")
    fake.stream_gap = 0.1
    fake.stream_events = 12  # about 1.5 s a stream
    gw = start_process(make_config(("m", url), drain_timeout=10))

    all_started = asyncio.Event()
    count = 0

    def started() -> None:
        nonlocal count
        count += 1
        if count == 20:
            all_started.set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        streams = [asyncio.create_task(_stream(session, gw.url, started)) for _ in range(20)]
        try:
            await asyncio.wait_for(all_started.wait(), 10)
            signalled = time.monotonic()
            gw.send(signal.SIGTERM)
            assert await _refused(gw.port, within=2), "new connections are still accepted during the drain"
            assert not all(s.done() for s in streams), "the streams ended before the listener closed"
            bodies = await asyncio.wait_for(asyncio.gather(*streams), 15)
        finally:
            for s in streams:
                s.cancel()
    for body in bodies:
        assert body.endswith(b"data: [DONE]\n\n")
        assert body.count(b"tok") == 12
    code = await asyncio.to_thread(gw.wait, 15)
    assert code == 0, gw.log()
    assert time.monotonic() - signalled < 10 + 3
    assert "draining" in gw.log()


async def test_sigterm_cuts_a_stream_longer_than_drain_timeout(
    start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]
) -> None:
    fake, url = start_upstream("a")
    fake.stream_gap = 0.2
    fake.stream_events = 50  # about 10 s
    gw = start_process(make_config(("m", url), drain_timeout=0.5))

    is_started = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        stream = asyncio.create_task(_stream(session, gw.url, is_started.set))
        try:
            await asyncio.wait_for(is_started.wait(), 10)
            signalled = time.monotonic()
            gw.send(signal.SIGTERM)
            body = await asyncio.wait_for(stream, 5)
        finally:
            stream.cancel()
    assert b"[DONE]" not in body
    # The client is told why its stream ended, as for a broken upstream: a last error event, then the end.
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"data: "), body[-300:]
    error = json.loads(last[len(b"data: ") :])["error"]
    assert (error["type"], error["code"]) == ("overloaded_error", "shutting_down")
    code = await asyncio.to_thread(gw.wait, 5)
    assert code == 0, gw.log()
    assert time.monotonic() - signalled < 0.5 + 3


def test_second_sigterm_exits_at_once(
    start_upstream: StartUpstream, start_process: Callable[..., GatewayProcess]
) -> None:
    fake, url = start_upstream("a")
    fake.stream_gap = 0.2
    fake.stream_events = 50
    gw = start_process(make_config(("m", url), drain_timeout=30))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        body = json.dumps({"model": "m", "stream": True, "messages": MESSAGES})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read1(100)  # the stream is running
        gw.send(signal.SIGTERM)
        wait_until(lambda: "draining" in gw.log(), "the drain to start")
        signalled = time.monotonic()
        gw.send(signal.SIGTERM)
        code = gw.wait(5)
    finally:
        conn.close()
    assert code == 1, gw.log()
    assert time.monotonic() - signalled < 3
    assert "exiting now" in gw.log()


# ----------------------------------------------------------------------------------------------------- in-process


def _gateway_config(tmp_path: Path, **server: Any) -> Path:
    path = tmp_path / "config.yaml"
    write_config(path, make_config(("m-a", "http://127.0.0.1:9"), **server))
    return path


def test_first_signal_marks_not_ready_before_the_drain(caplog: pytest.LogCaptureFixture) -> None:
    gateway = create_app(parse_config(make_config(("m-a", "http://127.0.0.1:9"))))
    server = Server(gateway, host="127.0.0.1", port=free_port(), config_path=None, log_level="warning")
    with caplog.at_level(logging.INFO, "modelrouter"):
        server.handle_hangup()  # no file to reload: said, and nothing else happens
    assert "nothing to reload" in caplog.text
    server.handle_exit(signal.SIGTERM, None)
    assert gateway.accepting is False  # /ready answers 503 from here on
    assert server.should_exit
    assert not server.force_exit
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit


async def test_reloader_keeps_the_config_when_the_file_has_problems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _gateway_config(tmp_path)
    gateway = create_app(parse_config(yaml.safe_load(path.read_text())))
    reloader = ConfigReloader(gateway, str(path))
    path.write_text("services:\n  chat:\n    instances:\n      - {name: m-b, base_url: ftp://x}\n  bogus: {}\n")
    with caplog.at_level(logging.INFO, "modelrouter"):
        assert await reloader.reload("test") is False
    assert gateway.table.resolve("chat", "m-a")
    problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith(str(path))]
    assert len(problems) == 2  # one line each
    assert any("base_url: not a URL" in p for p in problems)
    assert any("services.bogus" in p for p in problems)

    path.write_bytes(b"\xff\xfe not utf-8")  # not a ConfigError, still no crash
    assert await reloader.reload("test") is False
    assert gateway.table.resolve("chat", "m-a")

    # A file emptied by mistake (or saved half written) would route nothing: refused as at startup.
    for text in ("", "server: {port: 8080}\n"):
        path.write_text(text)
        assert await reloader.reload("test") is False
        assert gateway.table.resolve("chat", "m-a")


async def test_watcher_waits_for_the_file_to_settle(tmp_path: Path) -> None:
    path = _gateway_config(tmp_path, watch_config=True, watch_interval=0.05)
    gateway = create_app(parse_config(yaml.safe_load(path.read_text())))
    reloader = ConfigReloader(gateway, str(path))
    reloads: list[str] = []
    real_reload = reloader.reload

    async def counted(reason: str) -> bool:
        reloads.append(reason)
        return await real_reload(reason)

    reloader.reload = counted  # type: ignore[method-assign]
    watcher = asyncio.create_task(reloader.watch())
    try:
        await asyncio.sleep(0.3)
        assert reloads == []  # nothing changed
        path.unlink()
        await asyncio.sleep(0.3)
        assert reloads == []  # gone for now: keep serving
        write_config(path, make_config(("m-b", "http://127.0.0.1:9"), watch_config=True, watch_interval=0.05))
        for _ in range(100):
            if "m-b" in gateway.table.models_body.decode():
                break
            await asyncio.sleep(0.02)
        assert reloads == ["file changed"]
        await asyncio.sleep(0.3)
        assert reloads == ["file changed"]  # once per change
    finally:
        watcher.cancel()
