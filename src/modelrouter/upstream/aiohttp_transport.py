"""The real transport: aiohttp with pooled keep-alive connections (aiohttp pools per host:port, i.e. per
instance). aiohttp measured ~13x faster than httpx as a proxy client at 32 connections on our hardware.

This is the only module that knows aiohttp's exceptions; they become ``modelrouter.errors`` types here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp

from ..config.model import Timeouts
from ..errors import UpstreamConnectError, UpstreamInvalid, UpstreamTimeout
from .base import UpstreamRequest

__all__ = ["AiohttpTransport"]

# Headers never passed back to the client: hop-by-hop, framing (the gateway frames its own response), and
# the upstream's identity.
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)


def _deadline(timeouts: Timeouts) -> float | None:
    return None if timeouts.total is None else time.monotonic() + timeouts.total


def _bound(timeout: float | None, deadline: float | None) -> float | None:
    """The shorter of a phase timeout and what is left of the total deadline."""
    if deadline is None:
        return timeout
    left = max(deadline - time.monotonic(), 0.0)
    return left if timeout is None else min(timeout, left)


class AiohttpResponse:
    __slots__ = ("_deadline", "_idle", "_resp", "_url", "content_type", "status")

    def __init__(self, resp: aiohttp.ClientResponse, timeouts: Timeouts, deadline: float | None, url: str) -> None:
        self._resp = resp
        self._idle = timeouts.idle
        self._deadline = deadline
        self._url = url
        self.status = resp.status
        self.content_type: str | None = resp.headers.get("Content-Type")

    def header_items(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower(), v) for k, v in self._resp.raw_headers if k.decode("latin-1").lower() not in _DROP]

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(_bound(self._idle, self._deadline)):
                return await self._resp.read()
        except TimeoutError:
            self._resp.close()
            raise UpstreamTimeout(f"upstream {self._url} timed out sending its answer") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._resp.close()
            raise UpstreamInvalid(f"upstream {self._url} broke off its answer: {_describe(exc)}") from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                async with asyncio.timeout(_bound(self._idle, self._deadline)):
                    chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except TimeoutError:
            self._resp.close()
            raise UpstreamTimeout(f"upstream {self._url} stalled mid-answer") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._resp.close()
            raise UpstreamInvalid(f"upstream {self._url} broke off its answer: {_describe(exc)}") from None

    def close(self) -> None:
        # release() keeps a fully read connection for reuse; close() drops a half-read one.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


class AiohttpTransport:
    def __init__(self, *, limit_per_host: int = 0, keepalive_timeout: float = 60.0) -> None:
        self._limit_per_host = limit_per_host
        self._keepalive = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._client_timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop (aiohttp binds sessions to a loop).
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self._limit_per_host,
                keepalive_timeout=self._keepalive,
                enable_cleanup_closed=False,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _client_timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        key = (timeouts.connect,)
        ct = self._client_timeouts.get(key)
        if ct is None:
            ct = aiohttp.ClientTimeout(total=None, connect=timeouts.connect, sock_connect=timeouts.connect)
            self._client_timeouts[key] = ct
        return ct

    async def send(self, request: UpstreamRequest) -> AiohttpResponse:
        session = self._get_session()
        timeouts = request.timeouts
        deadline = _deadline(timeouts)
        body = request.body
        data = body() if callable(body) else body
        try:
            async with asyncio.timeout(_bound(timeouts.first_byte, deadline)):
                resp = await session.request(
                    request.method,
                    request.url,
                    data=data,
                    headers=request.headers,
                    timeout=self._client_timeout(timeouts),
                    allow_redirects=False,
                )
        except aiohttp.ClientConnectorError as exc:
            why = exc.os_error.strerror or str(exc.os_error) if exc.os_error else _describe(exc)
            raise UpstreamConnectError(f"cannot connect to {request.url} ({why})") from None
        except (aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"connecting to {request.url} timed out") from None
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {request.url} sent no answer in time") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamInvalid(f"upstream {request.url} failed: {_describe(exc)}") from None
        return AiohttpResponse(resp, timeouts, deadline, request.url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
