"""Hardening of upstream answers the gateway must not trust: a stream event that never ends, a stream whose first
token never comes, and a 200 whose body is not what a JSON endpoint answers.

Each fault is played by a real upstream on loopback (small aiohttp apps below), behind the gateway under uvicorn
(or, for peak memory, ``python -m modelrouter serve`` in a child process). Every fault must end in bounded time,
count against the instance (its breaker), fail over while nothing reached the client, and leave other clients'
requests fast.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from modelrouter import speedups
from modelrouter.adapters import OllamaAdapter, SSEPassThrough
from modelrouter.adapters.base import StreamTranslator
from modelrouter.dataplane import answers
from modelrouter.endpoints import ENDPOINTS_BY_PATH
from modelrouter.errors import GatewayError
from modelrouter.routing.instance import Instance

from .bystander import Bystander, two_models
from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer, UpstreamServer
from .test_failover import raw_post as post
from .test_lifecycle import GatewayProcess, write_config
from .test_sse_translators import every_cut

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]

CHAT = "/v1/chat/completions"
MIB = 1024 * 1024
DEFAULT_MAX_EVENT = 8 * MIB  # server.max_event_bytes' default
FIRST_EVENT = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'

# ---------------------------------------------------------------------------------------------------- upstreams


class _AnyPath:
    """A fake upstream answering every method and path with its ``_handle``."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app


@dataclass
class Endless(_AnyPath):
    """Streams SSE headers, ``head``, then ``data: {"x":"aaaa…`` that never reaches a blank line: ``chunk`` bytes a
    write, up to ``limit`` bytes (or until the gateway hangs up)."""

    head: bytes = b""
    chunk: int = 64 * 1024
    limit: int = 64 * MIB
    requests: int = 0
    sent: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            await resp.write(self.head + b'data: {"x":"')
            piece = b"a" * self.chunk
            while self.sent < self.limit:
                await resp.write(piece)
                self.sent += len(piece)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the gateway hung up, as it should
        return resp


@dataclass
class Trickle(_AnyPath):
    """SSE headers and ``head`` at once, then ``piece`` every ``every`` seconds for up to ``seconds``: bytes keep
    coming, no event is ever complete (``piece`` a keep-alive comment or a fragment of one event)."""

    piece: bytes
    head: bytes = b""
    every: float = 0.05
    seconds: float = 20.0
    requests: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        deadline = time.monotonic() + self.seconds
        try:
            await resp.write(self.head)
            while time.monotonic() < deadline:
                await resp.write(self.piece)
                await asyncio.sleep(self.every)
        except (ConnectionError, RuntimeError):
            pass
        return resp


@dataclass
class Canned(_AnyPath):
    """Answers every request with one fixed status, content type and body; counts requests per path."""

    body: bytes
    content_type: str = "application/json"
    status: int = 200
    paths: list[str] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.paths.append(request.path)
        return web.Response(status=self.status, body=self.body, headers={"Content-Type": self.content_type})


@pytest.fixture
def serve_app(bg: BackgroundLoop) -> Iterator[Callable[[web.Application], str]]:
    started: list[UpstreamServer] = []

    def start(app: web.Application) -> str:
        started.append(server := UpstreamServer(bg, app).start())
        return server.url

    yield start
    for server in started:
        server.stop()


# ------------------------------------------------------------------------------------------------------ helpers


def chat(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def error_of(body: bytes) -> dict[str, Any]:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err, dict)
    return err


def instance_at(gw: GatewayServer, url: str) -> Instance:
    (found,) = [i for i in gw.gateway.table.all_instances() if i.base_url == url]
    return found


# ------------------------------------------------------------------------------- the translators, in isolation


def _feed_repeatedly(translator: StreamTranslator, piece: bytes, times: int) -> None:
    for _ in range(times):
        translator.feed(piece)


def _feed_and_end(translator: StreamTranslator, stream: bytes) -> bytes:
    return translator.feed(stream) + translator.end()


