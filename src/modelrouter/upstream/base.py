"""The upstream transport interface: one request out, one response back.

The gateway talks to backends only through ``Transport``. The aiohttp implementation is the real one; tests may
pass any object with the same two methods to script backend behaviour without sockets.
Transports raise only ``modelrouter.errors`` types (``UpstreamConnectError``, ``UpstreamTimeout``,
``UpstreamInvalid`` and its subclasses): lower-level exceptions are translated inside the transport, nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from ..config.model import Timeouts

__all__ = ["BodyFactory", "Transport", "UpstreamRequest", "UpstreamResponse"]

# A request body that is produced on demand (multipart uploads spooled to disk). Calling it again must yield
# the same bytes again, so that a request can be replayed on another instance.
BodyFactory = Callable[[], AsyncIterator[bytes]]


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | BodyFactory | None
    timeouts: Timeouts


class UpstreamResponse(Protocol):
    status: int
    content_type: str | None

    def header_items(self) -> list[tuple[bytes, bytes]]:
        """Response headers worth passing to the client (no hop-by-hop or framing headers)."""

    async def read(self, limit: int) -> bytes:
        """The whole body, within the request's remaining time. A body longer than ``limit`` bytes raises
        ``UpstreamResponseTooLarge`` (without reading it when its Content-Length says so) and drops the
        connection: no answer is held in memory beyond what its reader allows."""

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive. Until ``first_event`` is called the waits share what is left of the
        first-byte timeout; after it each wait is bounded by the idle timeout; all by the total deadline."""

    def first_event(self) -> None:
        """The stream's first complete event arrived: its first token, which ``first_byte`` was to bound."""

    def close(self) -> None:
        """Release the connection; drops it if the body was not read to the end. Idempotent."""


class Transport(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send the request and return once response headers arrived (bounded by connect/first_byte)."""

    async def aclose(self) -> None: ...
