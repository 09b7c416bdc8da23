"""Wiring observability into the gateway: builds the ``Observe`` object for a config (keeping counters and the
access-log file across reloads) and answers ``GET /metrics`` with the counters plus gauges read from the live
objects (instances, the config version, usage-record drops)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .._version import __version__
from ..access.records import UsageRecorder
from ..config.model import Config
from ..routing.router import RoutingTable
from ..runtime.workers import MetricsExchange
from .history import History
from .metrics import Gauge, Labels, Metrics, render
from .observe import AccessLog, Observe, Tracer

__all__ = ["Live", "MetricsListener", "Telemetry", "metrics_token_ok"]

log = logging.getLogger("modelrouter")

_BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


@dataclass(frozen=True, slots=True)
class Live:
    """What telemetry reads of the running gateway, each a getter of its current value: the observe object of
    the serving config, its routing table, the usage recorder, requests in progress, the config version."""

    observe: Callable[[], Observe | None]
    table: Callable[[], RoutingTable]
    recorder: Callable[[], UsageRecorder | None]
    active: Callable[[], int]
    config_version: Callable[[], int | None]
    state_errors: Callable[[], int | None] = lambda: None  # calls the shared state failed; None: no shared state


class Telemetry:
    """The gateway's metrics and access log, configured (and reconfigured on reload) from ``observability``."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.metrics = Metrics()  # kept across reloads: counters must not reset when the config changes
        self._access_log: AccessLog | None = None
        self._access_path: str | None = None
        self._tracer: Tracer | None = None
        # With several worker processes: where they exchange metric snapshots (see workers.py).
        self.exchange: MetricsExchange | None = None
        self.history: History | None = None  # the console's charts (start_history)

    def start_history(self, interval: float) -> asyncio.Task[None] | None:
        """Sample the traffic history every ``interval`` seconds (0: never), in a task the caller cancels."""
        if interval <= 0:
            return None
        self.history = History(self.totals, self._error_rates, interval=interval)
        return asyncio.get_running_loop().create_task(self.history.run(), name="history")

    def totals(self) -> Metrics:
        """The whole gateway's counters: this process's, plus every other worker's with ``--workers``."""
        self._flush()  # requests still waiting for their batch
        if self.exchange is None:
            return self.metrics
        return self.metrics.merge(self.exchange.peers())

    def _error_rates(self) -> list[tuple[Labels, float]]:
        rates: list[tuple[Labels, float]] = []
        for inst in self.live.table().all_instances():
            requests, failures = inst.breaker.window_counts()
            rates.append((inst.labels, failures / requests if requests else 0.0))
        return rates

    def _flush(self) -> None:
        observe = self.live.observe()
        if observe is not None:
            observe.flush()

    def apply(self, config: Config, table: RoutingTable) -> Observe | None:
        """The ``Observe`` for ``config`` (None when it observes nothing); ``table`` is its routing table, whose
        model names bound the ``model`` label."""
        self._flush()  # before its access log may be closed or replaced
        settings = config.observability
        headers = settings.headers
        wanted = (
            settings.metrics
            or settings.access_log
            or settings.request_id
            or settings.tracing
            or headers.instance
            or headers.overhead
            or headers.server_timing
        )
        metrics = self.metrics if settings.metrics else None
        if metrics is not None:
            metrics.model_names = frozenset({model for _service, model in table.pools} | set(table.aliases))
        tracer = self._tracing(settings.tracing)
        if not wanted:
            self._close_log()
            return None
        if not settings.access_log:
            self._close_log()
        elif self._access_log is None or self._access_path != settings.access_log_path:
            # Otherwise the same file across reloads: requests in flight may still write to it.
            self._close_log()
            self._access_log = AccessLog(settings.access_log_path)
            self._access_path = settings.access_log_path
        return Observe(settings, metrics, self._access_log, tracer)

    def _tracing(self, on: bool) -> Tracer | None:
        if not on:
            return None
        if self._tracer is None:
            try:
                from .tracing import OtelTracer
            except ImportError as exc:
                log.error(
                    "observability.tracing is on, but OpenTelemetry is not installed (%s): "
                    "pip install 'modelrouter[otel]'; tracing stays off",
                    exc,
                )
                return None
            self._tracer = OtelTracer()
        return self._tracer

    def _close_log(self) -> None:
        if self._access_log is not None:
            self._access_log.close()
            self._access_log = None
            self._access_path = None

    def close(self) -> None:
        self._flush()
        self._close_log()
        if self._tracer is not None:  # flush spans still queued for export
            stop = getattr(self._tracer, "shutdown", None)
            if stop is not None:
                stop()

    # -- GET /metrics ------------------------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        self._flush()  # tokens of answers still waiting for their batch
        recorder = self.live.recorder()
        if recorder is not None:
            self.metrics.usage_dropped[()] = float(recorder.dropped)
        state_errors = self.live.state_errors()
        if state_errors is not None:
            self.metrics.state_errors[()] = float(state_errors)
        if self.exchange is None:
            return render(self.metrics, self._gauges)
        own = self.publish()
        peers = list(self.exchange.peers())
        gauges: dict[str, Gauge] = {}
        for name, doc, samples in [*own, *(tuple(g) for p in peers for g in p.get("gauges", ()))]:
            gauges.setdefault(name, (name, doc, []))[2].extend((dict(labels), value) for labels, value in samples)
        return render(self.metrics.merge(peers), lambda: gauges.values())

    def publish(self) -> list[Gauge]:
        """Several workers: write this one's counters and gauges (labelled with its index) for the others."""
        assert self.exchange is not None
        self._flush()  # requests still waiting for their batch
        worker = str(self.exchange.index)
        gauges = [
            (name, doc, [({**labels, "worker": worker}, v) for labels, v in samples])
            for name, doc, samples in self._gauges()
        ]
        self.exchange.publish({**self.metrics.snapshot(), "gauges": gauges})
        return gauges

    async def publish_every(self, seconds: float = 1.0) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self.publish()
            except OSError as exc:  # the shared directory is gone (the supervisor is shutting down)
                log.debug("could not publish metrics: %s", exc)

    def _gauges(self) -> list[Gauge]:
        live = self.live
        in_flight, healthy, breaker = [], [], []
        for inst in live.table().all_instances():
            labels = {"service": inst.labels[0], "instance": inst.labels[1]}
            in_flight.append((labels, float(inst.inflight)))
            healthy.append((labels, 1.0 if inst.healthy else 0.0))
            breaker.append((labels, _BREAKER_STATES.get(inst.breaker.state, 2.0)))
        version = live.config_version() or 0
        return [
            ("modelrouter_instance_in_flight", "Requests in flight to an instance", in_flight),
            ("modelrouter_instance_healthy", "1 if the instance passes its health checks, else 0", healthy),
            ("modelrouter_instance_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", breaker),
            ("modelrouter_active_requests", "Requests in progress at the gateway", [({}, float(live.active()))]),
            ("modelrouter_config_version", "The config version serving (0: not recorded)", [({}, float(version))]),
            ("modelrouter_build_info", "The gateway's version", [({"version": __version__}, 1.0)]),
            (
                "modelrouter_replica_info",
                "Which replica this is (MODELROUTER_REPLICA_ID, else the host name)",
                [({"replica": replica_id()}, 1.0)],
            ),
        ]