def test_sse_passthrough_cuts_an_event_that_never_ends_in_linear_time() -> None:
    translator = SSEPassThrough()
    piece = b"a" * 1024
    started = time.perf_counter()
    assert translator.feed(b'data: {"x":"') == b""
    for _ in range(6 * 1024):  # 6 MiB, below the 8 MiB default cap: re-copying it per chunk took seconds
        assert translator.feed(piece) == b""
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed:.2f}s for 6 MiB in 1 KiB chunks"
    assert translator.feed(b'"}\n\n').startswith(b'data: {"x":"aaa')
    with pytest.raises(GatewayError) as info:
        _feed_repeatedly(translator, piece, 9 * 1024)
    assert info.value.code == "upstream_event_too_large"


def test_ollama_translator_cuts_a_line_that_never_ends_in_linear_time() -> None:
    translator = OllamaAdapter().stream_translator(ENDPOINTS_BY_PATH[CHAT], {"model": "m"})
    piece = b"a" * 1024
    started = time.perf_counter()
    assert translator.feed(b'{"message":{"content":"') == b""
    for _ in range(6 * 1024):
        assert translator.feed(piece) == b""
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed:.2f}s for 6 MiB in 1 KiB chunks"
    out = translator.feed(b'"},"done":false}\n{"message":{"content":"b"},"done":false}\n')
    assert out.count(b"data: ") == 2
    with pytest.raises(GatewayError) as info:
        _feed_repeatedly(translator, piece, 9 * 1024)
    assert info.value.code == "upstream_event_too_large"


def test_json_event_check_holds_comments_until_the_first_event_and_then_looks_no_more() -> None:
    translator = SSEPassThrough(json_events=True)
    assert translator.feed(b": keep-alive\n\nevent: message\nid: 1\n\n") == b""
    assert translator.feed(b"data: {") == b""
    out = translator.feed(b'"a": 1}\n\ndata: not json, and not checked\n\n')
    assert out == b': keep-alive\n\nevent: message\nid: 1\n\ndata: {"a": 1}\n\ndata: not json, and not checked\n\n'
    assert translator.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert translator.end() == b""


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_json_event_check_gives_back_the_stream_byte_for_byte_however_it_is_cut(line_end: str) -> None:
    # A comment and a data-less event (held until the first data), a two-line data event, [DONE].
    events = [[": hello"], ["event: message"], ['data: {"a": 1}'], ['data: {"b":', "data: 2}"], ["data: [DONE]"]]
    stream = "".join(line_end.join(lines) + line_end * 2 for lines in events).encode()
    for chunks in every_cut(stream, pairs=True, randoms=100):
        translator = SSEPassThrough(json_events=True)
        outs = [translator.feed(c) for c in chunks]
        outs.append(translator.end())
        assert b"".join(outs) == stream, chunks
        assert all(out.endswith((b"\n\n", b"\r\n\r\n")) for out in outs if out), outs


@pytest.mark.parametrize(
    ("stream", "verdict"),
    [
        # Blank lines of every mix of LF and CRLF end an event: what comes before the first data is no SSE field...
        (b": c\r\n\nhello\n\ndata: {}\n\n", "not server-sent events"),
        (b": c\n\r\nhello\r\n\r\ndata: {}\n\n", "not server-sent events"),
        # ... or the first data is not JSON, or it is, after comments ended by each mix.
        (b": c\r\n\r\nevent: x\n\r\ndata: {\r\n\n", "not JSON"),
        (b": c\r\n\nevent: x\n\r\ndata: {}\r\n\r\ndata: not looked at\n\n", "passed"),
        # A lone CR is not a line end here, so this is one long comment and then a data event.
        (b": c\r\rhello\n\ndata: {}\n\n", "passed"),
    ],
)
def test_json_event_check_ends_events_at_blank_lines_of_lf_and_crlf_mixed(stream: bytes, verdict: str) -> None:
    translator = SSEPassThrough(json_events=True)
    if verdict == "passed":
        assert translator.feed(stream) == stream
        assert translator.end() == b""
        return
    with pytest.raises(GatewayError) as info:
        _feed_and_end(translator, stream)
    assert verdict in info.value.message


