"""The transport contract: what the gateway relies on from any upstream client, run against every implementation
(``upstream.clients.CLIENTS``) and real loopback upstreams (aiohttp.web, TLS with a local test CA from trustme).

Pooled keep-alive, the four timeouts and their errors, streaming chunk by chunk, a close that drops the upstream
socket at once, a multipart body replayed, TLS, large bodies both ways, the size caps, the headers passed on, and
connection errors - each asserted where it shows: at the upstream when the upstream is what must notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme
from aiohttp import web

from modelrouter.config.model import Timeouts, UpstreamConfig
from modelrouter.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamInvalid,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from modelrouter.http.multipart import Form, Part
from modelrouter.upstream.base import Transport, UpstreamRequest, UpstreamResponse
from modelrouter.upstream.clients import CLIENTS, build_transport

pytestmark = pytest.mark.timeout(60)

LONG = Timeouts(connect=5, first_byte=10, idle=10, total=30)
BLOB = bytes(range(256)) * 4096  # 1 MiB, not compressible into a coincidence
BOUND = 1.0  # seconds: how late "at once" may be (the coarse clock ticks every 25 ms)


class Upstream:
    """One aiohttp.web backend on loopback that records what reached it."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []  # the client end of each request's connection
        self.go_on = asyncio.Event()  # lets /two send its second chunk
        self.sent_second = False
        self.lost_at: float | None = None  # when /hold saw its connection go
        self.received: list[tuple[str, int, str]] = []  # /sink: (content type, length, sha256)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path, handler in [
            ("/small", self.small),
            ("/two", self.two),
            ("/hold", self.hold),
            ("/hold-head", self.hold_head),
            ("/no-headers", self.no_headers),
            ("/stall", self.stall),
            ("/drip", self.drip),
            ("/sink", self.sink),
            ("/source", self.source),
            ("/declared", self.declared),
            ("/headers", self.headers),
        ]:
            app.router.add_route("*", path, handler)
        return app

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Upstream:
        self.runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://{'localhost' if ssl_context else '127.0.0.1'}:{port}"
        return self

    def _seen(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))

    async def small(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=b"ok:" + await request.read(), content_type="application/json")

    async def _open(self, request: web.Request, first: bytes) -> web.StreamResponse:
        self._seen(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(first)
        return resp

    async def two(self, request: web.Request) -> web.StreamResponse:
        resp = await self._open(request, b"data: first\n\n")
        await self.go_on.wait()
        self.sent_second = True
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    async def hold(self, request: web.Request) -> web.StreamResponse:
        """A first chunk, then nothing: watch the connection until it goes."""
        resp = await self._open(request, b"data: first\n\n")
        await self._until_lost(request)
        return resp

    async def hold_head(self, request: web.Request) -> web.Response:
        """No answer at all: watch the connection until it goes."""
        self._seen(request)
        await self._until_lost(request)
        return web.Response()

    async def _until_lost(self, request: web.Request) -> None:
        transport = request.transport
        assert transport is not None
        # Polled every 5 ms: aiohttp.web has no connection-lost hook for a handler (the protocol's is internal).
        while not transport.is_closing():  # noqa: ASYNC110 - there is no event to wait on
            await asyncio.sleep(0.005)
        self.lost_at = time.monotonic()

    async def no_headers(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async def stall(self, request: web.Request) -> web.StreamResponse:
        resp = await self._open(request, b": keep-alive\n\n")
        await asyncio.sleep(30)
        return resp

    async def drip(self, request: web.Request) -> web.StreamResponse:
        resp = await self._open(request, b"data: 0\n\n")
        for i in range(600):
            await asyncio.sleep(0.05)
            await resp.write(b"data: %d\n\n" % i)
        return resp

    async def sink(self, request: web.Request) -> web.Response:
        self._seen(request)
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        self.received.append((request.content_type, size, digest.hexdigest()))
        return web.Response(text=digest.hexdigest())

    async def source(self, request: web.Request) -> web.StreamResponse:
        """``n`` MiB of BLOB, chunked (no length) unless ``length`` is given."""
        self._seen(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if "length" in request.query:
            resp.content_length = int(request.query["n"]) * len(BLOB)
        await resp.prepare(request)
        for _ in range(int(request.query["n"])):
            await resp.write(BLOB)
        await resp.write_eof()
        return resp

    async def declared(self, request: web.Request) -> web.StreamResponse:
        """Says 1 GiB, sends one MiB, then waits: a reader that trusted the length would hang here."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 1 << 30
        await resp.prepare(request)
        await resp.write(BLOB)
        await asyncio.sleep(30)
        return resp

    async def headers(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "X-Request-Cost": "7"})
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers["Connection"] = "keep-alive"
        resp.headers["Server"] = "upstream/1.0"
        await resp.prepare(request)  # chunked: Transfer-Encoding is on the wire
        await resp.write(b"{}")
        await resp.write_eof()
        return resp

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture(params=CLIENTS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Transport]]:
    """make(ca_pem=None) -> a transport of the parametrized client; all are closed after the test."""
    made: list[Transport] = []

    def build(ca_pem: bytes | None = None) -> Transport:
        made.append(transport := build_transport(UpstreamConfig(client=request.param), ca_pem=ca_pem))
        return transport

    yield build
    for transport in made:
        await transport.aclose()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = await Upstream().start()
    yield up
    await up.stop()


def req(url: str, method: str = "GET", body: Any = None, timeouts: Timeouts = LONG, **headers: str) -> UpstreamRequest:
    return UpstreamRequest(method, url, dict(headers), body, timeouts)


async def drain(resp: UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in resp.iter_chunks()])


def assert_no_address(error: GatewayError, url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    for address in ("127.0.0.1", "localhost", port):
        assert address not in error.message


async def test_keep_alive_one_pooled_connection_for_sequential_requests(make: Any, upstream: Upstream) -> None:
    transport = make()
    for i in range(10):
        resp = await transport.send(req(upstream.url + "/small", "POST", b"%d" % i))
        assert (resp.status, await resp.read(1000)) == (200, b"ok:%d" % i)
        resp.close()
    resp = await transport.send(req(upstream.url + "/source?n=2"))  # read as a stream to its end: reused too
    assert len(await drain(resp)) == 2 * len(BLOB)
    resp.close()
    resp = await transport.send(req(upstream.url + "/small"))
    await resp.read(1000)
    resp.close()
    assert len(upstream.peers) == 12
    assert len(set(upstream.peers)) == 1


async def test_a_response_closed_half_read_is_not_reused(make: Any, upstream: Upstream) -> None:
    transport = make()
    resp = await transport.send(req(upstream.url + "/source?n=8"))
    chunks = resp.iter_chunks()
    await anext(chunks)
    resp.close()
    resp = await transport.send(req(upstream.url + "/small"))
    assert await resp.read(1000) == b"ok:"
    resp.close()
    assert len(set(upstream.peers)) == 2


async def test_chunks_are_forwarded_as_they_arrive(make: Any, upstream: Upstream) -> None:
    resp = await make().send(req(upstream.url + "/two"))
    chunks = resp.iter_chunks()
    assert await asyncio.wait_for(anext(chunks), BOUND) == b"data: first\n\n"
    assert not upstream.sent_second  # it reached us while the upstream was still holding the second one
    upstream.go_on.set()
    assert b"".join([c async for c in chunks]) == b"data: second\n\n"
    resp.close()


async def test_closing_mid_stream_closes_the_upstream_socket_at_once(make: Any, upstream: Upstream) -> None:
    resp = await make().send(req(upstream.url + "/hold"))
    chunks = resp.iter_chunks()
    await anext(chunks)
    closed_at = time.monotonic()
    resp.close()
    resp.close()  # idempotent
    for _ in range(int(BOUND / 0.01)):
        if upstream.lost_at is not None:
            break
        await asyncio.sleep(0.01)
    assert upstream.lost_at is not None, "the upstream still holds the connection"
    assert upstream.lost_at - closed_at < BOUND
    await chunks.aclose()


@pytest.mark.parametrize("how", ["cancelled", "first_byte"])
async def test_a_send_given_up_before_the_headers_closes_the_upstream_socket_at_once(
    make: Any, upstream: Upstream, how: str, request: pytest.FixtureRequest
) -> None:
    """A client that goes away (the task is cancelled) or a first-byte timeout frees the backend at once."""
    if "pyreqwest" in request.node.callspec.id:
        request.applymarker(
            pytest.mark.xfail(
                strict=True, reason="pyreqwest 0.15.1 detaches the Tokio task of a cancelled send, not aborting it"
            )
        )
    timeouts = Timeouts(first_byte=0.2) if how == "first_byte" else LONG
    sending = asyncio.ensure_future(make().send(req(upstream.url + "/hold-head", "POST", b"{}", timeouts)))
    for _ in range(int(BOUND / 0.01)):
        if upstream.peers:
            break
        await asyncio.sleep(0.01)
    if how == "cancelled":
        sending.cancel()
    with pytest.raises((asyncio.CancelledError, UpstreamTimeout)):
        await sending
    given_up = time.monotonic()
    for _ in range(int(BOUND / 0.01)):
        if upstream.lost_at is not None:
            break
        await asyncio.sleep(0.01)
    assert upstream.lost_at is not None, "the upstream still holds the connection"
    assert upstream.lost_at - given_up < BOUND


async def test_connection_refused_is_a_connect_error(make: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1/models"
    with pytest.raises(UpstreamConnectError) as caught:
        await make().send(req(url))
    assert "connection refused" in caught.value.message
    assert_no_address(caught.value, url)


@pytest.mark.parametrize("behaviour", ["close", "reset", "garbage"])
async def test_a_backend_that_goes_away_after_connect_is_a_broken_answer(make: Any, behaviour: str) -> None:
    """Not a connect error: the connection was made and the request may have reached the backend."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if behaviour == "reset":  # SO_LINGER 0: close sends RST
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif behaviour == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        with pytest.raises(UpstreamInvalid) as caught:
            await make().send(req(url, "POST", b"{}"))
        assert not isinstance(caught.value, UpstreamConnectError)
        assert_no_address(caught.value, url)
    finally:
        server.close()


async def test_connect_timeout_is_an_upstream_timeout(make: Any) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connects hang.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await make().send(req(url, timeouts=Timeouts(connect=0.3, first_byte=10, total=20)))
        assert 0.25 < time.monotonic() - started < 0.3 + BOUND
        assert "connect" in caught.value.message
        assert_no_address(caught.value, url)
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_first_byte_timeout_while_waiting_for_headers(make: Any, upstream: Upstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await make().send(req(upstream.url + "/no-headers", timeouts=Timeouts(connect=5, first_byte=0.3)))
    assert 0.25 < time.monotonic() - started < 0.3 + BOUND
    assert caught.value.message == "the backend sent no answer in time"


async def test_first_byte_budget_bounds_a_stream_until_its_first_event(make: Any, upstream: Upstream) -> None:
    started = time.monotonic()
    resp = await make().send(req(upstream.url + "/stall", timeouts=Timeouts(first_byte=0.4, idle=10)))
    chunks = resp.iter_chunks()
    assert await anext(chunks) == b": keep-alive\n\n"  # a comment is no first token
    with pytest.raises(UpstreamTimeout) as caught:
        await anext(chunks)
    assert 0.35 < time.monotonic() - started < 0.4 + BOUND
    assert caught.value.message == "the backend sent no first token in time"


async def test_idle_timeout_after_the_first_event(make: Any, upstream: Upstream) -> None:
    resp = await make().send(req(upstream.url + "/stall", timeouts=Timeouts(first_byte=10, idle=0.3)))
    chunks = resp.iter_chunks()
    await anext(chunks)
    resp.first_event()
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await anext(chunks)
    assert 0.25 < time.monotonic() - started < 0.3 + BOUND
    assert caught.value.message == "the backend stalled mid-answer"


async def test_idle_timeout_bounds_a_whole_read(make: Any, upstream: Upstream) -> None:
    resp = await make().send(req(upstream.url + "/stall", timeouts=Timeouts(first_byte=10, idle=0.3)))
    with pytest.raises(UpstreamTimeout) as caught:
        await resp.read(1_000_000)
    assert caught.value.message == "the backend timed out sending its answer"


async def test_total_timeout_ends_a_stream_that_never_idles(make: Any, upstream: Upstream) -> None:
    started = time.monotonic()
    resp = await make().send(req(upstream.url + "/drip", timeouts=Timeouts(first_byte=10, idle=10, total=0.5)))
    resp.first_event()
    with pytest.raises(UpstreamTimeout):
        async for _ in resp.iter_chunks():
            pass
    assert 0.45 < time.monotonic() - started < 0.5 + BOUND


def _form(size: int) -> Form:
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 - the form owns it (Form.close), as uploads' spools
    spooled.write(BLOB * (size // len(BLOB)))
    upload = Part("file", "speech.wav", "audio/wav")
    upload.file, upload.size = spooled, spooled.tell()
    field = Part("language", None, None)
    field.data += b"en"
    return Form([upload, field])


async def test_a_multipart_body_is_replayed_whole_on_the_next_instance(make: Any, upstream: Upstream) -> None:
    form = _form(4 * len(BLOB))
    content_type, length, body = form.encode({"model": "whisper-1"})
    expected = hashlib.sha256(b"".join([chunk async for chunk in body()])).hexdigest()
    headers = {"Content-Type": content_type, "Content-Length": str(length)}
    transport = make()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/sink"
    with pytest.raises(UpstreamConnectError):  # the first instance is down: failover replays the body
        await transport.send(UpstreamRequest("POST", refused, headers, body, LONG))
    for _ in range(2):
        resp = await transport.send(UpstreamRequest("POST", upstream.url + "/sink", headers, body, LONG))
        assert (await resp.read(1000)).decode() == expected
        resp.close()
    assert upstream.received == [("multipart/form-data", length, expected)] * 2
    form.close()


async def test_large_binary_bodies_stream_both_ways(make: Any, upstream: Upstream) -> None:
    transport = make()

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield BLOB

    resp = await transport.send(req(upstream.url + "/sink", "POST", upload))
    assert (await resp.read(1000)).decode() == hashlib.sha256(BLOB * 32).hexdigest()
    resp.close()
    resp = await transport.send(req(upstream.url + "/source?n=32"))
    digest, size, pieces = hashlib.sha256(), 0, 0
    async for chunk in resp.iter_chunks():
        digest.update(chunk)
        size, pieces = size + len(chunk), pieces + 1
    resp.close()
    assert (size, digest.hexdigest()) == (32 * len(BLOB), hashlib.sha256(BLOB * 32).hexdigest())
    assert pieces > 32  # streamed in pieces, not handed over whole
    resp = await transport.send(req(upstream.url + "/source?n=32&length=1"))
    assert await resp.read(32 * len(BLOB)) == BLOB * 32  # exactly at the cap is allowed
    resp.close()


async def test_read_refuses_a_declared_length_over_the_cap_without_reading(make: Any, upstream: Upstream) -> None:
    transport = make()
    resp = await transport.send(req(upstream.url + "/declared"))
    started = time.monotonic()
    with pytest.raises(UpstreamResponseTooLarge) as caught:
        await resp.read(64 * 1024 * 1024)
    assert time.monotonic() - started < BOUND  # refused on the header, not after waiting for the body
    assert "Content-Length" in caught.value.message
    resp.close()


@pytest.mark.parametrize("length", ["", "&length=1"])
async def test_read_counts_a_body_over_the_cap(make: Any, upstream: Upstream, length: str) -> None:
    transport = make()
    resp = await transport.send(req(upstream.url + "/source?n=3" + length))
    with pytest.raises(UpstreamResponseTooLarge):
        await resp.read(2 * len(BLOB) + 1)
    resp.close()
    resp = await transport.send(req(upstream.url + "/source?n=3" + length))
    assert await resp.read(3 * len(BLOB)) == BLOB * 3
    resp.close()


async def test_header_items_drop_hop_by_hop_and_framing_headers(make: Any, upstream: Upstream) -> None:
    resp = await make().send(req(upstream.url + "/headers"))
    items = resp.header_items()
    assert resp.content_type == "application/json"
    names = [name for name, _ in items]
    assert all(name == name.lower() for name in names)
    assert {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server"}.isdisjoint(names)
    assert (b"x-request-cost", b"7") in items
    assert [v for k, v in items if k == b"set-cookie"] == [b"a=1", b"b=2"]
    assert await resp.read(100) == b"{}"
    resp.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_to_a_backend_with_a_private_ca(make: Any, ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    up = await Upstream().start(server_context)
    try:
        with pytest.raises(UpstreamConnectError) as caught:  # not trusted by default
            await make().send(req(up.url + "/small"))
        assert_no_address(caught.value, up.url)
        transport = make(ca_pem=ca.cert_pem.bytes())
        for _ in range(3):
            resp = await transport.send(req(up.url + "/small", "POST", b"tls"))
            assert (resp.status, await resp.read(100)) == (200, b"ok:tls")
            resp.close()
        assert len(set(up.peers)) == 1
    finally:
        await up.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_proxy_variables_in_the_environment_are_not_followed(
    make: Any, upstream: Upstream, host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backends are where the config says: an HTTP(S)_PROXY meant for the machine's other programs (here one
    that refuses every connection) must not take the gateway's traffic, by IP address or by name."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{dead.getsockname()[1]}"  # bound, not listening: refuses
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        transport = make()
        resp = await transport.send(req(upstream.url.replace("127.0.0.1", host) + "/small", "POST", b"direct"))
        assert (resp.status, await resp.read(100)) == (200, b"ok:direct")
        resp.close()
