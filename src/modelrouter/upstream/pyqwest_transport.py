"""The pyqwest transport: Rust's reqwest/hyper through pyqwest behind the ``Transport`` interface
(``upstream.client: pyqwest``).

pyqwest and pyreqwest wrap the same Rust client; pyqwest aborts a request whose task is cancelled (the client went
away, the first-byte timeout fired) at once, where pyreqwest 0.15.1 leaves it running until the backend answers. It
keeps the aiohttp transport's contract exactly (tests/test_transport_contract.py runs every client): the timeouts are
the same ``Deadline`` on the shared coarse clock, cancelling the task around each await. Connect timeouts are the one
exception, as for pyreqwest: only reqwest sees when the connection is made, so each distinct connect timeout gets an
``HTTPTransport`` (a pool) of its own, in practice one or two - per backend host, which is how the environment's
proxy variables are kept out (see ``_NEVER``).

This is the only module that knows pyqwest's exceptions; they become ``modelrouter.errors`` types here, with
messages that name no backend address (the URL is logged at debug level instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pyqwest

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

__all__ = ["PyqwestTransport"]

log = logging.getLogger("modelrouter.upstream")

# What pyqwest raises for a request that failed on the wire (ConnectTimeout is a ConnectionError).
_FAILURES = (ConnectionError, TimeoutError, pyqwest.ReadError, pyqwest.WriteError, pyqwest.RemoteProtocolError)
# reqwest follows HTTP(S)_PROXY unless a proxy is configured; aiohttp ignores them unless told to. A configured proxy
# that excludes the pool's host and every IP address turns the environment off and is never used: the same for both
# clients. (pyqwest 0.12 takes no "*" for every host, hence a pool per host.)
_NEVER = "http://127.0.0.1:9"
_EVERY_IP = "0.0.0.0/0,::/0"


class PyqwestResponse:
    __slots__ = (
        "_content",
        "_deadline",
        "_eof",
        "_first",
        "_first_at",
        "_idle",
        "_resp",
        "_url",
        "content_type",
        "status",
    )

    def __init__(
        self, resp: pyqwest.Response, timeouts: Timeouts, deadline: Deadline, url: str, first: float | None
    ) -> None:
        self._resp = resp
        self._content: AsyncIterator[Any] | None = aiter(resp.content)
        self._eof = False  # the body was read to its end: the connection is back in the pool already
        self._idle = timeouts.idle
        self._deadline = deadline
        self._url = url
        # What is left of the first-byte budget, as in the aiohttp transport: it bounds the body's reads until the
        # first complete event (``first_event``).
        self._first = first
        self._first_at: float | None = None
        self.status = resp.status
        self.content_type: str | None = resp.headers.get("content-type")

    def header_items(self) -> list[tuple[bytes, bytes]]:
        # One item per value (two Set-Cookie stay two); names come lower-case from hyper's header map.
        return [
            (name, value.encode("latin-1", "replace"))
            for key, value in self._resp.headers.items()
            if (name := key.encode("latin-1")) not in DROP_HEADERS
        ]

    async def read(self, limit: int) -> bytes:
        length = self._resp.headers.get("content-length")
        # The same shortcut as the aiohttp transport: six digits or fewer is under any cap of a megabyte or more.
        if length is not None and (len(length) > 6 or limit < 1_000_000) and int(length) > limit:
            raise self._failed(too_large(limit, int(length)))
        content = self._content
        if content is None:
            raise self._failed(UpstreamInvalid("the backend's answer was already closed"))
        deadline = self._deadline
        deadline.arm(self._idle)
        chunks: list[bytes] = []
        size = 0
        # hyper ends the body at its Content-Length, which is within the limit; a body without one is counted.
        # With a length, the read stops at its last byte instead of waiting for the end to be reported: one
        # hand-over from the Tokio thread fewer, and hyper has the connection back in its pool by then.
        expected = int(length) if length is not None else -1
        try:
            while (chunk := await anext(content, None)) is not None:
                size += len(chunk)
                if size > limit:
                    chunks.clear()
                    raise self._failed(too_large(limit, None))
                chunks.append(chunk)
                if size == expected:
                    break
        except asyncio.CancelledError:
            if deadline.caused():
                raise self._failed(read_timeout()) from None
            raise
        except _FAILURES as exc:
            raise self._failed(broke_off(), exc) from None
        finally:
            deadline.disarm()
        self._eof = True
        return chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks)

    def first_event(self) -> None:
        self._first = None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        deadline = self._deadline
        idle = self._idle
        if self._first is not None:
            self._first_at = deadline.now() + self._first
        while True:
            # Looked up each time rather than held in this frame: close() must be able to drop it while the
            # generator is suspended.
            content = self._content
            if content is None:
                return
            first_at = self._first_at if self._first is not None else None
            # Before the first event: what is left of the first-byte budget; after it: the idle timeout.
            deadline.arm(idle if first_at is None else max(first_at - deadline.now(), 0.0))
            try:
                chunk = await anext(content, None)
            except asyncio.CancelledError:
                if deadline.caused():
                    raise self._failed(stream_timeout(first_at is not None)) from None
                raise
            except _FAILURES as exc:
                raise self._failed(broke_off(), exc) from None
            finally:
                deadline.disarm()
            del content
            if chunk is None:
                self._eof = True
                return
            yield chunk if type(chunk) is bytes else bytes(chunk)

    def _failed(self, error: GatewayError, cause: BaseException | None = None) -> GatewayError:
        self.close()
        log.debug("%s: %s%s", self._url, error.message, f" ({describe(cause)})" if cause else "")
        return error

    def close(self) -> None:
        self._deadline.disarm()
        if self._content is None:
            return
        self._content = None
        if self._eof:
            return  # hyper put the connection back in the pool when the body ended
        # A body not read to its end: closing the response drops its connection. pyqwest 0.12 does that in the call
        # and hands back an awaitable with nothing left to do; another one is awaited on the loop (no task per close
        # in the usual case).
        try:
            step = self._resp.aclose()
        except _FAILURES as exc:
            log.debug("%s: closing the answer failed (%s)", self._url, describe(exc))
            return
        if type(step) is not _DONE:
            finish_later(step, _FAILURES)


_DONE = type(pyqwest.Response(status=200).aclose())  # what aclose returns when it closed in the call


class PyqwestTransport:
    """``ca_pem``: CA certificates (PEM) trusted for HTTPS backends besides the system's (a private CA)."""

    def __init__(self, *, keepalive_timeout: float = 60.0, ca_pem: bytes | None = None) -> None:
        self._keepalive = keepalive_timeout
        self._ca_pem = ca_pem
        self._pools: dict[tuple[float | None, str], pyqwest.HTTPTransport] = {}  # by connect timeout and host
        self._by_url: dict[tuple[float | None, str], pyqwest.HTTPTransport] = {}  # the same, by request URL

    def _pool(self, connect: float | None, url: str) -> pyqwest.HTTPTransport:
        pool = self._by_url.get((connect, url))
        if pool is not None:
            return pool
        host = urlsplit(url).hostname or "localhost"
        pool = self._pools.get((connect, host))
        if pool is None:
            pool = self._pools[connect, host] = pyqwest.HTTPTransport(
                tls_ca_cert=self._ca_pem,
                tls_include_system_certs=True,
                http_version=pyqwest.HTTPVersion.HTTP1,
                proxy=pyqwest.Proxy(_NEVER, no_proxy=f"{_EVERY_IP},{host}"),
                connect_timeout=connect,
                pool_idle_timeout=self._keepalive,
                # As aiohttp's pool: every idle connection is kept (pyqwest's default keeps 2 per host).
                pool_max_idle_per_host=1 << 20,
                # Bodies pass through as they came (requests ask for identity); no cookies, no redirects.
                enable_gzip=False,
                enable_brotli=False,
                enable_zstd=False,
                follow_redirects=False,
                enable_otel=False,
            )
        if len(self._by_url) >= 4096:  # URLs come from the config, but an adapter may vary them per model
            self._by_url.clear()
        self._by_url[connect, url] = pool
        return pool

    async def send(self, request: UpstreamRequest) -> PyqwestResponse:
        timeouts = request.timeouts
        deadline = Deadline(timeouts.total)
        started = deadline.now()
        url = request.url
        body = request.body
        try:
            upstream = pyqwest.Request(
                request.method,
                url,
                pyqwest.Headers(request.headers.items()),
                (body() if callable(body) else body) if body is not None else None,
            )
        except (ValueError, TypeError) as exc:  # an invalid URL or header value
            raise logged(url, UpstreamInvalid(f"the backend failed ({type(exc).__name__})"), exc) from None
        deadline.arm(timeouts.first_byte)
        try:
            resp = await self._pool(timeouts.connect, url).execute(upstream)
        except asyncio.CancelledError:
            if deadline.caused():
                raise logged(url, no_answer()) from None
            raise
        except pyqwest.ConnectTimeout:
            raise logged(url, UpstreamTimeout("connecting to the backend timed out")) from None
        except ConnectionError as exc:
            error = UpstreamConnectError(f"cannot connect to the backend ({_connect_reason(exc)})")
            raise logged(url, error, exc) from None
        except _FAILURES as exc:
            raise logged(url, UpstreamInvalid(f"the backend failed ({type(exc).__name__})"), exc) from None
        finally:
            deadline.disarm()
        first = None
        if timeouts.first_byte is not None:
            first = max(timeouts.first_byte - (deadline.now() - started), 0.0)
        return PyqwestResponse(resp, timeouts, deadline, url, first)

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        self._by_url.clear()
        for pool in pools.values():
            await pool.aclose()


def _connect_reason(exc: ConnectionError) -> str:
    # A short reason without addresses (pyqwest's messages may name the URL; its errors are plain ConnectionErrors).
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "dns" in text or "lookup" in text or "resolve" in text or "name or service not known" in text:
        return "host name not resolved"
    if "certificate" in text or "tls" in text or "handshake" in text:
        return "TLS handshake failed"
    if "timed out" in text:
        return "connect timed out"
    return "connection failed"