@pytest.mark.parametrize(
    "stream",
    [
        b"<html><body>502 Bad Gateway</body></html>\n\n",
        b"data: <html>\n\n",
        b'data: {"truncated": \n\n',
        b": only a comment, then the end\n\n",
        b"",
    ],
)
def test_json_event_check_rejects_a_stream_that_is_not_json_events(stream: bytes) -> None:
    translator = SSEPassThrough(json_events=True)
    with pytest.raises(GatewayError) as info:
        _feed_and_end(translator, stream)
    assert info.value.code == "upstream_invalid_response"


def test_ndjson_garbage_stream_is_an_invalid_response(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    up = Canned(b"<html>no</html>\n", content_type="application/x-ndjson")
    url = serve_app(up.app())
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url, "adapter": "ollama"}]}}})
    status, _, body = post(gw.url, CHAT, chat("m", stream=True))
    assert status == 502
    assert error_of(body)["code"] == "upstream_invalid_response"
    assert instance_at(gw, url).breaker.consecutive == 1


# ----------------------------------------------------------------------------------- 1. an event that never ends


def test_an_event_that_never_ends_is_a_502_a_breaker_failure_and_others_stay_fast(
    serve_app: Callable[[web.Application], str], start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    endless = Endless()
    endless_url = serve_app(endless.app())
    _, ok_url = start_upstream("ok")
    gw = start_gateway(two_models(endless_url, ok_url))
    with Bystander(gw.url, "ok") as other:
        time.sleep(0.2)  # the bystander's own baseline first
        started = time.monotonic()
        try:
            status, _, body = post(gw.url, CHAT, chat("m", stream=True), timeout=15)
        except TimeoutError:
            status, body = 0, b"(no answer in 15 s)"
        elapsed = time.monotonic() - started
        time.sleep(0.2)
    # Healthy, the median is ~2 ms and the worst ~60 ms; re-copying the buffer on every chunk held the loop for
    # over a second at a time (the median stayed low: a sequential client waits behind one copy at most).
    other.assert_served(worst=0.5)
    assert status == 502, body[:200]
    err = error_of(body)
    assert (err["type"], err["code"]) == ("api_error", "upstream_event_too_large")
    assert elapsed < 5, f"{elapsed:.1f}s to give up on one event"
    assert endless.sent < endless.limit // 2, "the gateway hung up long before the upstream was done"
    assert instance_at(gw, endless_url).breaker.consecutive == 1, "the endless event counts against the instance"


def test_an_event_that_never_ends_after_the_first_event_ends_the_stream_with_an_error_event(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    endless = Endless(head=FIRST_EVENT)
    url = serve_app(endless.app())
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    started = time.monotonic()
    status, _, body = post(gw.url, CHAT, chat("m", stream=True), timeout=15)
    assert time.monotonic() - started < 5
    assert status == 200
    first, error, rest = body.split(b"\n\n")
    assert first + b"\n\n" == FIRST_EVENT
    assert error.startswith(b"data: ")
    err = error_of(error[len(b"data: ") :])
    assert err["code"] == "upstream_event_too_large"
    assert str(DEFAULT_MAX_EVENT) in err["message"]
    assert rest == b""
    assert endless.sent < endless.limit // 2, "the gateway hung up long before the upstream was done"
    assert instance_at(gw, url).breaker.consecutive == 1


def test_max_event_bytes_sets_the_cap_and_a_reload_changes_it(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    endless = Endless(head=FIRST_EVENT)
    url = serve_app(endless.app())
    config: dict[str, Any] = {"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}}
    gw = start_gateway({**config, "server": {"max_event_bytes": MIB}})
    status, _, body = post(gw.url, CHAT, chat("m", stream=True), timeout=15)
    assert status == 200
    assert str(MIB).encode() + b" bytes" in body
    gw.reload({**config, "server": {"max_event_bytes": 2 * MIB}})
    status, _, body = post(gw.url, CHAT, chat("m", stream=True), timeout=15)
    assert str(2 * MIB).encode() + b" bytes" in body


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_an_event_that_never_ends_keeps_peak_memory_bounded(
    serve_app: Callable[[web.Application], str], start_upstream: StartUpstream, tmp_path: Path
) -> None:
    """A real `modelrouter serve` process with the default cap: its peak RSS stays within 100 MiB of idle."""
    endless = Endless(chunk=256 * 1024, limit=512 * MIB)
    endless_url = serve_app(endless.app())
    _, ok_url = start_upstream("ok")
    config = {
        "health_check": {"enabled": False},
        "server": {"watch_config": False},
        "store": {"data_dir": str(tmp_path / "data")},
        **two_models(endless_url, ok_url),
    }
    path = tmp_path / "config.yaml"
    write_config(path, config)
    gw = GatewayProcess(path, tmp_path / "gateway.log")
    try:
        gw.wait_ready()
        status, _, _ = post(gw.url, CHAT, chat("ok"))  # warm: the first request's imports and pools
        assert status == 200
        idle = _vm_hwm_kib(gw.proc.pid)
        try:
            status, _, body = post(gw.url, CHAT, chat("m", stream=True), timeout=20)
        except TimeoutError:
            status, body = 0, b"(no answer in 20 s)"
        peak = _vm_hwm_kib(gw.proc.pid)
        assert (peak - idle) / 1024 < 100, f"peak RSS grew {(peak - idle) / 1024:.0f} MiB over idle ({idle} KiB)"
        assert status == 502, body[:200]
        assert error_of(body)["code"] == "upstream_event_too_large"
    finally:
        gw.kill()


# ---------------------------------------------------------------------------------- first_byte: the first token


@pytest.mark.parametrize(
    ("head", "piece"),
    [(b"", b": keep-alive\n\n"), (b'data: {"choices": [', b" ")],
    ids=["keep-alive comments", "an event that never completes"],
)
def test_first_byte_bounds_the_first_event_not_the_first_read_and_fails_over(
    head: bytes,
    piece: bytes,
    serve_app: Callable[[web.Application], str],
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
) -> None:
    trickle = Trickle(piece, head)
    trickle_url = serve_app(trickle.app())
    good, good_url = start_upstream("good")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "timeouts": {"connect": 1, "first_byte": 0.5, "idle": 10, "total": 30},
                    "instances": [{"name": "m", "base_url": trickle_url}, {"name": "m", "base_url": good_url}],
                }
            }
        }
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=5)
    started = time.monotonic()
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    elapsed = time.monotonic() - started
    assert trickle.requests == 1, "the trickling instance was tried first"
    assert text == "tok0 tok1 tok2 "
    assert 0.4 < elapsed < 3, f"{elapsed:.2f}s: first_byte is 0.5s"
    assert instance_at(gw, trickle_url).breaker.consecutive == 1
    assert len(good.requests) == 1


