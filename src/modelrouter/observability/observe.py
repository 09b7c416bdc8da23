"""What the front door does for observability at the end of each request: metrics, the JSON access log, the
``X-Request-ID``, ``x-modelrouter-*`` and ``Server-Timing`` response headers, and (optionally) tracing.

All of it hangs off one ``Observe`` object; the front door holds ``None`` when everything is off, and then pays
nothing. The request's facts travel in its ``Meter`` (meter.py): the pipeline writes the resolved model, the
instance, attempts and upstream time there, and ``finish`` reads them once the answer is out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from itertools import count
from typing import IO, Any, Protocol

import orjson

from ..config.model import ObservabilityConfig
from ..endpoints import Endpoint
from ..speedups import json_lines as compiled_json_lines
from .meter import Ended, Meter
from .metrics import Metrics

__all__ = ["AccessLog", "Observe", "RequestTrace", "Span", "Tracer"]


class Span(Protocol):
    """One step of a traced request (auth, limits, routing, upstream). A context manager: ends on exit, marked
    as an error if an exception left it."""

    def set(self, key: str, value: str | int | float | bool) -> None: ...

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` plus this span's W3C ``traceparent`` (and ``tracestate``), for the upstream request."""
        ...

    def end(self, error: BaseException | None = None) -> None: ...

    def __enter__(self) -> Span: ...

    def __exit__(self, *exc_info: object) -> None: ...


class RequestTrace(Protocol):
    """A request's root span, continuing the client's ``traceparent`` if it sent one."""

    def set(self, key: str, value: str | int | float | bool) -> None: ...

    def child(self, name: str) -> Span: ...

    def end(self, status: int, meter: Meter | None) -> None: ...


class Tracer(Protocol):
    def start(self, scope: dict[str, Any], endpoint: str, request_id: str | None) -> RequestTrace: ...


# The access log's fields, in the order of the rows AccessLog.write builds.
_FIELDS = (
    "ts",
    "request_id",
    "client_ip",
    "key_id",
    "endpoint",
    "model",
    "instance",
    "status",
    "latency_ms",
    "upstream_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "retries",
    "bytes_out",
)


def _rows(batch: list[Ended], wall: float) -> list[tuple[Any, ...]]:
    """Each request's line as a tuple of values in ``_FIELDS`` order, times in milliseconds (the compiled
    json_lines writes floats floored to 3 decimals: milliseconds to the microsecond, ts to the millisecond)."""
    rows = []
    for endpoint, meter, status, seconds, end, key_id, client_ip in batch:
        attempts = meter.attempts
        ttft = meter.ttft_s
        rows.append(
            (
                wall + end,
                meter.request_id,
                client_ip,
                key_id,
                endpoint,
                meter.model,
                meter.instance,
                status,
                seconds * 1e3,
                meter.upstream_s * 1e3,
                None if ttft is None else ttft * 1e3,
                meter.prompt_tokens,
                meter.completion_tokens,
                attempts - 1 if attempts > 1 else 0,
                meter.bytes_out,
            )
        )
    return rows


