"""Client connections: limits that only the HTTP server layer can enforce, as a subclass of uvicorn's httptools
protocol.

uvicorn (with httptools, its HTTP implementation on CPython) has no header-read timeout, no cap on the size or
number of headers (httptools keeps appending to a header that never ends), arms its keep-alive timer only after a
response (and cancels it on any byte that arrives, even one of an unread body), and accepts every connection
(its ``limit_concurrency`` answers 503 only once a head is complete, which a slowloris connection never is). The
application cannot help: it sees a request only once its head is complete. So this subclass:

- gives each request head a deadline (``server.header_timeout``) from its first byte, or from the connection's
  opening; 408 if part of a head had come, else a silent close (an idle keep-alive connection);
- counts the bytes of a head as they arrive and its headers as they are parsed: 431 past
  ``server.max_header_bytes`` or ``server.max_headers``, before httptools buffers more;
- closes a connection idle ``server.keep_alive_timeout`` after its last answer, and one still sending the rest
  of a body nobody read (answered early: 401, 413) ``server.body_read_timeout`` after the answer;
- caps open connections at ``server.max_connections``: past it a new connection displaces the connection
  closest to its deadline among those with no request in flight (slowloris, idle keep-alive); only when every
  connection has a request in flight is the new one answered 503.

A subclass rather than h11 (which has ``h11_max_incomplete_event_size``): h11 parses in pure Python, slower on
the request path, answers 400 rather than 431, and has none of the timeouts either. Deadlines are a number per
connection, checked by one sweep over the connections every ``SWEEP`` seconds (running only while there are
connections): arming one is an attribute store, where a loop timer or an alarm on the shared clock
(``timers.py``) per request showed in the instructions per request. A deadline fires up to ``SWEEP`` late,
harmless for timeouts of seconds.

The body-read idle timeout while the application reads a body is the front door's (``dataplane/front.py``): only it
knows when it waits for the body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ..errors import error_body

__all__ = ["Limits", "protocol_class"]

log = logging.getLogger("modelrouter.front")

SWEEP = 0.5  # seconds between two checks of the connections' deadlines

# Connections displaced at once when the cap is reached: a scan of all connections is paid once per batch,
# not once per new connection (nginx frees up to 32 reusable connections the same way).
_DISPLACE_BATCH = 32


def _log(level: int, kind: str, message: str, *args: object) -> None:
    """Log at most one line of each ``kind`` per 10 s, with how many were left out: an attack makes thousands."""
    now = time.monotonic()
    next_at, skipped = _logged.get(kind, (0.0, 0))
    if now < next_at:
        _logged[kind] = (next_at, skipped + 1)
        return
    _logged[kind] = (now + 10, 0)
    if skipped:
        message += " (and %d more like it in the last 10s)"
        args = (*args, skipped)
    log.log(level, message, *args)


_logged: dict[str, tuple[float, int]] = {}


class Limits:
    """The client-side limits of one server (one process), shared by its connections."""

    __slots__ = (
        "body_read_timeout",
        "closing",
        "header_timeout",
        "keep_alive_timeout",
        "max_connections",
        "max_header_bytes",
        "max_headers",
        "sweeping",
    )

    def __init__(
        self,
        *,
        header_timeout: float,
        max_header_bytes: int,
        max_headers: int,
        body_read_timeout: float,
        keep_alive_timeout: float,
        max_connections: int,
    ) -> None:
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.body_read_timeout = body_read_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.max_connections = max_connections
        # Connections we closed whose connection_lost has not run yet: still in uvicorn's set, no longer open.
        self.closing = 0
        self.sweeping: asyncio.TimerHandle | None = None

    def sweep(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """Close the connections whose deadline has passed; again in ``SWEEP`` seconds while any are open."""
        now = loop.time()
        for c in [c for c in connections if isinstance(c, GuardedProtocol) and 0.0 < c.due <= now]:
            c.deadline_passed()
        self.sweeping = loop.call_later(SWEEP, self.sweep, loop, connections) if connections else None


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that is over a limit."""