def test_a_stream_without_a_first_event_in_time_alone_is_a_504(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    trickle = Trickle(b": keep-alive\n\n")
    url = serve_app(trickle.app())
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "timeouts": {"first_byte": 0.5, "idle": 10, "total": 30},
                    "instances": [{"name": "m", "base_url": url}],
                }
            }
        }
    )
    started = time.monotonic()
    status, _, body = post(gw.url, CHAT, chat("m", stream=True), timeout=5)
    assert time.monotonic() - started < 3
    assert status == 504
    err = error_of(body)
    assert err["code"] == "upstream_timeout"
    assert "first token" in err["message"]


# ----------------------------------------------------------------------------------------- 7. a non-JSON 200


GARBAGE = b"<html><body>upstream proxy says hello</body></html>"


def test_a_non_json_200_fails_over_and_the_broken_instance_loses_its_traffic(
    serve_app: Callable[[web.Application], str], start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    broken = Canned(GARBAGE)
    broken_url = serve_app(broken.app())
    good, good_url = start_upstream("good")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "breaker": {"consecutive_failures": 2, "open_for": 30},
                    "instances": [{"name": "m", "base_url": broken_url}, {"name": "m", "base_url": good_url}],
                }
            }
        }
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=5)
    for _ in range(20):
        out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "hello from good"
    assert len(broken.paths) <= 2, "the breaker keeps the broken instance out after 2 failures"
    assert len(good.requests) == 20
    assert instance_at(gw, broken_url).breaker.state == "open"