def _records(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The same lines as dicts for orjson (the pure-Python path, and the reference for the compiled one), floats
    floored to 3 decimals as json_lines does: in float arithmetic only, as round(x, 3) goes through a decimal
    string and int(...) / 1000 through an int division, each about twice the cost."""
    return [
        {
            "ts": ts * 1000 // 1 / 1000,
            "request_id": request_id,
            "client_ip": client_ip,
            "key_id": key_id,
            "endpoint": endpoint,
            "model": model,
            "instance": instance,
            "status": status,
            "latency_ms": latency * 1000 // 1 / 1000,
            "upstream_ms": upstream * 1000 // 1 / 1000,
            "ttft_ms": None if ttft is None else ttft * 1000 // 1 / 1000,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "retries": retries,
            "bytes_out": bytes_out,
        }
        for (
            ts, request_id, client_ip, key_id, endpoint, model, instance, status, latency, upstream, ttft, prompt,
            completion, retries, bytes_out,
        ) in rows
    ]  # fmt: skip


def encode(records: list[dict[str, Any]]) -> bytes:
    """JSON lines of ``records`` (each starting with "ts")."""
    if not records:
        return b""
    try:
        # One dumps call for the whole batch, cut into lines: a dumps call per line measured ~4x the cost per
        # line (each allocates and shrinks its own output buffer). The cut is safe: every record starts with
        # "ts", and inside a JSON string a quote is always escaped, so '},{"ts":' only occurs between records.
        return orjson.dumps(records)[1:-1].replace(b'},{"ts":', b'}\n{"ts":') + b"\n"
    except orjson.JSONEncodeError:  # a string that is not valid UTF-8 (a lone surrogate): escape it instead
        return "".join(json.dumps(record) + "\n" for record in records).encode()


class AccessLog:
    """Where the access log goes: one JSON line per request, never the prompt or the key (only its id)."""

    def __init__(self, path: str | None) -> None:
        self._own = path not in (None, "-")
        self._out: IO[bytes] = open(path, "ab") if self._own and path else sys.stdout.buffer  # noqa: SIM115

    def write(self, batch: list[Ended]) -> None:
        """One line per request that ended, in the order given."""
        wall = time.time() - time.perf_counter()  # each line's wall-clock time from its perf_counter time
        rows = _rows(batch, wall)
        data = compiled_json_lines(_FIELDS, rows) if compiled_json_lines is not None else None
        if data is None:
            data = encode(_records(rows))
        try:
            self._out.write(data)
            self._out.flush()
        except (OSError, ValueError):  # stdout closed, disk full: losing log lines must not fail requests
            pass

    def close(self) -> None:
        if self._own:
            self._out.close()


class Observe:
    """Per request, ``finish`` only queues the request's meter; a batch is handled every ``BATCH`` requests and
    within ``FLUSH_AFTER`` seconds: requests counted, token usage read from answers no limit needed it from,
    access-log lines written. Code run 64 times in a row runs warm; spread over the request path, the same work
    measured several times the cost. Anything that reads the counters (a scrape, a worker publishing its own)
    flushes first, so none of them is ever behind."""

    FLUSH_AFTER = 0.2
    BATCH = 64

    def __init__(
        self,
        config: ObservabilityConfig,
        metrics: Metrics | None,
        access_log: AccessLog | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.tracer = tracer
        headers = config.headers
        self.request_id = config.request_id
        self.instance_header = headers.instance
        self.overhead_header = headers.overhead
        self.server_timing = headers.server_timing
        # Request ids: unique per process start, cheap to make (no uuid4 per request).
        self._prefix = os.urandom(4).hex()
        self._next = count(1).__next__
        # Whether answers get headers at all, and whether ended requests are queued (nothing reads them otherwise).
        self.headers = self.request_id or headers.instance or headers.overhead or headers.server_timing
        self._queue = metrics is not None or access_log is not None
        self._batch: list[Ended] = []
        self._timer: asyncio.TimerHandle | None = None

    def new_request_id(self) -> str:
        return f"{self._prefix}{self._next():08x}"

    def response_headers(
        self, meter: Meter, started: float, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` of an answer about to go out, plus request id, instance, gateway overhead, Server-Timing.
        An upstream's own request id is kept as ``x-upstream-request-id``: ``x-request-id`` is the gateway's,
        the one its access log and traces carry."""
        out = headers  # a list of the caller's own, extended in place
        if self.request_id and meter.request_id:
            for i, (name, value) in enumerate(headers):
                if name == b"x-request-id":
                    headers[i] = (b"x-upstream-request-id", value)
            out.append((b"x-request-id", meter.request_id.encode("latin-1")))
        if self.instance_header and meter.instance:
            out.append((b"x-modelrouter-instance", meter.instance.encode("latin-1")))
        if self.overhead_header or self.server_timing:
            total = time.perf_counter() - started
            upstream = meter.upstream_s
            overhead_ms = max(total - upstream, 0.0) * 1000
            if self.overhead_header:
                out.append((b"x-modelrouter-overhead-ms", b"%.3f" % overhead_ms))
            if self.server_timing:
                out.append((b"server-timing", b"gateway;dur=%.3f, upstream;dur=%.3f" % (overhead_ms, upstream * 1000)))
        return out

    def finish(
        self,
        endpoint: Endpoint,
        meter: Meter,
        status: int,
        started: float,
        key_id: str | None,
        client_ip: str | None,
        trace: RequestTrace | None,
        settled: bool,
    ) -> None:
        """The request ended (answer sent, error sent, or client gone): queue it to be counted and logged, end
        its trace. ``settled``: accounting already moved the usage into the meter. (All positional: a call
        with a keyword argument skips CPython's specialised call path, on every request.)"""
        if not settled and meter.tap is not None:
            meter.settle(0)  # a stream's usage into the meter
        if trace is not None:
            meter.read_body()  # the trace ends now and carries the token counts
        if self._queue:
            end = time.perf_counter()
            batch = self._batch
            batch.append((endpoint.name, meter, status, end - started, end, key_id, client_ip))
            if len(batch) >= self.BATCH:
                self.flush()
            elif self._timer is None:
                try:
                    self._timer = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
                except RuntimeError:  # no loop (a test calling directly)
                    self.flush()
        if trace is not None:
            trace.end(status, meter)

    def flush(self) -> None:
        """Handle the batch now: token counts read from the answers that still carry them, requests and tokens
        counted, access-log lines written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        for ended in batch:
            ended[1].read_body()
        if self.metrics is not None:
            self.metrics.ended(batch)
        if self.access_log is not None:
            self.access_log.write(batch)