def _reply(status: int, message: str, type_: str, code: str, extra: bytes = b"") -> bytes:
    body = error_body(message, type_, None, code)
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body)
    return STATUS_LINE[status] + head + extra + b"\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; ``limits`` is set on a subclass per server."""

    limits: ClassVar[Limits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._time = self.loop.time
        self.due = 0.0  # when the deadline passes (loop time); 0: none (a request is in flight)
        # Bytes read since the connection started waiting for a request head; None while not waiting for one (a
        # request is in flight, or the rest of its body is arriving).
        self._head: int | None = 0
        self._begun = False  # a head has begun (its first byte parsed) and is not complete
        self._idle = False  # the deadline is the keep-alive one: the next head's first byte re-arms it
        self._completed = 0  # heads completed on this connection: tells whether a feed completed one
        self._closed_by_us = False
        self._refusal: bytes | None = None

    # --- connection ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if len(self.connections) - limits.closing > limits.max_connections and not self._displace():
            _log(
                logging.WARNING,
                "503",
                "connection refused: %d connections open, each with a request in flight (server.max_connections)",
                limits.max_connections,
            )
            message = (
                f"the gateway has {limits.max_connections} connections open, each with a request in flight "
                "(server.max_connections); retry shortly"
            )
            self._close(_reply(503, message, "overloaded_error", "too_many_connections", b"retry-after: 1\r\n"))
            return
        self.due = self._time() + limits.header_timeout
        if limits.sweeping is None:
            limits.sweeping = self.loop.call_later(SWEEP, limits.sweep, self.loop, self.connections)

    def _displace(self) -> bool:
        """Close the connections closest to their deadline among those without a request in flight; True if
        that made room for this one."""
        idle = [
            c
            for c in self.connections
            if c is not self
            and isinstance(c, GuardedProtocol)
            and not c._closed_by_us
            and (c.cycle is None or c.cycle.response_complete)
        ]
        if not idle:
            return False
        idle.sort(key=lambda c: c.due or float("inf"))
        for victim in idle[:_DISPLACE_BATCH]:
            victim._close(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.due = 0.0
        if self._closed_by_us:
            self._closed_by_us = False
            self.limits.closing -= 1
        super().connection_lost(exc)

    def _close(self, answer: bytes | None) -> None:
        """Close the connection ourselves, after ``answer`` (raw bytes) if any."""
        self.due = 0.0
        self._head = None
        if self.transport.is_closing():
            return
        self._closed_by_us = True
        self.limits.closing += 1
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()

    def deadline_passed(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if self._head and not in_flight:
            message = f"the request head did not arrive within {self.limits.header_timeout:g}s"
            self._close(_reply(408, message, "invalid_request_error", "request_timeout"))
        else:
            # Idle keep-alive, nothing sent yet, or an unread body still trickling in: nothing to answer.
            self._close(None)

    # --- reading ------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            if len(data) > self.limits.max_header_bytes - head:
                self._feed_past_limit(data, head)
                return
            self._head = head + len(data)
        # As uvicorn's data_received (inline: this runs for every read), without its keep-alive timer.
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_failed(exc)

    def _feed_past_limit(self, data: bytes, head: int) -> None:
        """``data`` would take the head past its limit: feed only what fits; if the head ends within it, the rest
        is a body or the next request."""
        room = self.limits.max_header_bytes - head
        completed = self._completed
        self._head = head + room
        if room > 0:
            try:
                self.parser.feed_data(data[:room])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                self._parse_failed(exc)
        if self.transport.is_closing():
            return
        if self._completed == completed:  # no head completed within the limit
            self._refuse_head(f"a request head larger than {self.limits.max_header_bytes} bytes")
            return
        self.data_received(data[room:])

    def _parse_failed(self, exc: Exception) -> None:
        # httptools wraps a callback's exception as a parser error: our refusals are told apart by _refusal.
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        elif self._refusal is not None:
            self._close(self._refusal)
        else:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)

    def _refuse_head(self, what: str) -> None:
        self._close(self._head_too_large(what))

    def _head_too_large(self, what: str) -> bytes:
        _log(logging.INFO, "431", "refused %s from %s", what, self.client[0] if self.client else "?")
        message = f"{what} (request header fields too large)"
        return _reply(431, message, "invalid_request_error", "header_too_large")

    # --- parser callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head is None:  # after the tail of an unread body: count from here
            self._head = 0
        self._begun = True
        if self._idle:
            # The first byte after an idle keep-alive: the head has header_timeout from now. (On a new
            # connection it has header_timeout from the opening: a slow first byte buys nothing.)
            self._idle = False
            self.due = self._time() + self.limits.header_timeout
        HttpToolsProtocol.on_message_begin(self)  # not super(): cheaper, and this runs for every request

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's, with the count checked first (not by calling it: this runs for every header).
        headers = self.headers
        if len(headers) >= self.limits.max_headers:
            self._refusal = self._head_too_large(f"more than {self.limits.max_headers} request headers")
            raise _HeadRefused()
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which RFC 9110 excludes from the value
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        # The application has the request now; reading its body is the front door's to time.
        self.due = 0.0
        self._head = None
        self._begun = False
        self._idle = False
        self._completed += 1
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        if self._head is None and self.cycle is not None and self.cycle.response_complete:
            # The rest of a body answered early has come: from now on the connection is idle.
            self._idle = True
            self.due = self._time() + self.limits.keep_alive_timeout
        self._head = 0  # whatever comes next is a new head
        # uvicorn's, inline
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        # uvicorn's, with our deadline instead of its keep-alive call_later.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._begun:  # (a next head already begun has its own deadline)
            limits = self.limits
            # The rest of a body not read (answered early) must come within the body timeout; else idle.
            if self._head is None:
                wait = limits.body_read_timeout
            else:
                wait = limits.keep_alive_timeout
                self._idle = True
            self.due = self._time() + wait


def protocol_class(limits: Limits) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's ``Config(http=...)``, bound to ``limits``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