def replica_id() -> str:
    """The name of this replica in /metrics and /admin/api/state: ``MODELROUTER_REPLICA_ID``, else the host's name
    (a pod's name under Kubernetes). Breakers and health are each replica's own, so a reader must know whose."""
    return os.environ.get("MODELROUTER_REPLICA_ID") or socket.gethostname()


def metrics_token_ok(token: str | None, authorization: bytes | None) -> bool:
    """Whether a scrape may read /metrics: always without ``metrics_token``, else with ``Bearer <token>``
    (compared in constant time: the comparison must not tell how much of a guess was right)."""
    if token is None:
        return True
    return authorization is not None and hmac.compare_digest(authorization, b"Bearer " + token.encode())


_REQUEST_MAX = 16 * 1024  # request line and headers of a scrape; anything larger is not one


class MetricsListener:
    """``observability.metrics_listen``: a second address that serves GET /metrics and nothing else.

    A few lines of HTTP/1.1 on asyncio rather than a second uvicorn: a scrape is one small GET, and the main
    server's signal handling and drain stay the only ones. Each answer closes its connection (scrapers open
    one per scrape anyway). With ``serve --workers N`` every worker binds the address with SO_REUSEPORT; the
    kernel gives each scrape to one of them, and that one adds up the others' counters as on the main port."""

    def __init__(
        self,
        exposition: Callable[[], Callable[[], tuple[bytes, str]] | None],
        token: Callable[[], str | None],
    ) -> None:
        # Read per scrape: a reload may turn metrics off or change the token.
        self._exposition = exposition
        self._token = token
        self._server: asyncio.Server | None = None
        self.port = 0  # the bound port (useful when configured as 0)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, reuse_port=reuse_port or None)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            if len(head) > _REQUEST_MAX:
                return
            lines = head.split(b"\r\n")
            method, _, rest = lines[0].partition(b" ")
            target = rest.partition(b" ")[0].partition(b"?")[0]
            authorization = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"authorization":
                    authorization = value.strip()
            exposition = self._exposition()
            if target != b"/metrics" or exposition is None:
                status, content_type, body = b"404 Not Found", b"text/plain", b"not found\n"
            elif method not in (b"GET", b"HEAD"):
                status, content_type, body = b"405 Method Not Allowed", b"text/plain", b"use GET\n"
            elif not metrics_token_ok(self._token(), authorization):
                status, content_type, body = b"401 Unauthorized", b"text/plain", b"a bearer token is needed\n"
            else:
                data, kind = exposition()
                status, content_type, body = b"200 OK", kind.encode("latin-1"), data
            writer.write(
                b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                % (status, content_type, len(body))
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass  # the scraper went away
        except Exception:
            log.exception("metrics listener: could not answer a scrape")
        finally:
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