# One garbage answer per way the gateway reads a JSON answer: passed through byte for byte (chat with usage,
# embeddings as floats), counted (no usage), post-processed (embeddings base64, rerank), translated (Ollama).
INVALID_CASES = {
    "chat passed through": ("chat", "openai", "/v1/chat/completions", chat("m"), GARBAGE + b' "usage": {}'),
    "chat truncated": ("chat", "openai", "/v1/chat/completions", chat("m"), b'{"id":"x","usage":{"prompt_tokens":1'),
    "chat without usage": ("chat", "openai", "/v1/chat/completions", chat("m"), GARBAGE),
    "embeddings floats": ("embedding", "openai", "/v1/embeddings", {"model": "m", "input": "a"}, GARBAGE),
    "embeddings base64": (
        "embedding",
        "openai",
        "/v1/embeddings",
        {"model": "m", "input": "a", "encoding_format": "base64"},
        GARBAGE,
    ),
    "rerank": ("rerank", "openai", "/v1/rerank", {"model": "m", "query": "q", "documents": ["a", "b"]}, GARBAGE),
    "ollama chat": ("chat", "ollama", "/v1/chat/completions", chat("m"), GARBAGE),
    "image generation": ("image_generation", "openai", "/v1/images/generations", {"model": "m", "prompt": "p"}, b"{"),
}


