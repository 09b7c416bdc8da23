"""What the front door does for observability at the end of each request: metrics, the JSON access log, the
``X-Request-ID``, ``x-modelrouter-*`` and ``Server-Timing`` response headers, and (optionally) tracing.

All of it hangs off one ``Observe`` object; the front door holds ``None`` when everything is off, and then pays
nothing. The request's facts travel in its ``Meter`` (usage.py): the pipeline writes the resolved model, the
instance, attempts and upstream time there, and ``finish`` reads them once the answer is out.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from itertools import count
from typing import IO, Any, Protocol

import orjson

from .config.model import ObservabilityConfig
from .endpoints import Endpoint
from .metrics import Metrics
from .usage import Meter, usage_from_body

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


class AccessLog:
    """One JSON line per request, never the prompt or the key (only its id). A request only appends a tuple of
    its facts; lines are formatted and written in batches within ``FLUSH_AFTER`` seconds, off the request's
    path (formatting and a write per request measured several percent of throughput)."""

    FLUSH_AFTER = 0.2
    BATCH = 64  # or as soon as this many lines wait: a long batch held in memory measured slower than short ones

    def __init__(self, path: str | None) -> None:
        self._own = path not in (None, "-")
        self._out: IO[bytes] = open(path, "ab") if self._own and path else sys.stdout.buffer  # noqa: SIM115
        self.pending: list[tuple[Any, ...]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, facts: tuple[Any, ...]) -> None:
        """``facts`` in ``_FIELDS`` order, times in seconds."""
        self.pending.append(facts)
        if len(self.pending) >= self.BATCH:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
            except RuntimeError:  # no loop (a test calling directly): write through
                self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        lines = []
        for facts in batch:
            record = dict(zip(_FIELDS, facts, strict=True))
            record["ts"] = round(record["ts"], 3)
            for name in ("latency_ms", "upstream_ms", "ttft_ms"):
                if record[name] is not None:
                    record[name] = round(record[name] * 1000, 3)
            record["retries"] = max(record["retries"] - 1, 0)  # attempts - 1
            lines.append(orjson.dumps(record))
        try:
            self._out.write(b"\n".join(lines) + b"\n")
            self._out.flush()
        except (OSError, ValueError):  # stdout closed, disk full: losing log lines must not fail requests
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        if self._own:
            self._out.close()


class Observe:
    def __init__(self, config: ObservabilityConfig, metrics: Metrics | None, tracer: Tracer | None = None) -> None:
        self.metrics = metrics
        self.access_log = AccessLog(config.access_log_path) if config.access_log else None
        self.tracer = tracer
        headers = config.headers
        self.request_id = config.request_id
        self.instance_header = headers.instance
        self.overhead_header = headers.overhead
        self.server_timing = headers.server_timing
        # Request ids: unique per process start, cheap to make (no uuid4 per request).
        self._prefix = os.urandom(4).hex()
        self._next = count(1).__next__
        # Requests whose token counts are still in their answers: (model, key id, answer, access-log facts).
        self._unread: list[tuple[str | None, str | None, bytes, tuple[Any, ...] | None]] = []
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
    ) -> None:
        """The request ended (answer sent, error sent, or client gone): count it and log it."""
        duration = time.perf_counter() - started
        metrics = self.metrics
        if metrics is not None:
            metrics.request(endpoint.name, meter.model, status, duration)
        facts = None
        if self.access_log is not None:
            facts = (
                time.time(),
                meter.request_id,
                client_ip,
                key_id,
                endpoint.name,
                meter.model,
                meter.instance,
                status,
                duration,
                meter.upstream_s,
                meter.ttft_s,
                meter.prompt_tokens,
                meter.completion_tokens,
                meter.attempts,
                meter.bytes_out,
            )
        if meter.body is not None and (metrics is not None or facts is not None):
            # Reading usage from the answer is the biggest part of this per request: done in a batch instead.
            self._unread.append((meter.model, key_id, meter.body, facts))
            if len(self._unread) >= AccessLog.BATCH:
                self.read_usage()
            elif self._timer is None:
                try:
                    self._timer = asyncio.get_running_loop().call_later(AccessLog.FLUSH_AFTER, self.read_usage)
                except RuntimeError:  # no loop (a test calling directly)
                    self.read_usage()
            return
        if metrics is not None and (meter.prompt_tokens or meter.completion_tokens):
            metrics.used_tokens(meter.model, key_id, meter.prompt_tokens, meter.completion_tokens)
        if facts is not None:
            assert self.access_log is not None
            self.access_log.add(facts)

    def read_usage(self) -> None:
        """Count the tokens of the answers waiting, and pass their access-log lines on. Also called before a
        scrape, so that /metrics is never behind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        unread, self._unread = self._unread, []
        metrics, access_log = self.metrics, self.access_log
        for model, key_id, body, facts in unread:
            prompt, completion = usage_from_body(body) or (0, 0)
            if metrics is not None and (prompt or completion):
                metrics.used_tokens(model, key_id, prompt, completion)
            if facts is not None and access_log is not None:
                access_log.add((*facts[:11], prompt, completion, *facts[13:]))
