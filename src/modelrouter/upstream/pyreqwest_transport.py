"""The pyreqwest transport: Rust's reqwest/hyper behind the ``Transport`` interface (``upstream.client: pyreqwest``).

In a bare proxy A/B here it cost about half the CPU per request of aiohttp. It keeps the aiohttp transport's
contract exactly (tests/test_transport_contract.py runs both): the timeouts are the same ``Deadline`` on the shared
coarse clock, cancelling the task around each await - pyreqwest's own timers would be one more timer per request
and cannot tell the first-byte phase from the idle one. Connect timeouts are the one exception: only reqwest sees
when the connection is made, so each distinct connect timeout gets a client of its own (in practice one or two).

Every response is read as a stream with a read buffer of 0: pyreqwest otherwise reads up to 64 KiB of the body
before it hands over the headers, which held a whole SSE answer back until its end.

Known gap (tests/test_transport_contract.py, an expected failure): pyreqwest 0.15.1 does not abort a request whose
send is cancelled before the response headers (a client gone, a first-byte timeout) - its Tokio task is detached,
not cancelled - so the backend keeps the connection, and goes on generating, until it answers or the request's
total timeout (set on reqwest too, just past ours) ends it. aiohttp closes the socket at once.

This is the only module that knows pyreqwest's exceptions; they become ``modelrouter.errors`` types here, with
messages that name no backend address (the URL is logged at debug level instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import ConnectError, ConnectTimeoutError, PyreqwestError
from pyreqwest.request import StreamRequest
from pyreqwest.response import Response, ResponseBodyReader

from ..config.model import Timeouts
from ..errors import GatewayError, UpstreamConnectError, UpstreamInvalid, UpstreamTimeout
from .base import UpstreamRequest
from .exchange import (
    DROP_HEADERS,
    Deadline,
    broke_off,
    describe,
    finish_later,
    logged,
    no_answer,
    read_timeout,
    stream_timeout,
    too_large,
)

__all__ = ["PyreqwestTransport"]

log = logging.getLogger("modelrouter.upstream")

_ORPHAN_SLACK = 1.0  # seconds past the total deadline (the coarse clock is late by 25 ms at most)


class PyreqwestResponse:
    __slots__ = (
        "_deadline",
        "_eof",
        "_first",
        "_first_at",
        "_idle",
        "_reader",
        "_request",
        "_resp",
        "_url",
        "content_type",
        "status",
    )

    def __init__(
        self,
        request: StreamRequest,
        resp: Response,
        timeouts: Timeouts,
        deadline: Deadline,
        url: str,
        first: float | None,
    ) -> None:
        self._request: StreamRequest | None = request  # its __aexit__ stops the body's reader task
        self._resp = resp
        self._reader: ResponseBodyReader | None = resp.body_reader
        self._eof = False  # the body was read to its end: the connection is back in the pool already
        self._idle = timeouts.idle
        self._deadline = deadline
        self._url = url
        # What is left of the first-byte budget, as in the aiohttp transport: it bounds the body's reads until the
        # first complete event (``first_event``).
        self._first = first
        self._first_at: float | None = None
        self.status = resp.status
        self.content_type: str | None = resp.get_header("content-type")

    def header_items(self) -> list[tuple[bytes, bytes]]:
        # reqwest's header map has lower-case names already, one item per value (two Set-Cookie stay two).
        return [
            (name, value.encode("latin-1", "replace"))
            for key, value in self._resp.headers.items()
            if (name := key.encode("latin-1")) not in DROP_HEADERS
        ]

    async def read(self, limit: int) -> bytes:
        length = self._resp.get_header("content-length")
        # The same shortcut as the aiohttp transport: six digits or fewer is under any cap of a megabyte or more.
        if length is not None and (len(length) > 6 or limit < 1_000_000) and int(length) > limit:
            raise self._failed(too_large(limit, int(length)))
        reader = self._reader
        if reader is None:
            raise self._failed(UpstreamInvalid("the backend's answer was already closed"))
        deadline = self._deadline
        deadline.arm(self._idle)
        try:
            if length is not None:
                # hyper ends the body at Content-Length, which is within the limit: read it whole in one call.
                data = (await reader.bytes()).to_bytes()
            else:
                data = await self._read_capped(reader, limit)
        except asyncio.CancelledError:
            if deadline.caused():
                raise self._failed(read_timeout()) from None
            raise
        except PyreqwestError as exc:
            raise self._failed(broke_off(), exc) from None
        finally:
            deadline.disarm()
        self._eof = True
        return data

    async def _read_capped(self, reader: ResponseBodyReader, limit: int) -> bytes:
        """A body of unknown length, cut off once past ``limit``; joined once at the end."""
        chunks: list[bytes] = []
        size = 0
        while (chunk := await reader.read_chunk()) is not None:
            size += len(chunk)
            if size > limit:
                chunks.clear()
                raise self._failed(too_large(limit, None))
            chunks.append(chunk.to_bytes())
        return b"".join(chunks)

    def first_event(self) -> None:
        self._first = None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        deadline = self._deadline
        idle = self._idle
        if self._first is not None:
            self._first_at = deadline.now() + self._first
        while True:
            # Looked up each time rather than held in this frame: close() must be able to drop the reader while
            # the generator is suspended.
            reader = self._reader
            if reader is None:
                return
            first_at = self._first_at if self._first is not None else None
            # Before the first event: what is left of the first-byte budget; after it: the idle timeout. Inline,
            # not a call: this runs for every chunk of every stream.
            deadline.arm(idle if first_at is None else max(first_at - deadline.now(), 0.0))
            try:
                chunk = await reader.read_chunk()
            except asyncio.CancelledError:
                if deadline.caused():
                    raise self._failed(stream_timeout(first_at is not None)) from None
                raise
            except PyreqwestError as exc:
                raise self._failed(broke_off(), exc) from None
            finally:
                deadline.disarm()
            del reader
            if chunk is None:
                self._eof = True
                return
            yield chunk.to_bytes()

    def _failed(self, error: GatewayError, cause: BaseException | None = None) -> GatewayError:
        self.close()
        log.debug("%s: %s%s", self._url, error.message, f" ({describe(cause)})" if cause else "")
        return error

    def close(self) -> None:
        self._deadline.disarm()
        request = self._request
        if request is None:
            return
        self._request = None
        self._reader = None
        if self._eof:
            return  # hyper put the connection back in the pool when the body ended
        # A body not read to its end: __aexit__ cancels the task that reads it, which drops the connection. It
        # has to run: only dropping the objects would leave that task waiting on a silent upstream for ever. The
        # coroutine does its work at its first step, so it is run here, not scheduled (no task per close).
        step = request.__aexit__(None, None, None)
        try:
            step.send(None)
        except StopIteration:
            return
        except PyreqwestError as exc:
            log.debug("%s: closing the answer failed (%s)", self._url, describe(exc))
            return
        # Not seen with pyreqwest 0.15: finish it on the loop rather than leave it half-run.
        finish_later(step, (PyreqwestError,))


class PyreqwestTransport:
    """``ca_pem``: CA certificates (PEM) trusted for HTTPS backends besides the system's (a private CA)."""

    def __init__(self, *, keepalive_timeout: float = 60.0, ca_pem: bytes | None = None) -> None:
        self._keepalive = keepalive_timeout
        self._ca_pem = ca_pem
        self._clients: dict[float | None, Client] = {}

    def _client(self, connect: float | None) -> Client:
        client = self._clients.get(connect)
        if client is None:
            builder = (
                ClientBuilder()
                .follow_redirects(False)
                # Bodies pass through as they came (requests ask for identity); no cookies, no Referer.
                .gzip(False)
                .brotli(False)
                .zstd(False)
                .deflate(False)
                .referer(False)
                # aiohttp ignores HTTP(S)_PROXY unless told to; reqwest would follow them: the same for both.
                .no_proxy()
                .pool_idle_timeout(timedelta(seconds=self._keepalive))
            )
            if connect is not None:
                builder = builder.connect_timeout(timedelta(seconds=connect))
            if self._ca_pem is not None:
                builder = builder.add_root_certificate_pem(self._ca_pem)
            client = self._clients[connect] = builder.build()
        return client

    async def send(self, request: UpstreamRequest) -> PyreqwestResponse:
        timeouts = request.timeouts
        deadline = Deadline(timeouts.total)
        started = deadline.now()
        url = request.url
        try:
            builder = self._client(timeouts.connect).request(request.method, url).headers(request.headers)
            body = request.body
            if body is not None:
                builder = builder.body_stream(body()) if callable(body) else builder.body_bytes(body)
            if timeouts.total is not None:
                # Never what ends a request (the Deadline fires first): a send cancelled before its headers is not
                # aborted by pyreqwest 0.15.1 (its task is detached, not cancelled), and this bounds how long it
                # can hold the backend after that.
                builder = builder.timeout(timedelta(seconds=timeouts.total + _ORPHAN_SLACK))
            stream = builder.streamed_read_buffer_limit(0).build_streamed()
        except PyreqwestError as exc:  # an invalid URL or header value
            raise logged(url, UpstreamInvalid(f"the backend failed ({type(exc).__name__})"), exc) from None
        deadline.arm(timeouts.first_byte)
        try:
            resp = await stream.__aenter__()
        except asyncio.CancelledError:
            if deadline.caused():
                raise logged(url, no_answer()) from None
            raise
        except ConnectTimeoutError:
            raise logged(url, UpstreamTimeout("connecting to the backend timed out")) from None
        except ConnectError as exc:
            causes = " ".join(c["message"] for c in exc.details.get("causes") or ()).lower()
            if "client error (connect)" not in causes:
                # pyreqwest names a connection closed or reset after it was made a ConnectError too; aiohttp (and
                # the gateway) call that a broken answer: the request may have reached the backend.
                raise logged(url, UpstreamInvalid("the backend failed (connection lost)"), exc) from None
            error = UpstreamConnectError(f"cannot connect to the backend ({_connect_reason(causes)})")
            raise logged(url, error, exc) from None
        except PyreqwestError as exc:
            raise logged(url, UpstreamInvalid(f"the backend failed ({type(exc).__name__})"), exc) from None
        finally:
            deadline.disarm()
        first = None
        if timeouts.first_byte is not None:
            first = max(timeouts.first_byte - (deadline.now() - started), 0.0)
        return PyreqwestResponse(stream, resp, timeouts, deadline, url, first)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


def _connect_reason(causes: str) -> str:
    # A short reason without addresses, from the causes reqwest gives (lower-cased; they may name the URL).
    if "connection refused" in causes:
        return "connection refused"
    if "dns error" in causes or "failed to lookup" in causes or "name or service not known" in causes:
        return "host name not resolved"
    if "certificate" in causes or "tls" in causes or "handshake" in causes:
        return "TLS handshake failed"
    if "timed out" in causes:
        return "connect timed out"
    return "connection failed"