@pytest.fixture(params=["compiled scan", "orjson"])
def json_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways an answer is checked: the compiled scan (when built), and orjson (without it, or when the scan
    cannot tell)."""
    if request.param == "orjson":
        monkeypatch.setattr(answers, "json_kind", lambda body: speedups.JSON_UNKNOWN)
    elif speedups.json_kind(b"{}") == speedups.JSON_UNKNOWN:
        pytest.skip("modelrouter._speedups is not built (no C compiler at install time)")


@pytest.mark.parametrize("case", list(INVALID_CASES))
@pytest.mark.usefixtures("json_check")
def test_a_non_json_200_alone_is_a_502_invalid_response_and_a_breaker_failure(
    case: str, serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    service, adapter, path, request, answer = INVALID_CASES[case]
    up = Canned(answer)
    url = serve_app(up.app())
    gw = start_gateway({"services": {service: {"instances": [{"name": "m", "base_url": url, "adapter": adapter}]}}})
    status, _, body = post(gw.url, path, request)
    assert status == 502, body[:200]
    err = error_of(body)
    assert (err["type"], err["code"]) == ("api_error", "upstream_invalid_response")
    assert instance_at(gw, url).breaker.consecutive == 1, "a 200 that is not JSON is no success"


# Valid answers in the forms the check must get right whichever way it decides (the compiled scan, or orjson
# when the scan cannot tell): passed through byte for byte, a usage added only where the answer has none.
VALID_CASES = {
    "with usage": (
        b'{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}',
        False,
    ),
    "spaced and escaped": (
        b'{ "choices" : [ { "message" : { "content" : "\\u00e9\\ud83d\\ude00" } } ] ,\n'
        b' "usage" : { "prompt_tokens" : 1 , "completion_tokens" : 1 } }\n',
        False,
    ),
    "usage only nested": (b'{"choices":[{"message":{"content":"hi","usage":{"prompt_tokens":9}}}]}', True),
    "usage null": (b'{"choices":[{"message":{"content":"hi"}}],"usage":null}', True),
    "a number near the double's limit": (b'{"choices":[],"x":1.7e308,"usage":{"prompt_tokens":1}}', False),
    "an escaped key": (b'{"choices":[],"us\\u0061ge":{"prompt_tokens":1,"completion_tokens":0}}', False),
}


@pytest.mark.parametrize("case", list(VALID_CASES))
@pytest.mark.usefixtures("json_check")
def test_a_valid_answer_passes_and_gets_usage_only_when_it_has_none(
    case: str, serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    answer, estimated = VALID_CASES[case]
    url = serve_app(Canned(answer).app())
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    status, headers, body = post(gw.url, "/v1/chat/completions", chat("m"))
    assert status == 200, body[:200]
    assert instance_at(gw, url).breaker.consecutive == 0
    if estimated:
        assert headers["x-modelrouter-usage"] == "estimated"
        assert json.loads(body)["usage"]["estimated"] is True
    else:
        assert "x-modelrouter-usage" not in headers
        assert body == answer


@pytest.mark.parametrize(
    "stream",
    [GARBAGE + b"\n\n", b"data: " + GARBAGE + b"\n\n", b": ok\n\nHTTP/1.1 502 Bad Gateway\n\n"],
    ids=["html", "data that is not json", "a line that is no sse field"],
)
def test_a_garbage_sse_stream_fails_over_before_its_first_event(
    stream: bytes,
    serve_app: Callable[[web.Application], str],
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
) -> None:
    broken = Canned(stream, content_type="text/event-stream")
    broken_url = serve_app(broken.app())
    _, good_url = start_upstream("good")
    gw = start_gateway(
        {
            "services": {
                "chat": {
                    "load_balance": "round_robin",
                    "instances": [{"name": "m", "base_url": broken_url}, {"name": "m", "base_url": good_url}],
                }
            }
        }
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=5)
    stream_ = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream_ if c.choices) == "tok0 tok1 tok2 "
    assert len(broken.paths) == 1
    assert instance_at(gw, broken_url).breaker.consecutive == 1
    # Alone, the client gets the error itself.
    gw_alone = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": broken_url}]}}})
    status, _, body = post(gw_alone.url, CHAT, chat("m", stream=True))
    assert status == 502
    assert error_of(body)["code"] == "upstream_invalid_response"


def test_a_multipart_answer_claiming_json_must_be_json(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    up = Canned(GARBAGE)
    url = serve_app(up.app())
    gw = start_gateway({"services": {"stt": {"instances": [{"name": "m", "base_url": url}]}}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=5)
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="m", file=("a.wav", b"RIFF....", "audio/wav"))
    assert info.value.status_code == 502
    assert error_of(info.value.response.content)["code"] == "upstream_invalid_response"


def test_non_json_answers_of_endpoints_that_answer_non_json_pass_unchanged(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    """Guards, not regressions: speech audio and a transcription as text/srt are no JSON and are passed on."""
    audio = Canned(b"ID3\x04\x00not json \xff\xfe", content_type="audio/mpeg")
    srt = Canned(b"1\n00:00:00,000 --> 00:00:01,000\nhello\n", content_type="text/plain; charset=utf-8")
    services = {
        "tts": {"instances": [{"name": "m", "base_url": serve_app(audio.app())}]},
        "stt": {"instances": [{"name": "m", "base_url": serve_app(srt.app())}]},
    }
    gw = start_gateway({"services": services})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=5)
    speech = client.audio.speech.create(model="m", voice="alloy", input="hello")
    assert speech.content == audio.body
    text = client.audio.transcriptions.create(
        model="m", file=("a.wav", b"RIFF....", "audio/wav"), response_format="srt"
    )
    assert text == srt.body.decode()


def test_a_stream_passes_on_the_rate_limit_headers_and_nothing_of_the_backend(
    serve_app: Callable[[web.Application], str], start_gateway: StartGateway
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "x-ratelimit-remaining-tokens": "41",
                "Retry-After": "3",
                "Server": "backend-1.internal",
                "X-Backend-Host": "10.0.0.5:8000",
            }
        )
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post(CHAT, handle)
    url = serve_app(app)
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    status, headers, body = post(gw.url, CHAT, chat("m", stream=True))
    assert status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    assert headers["content-type"].startswith("text/event-stream")
    assert (headers["x-ratelimit-remaining-tokens"], headers["retry-after"]) == ("41", "3")
    assert "x-backend-host" not in headers
    assert "backend-1.internal" not in " ".join(headers.values())
