"""Runtime state of one backend instance: what the balancers read and the request path updates."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from .._version import __version__
from ..config.model import DEFAULT_MAX_RESPONSE_BYTES, BreakerConfig, HealthCheckConfig, InstanceConfig, Timeouts
from ..resilience.breaker import CircuitBreaker

if TYPE_CHECKING:
    from ..adapters.base import Adapter

__all__ = ["Instance", "join_url"]

_USER_AGENT = f"modelrouter/{__version__}"

# Peak-EWMA decay constant (seconds): how fast a latency spike is forgotten.
_EWMA_TAU = 10.0


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, for requests and health probes alike. Users often write the base URL the way
    OpenAI clients want it (".../v1"); that must not become ".../v1/v1/..." (a probe built differently once
    asked every such instance for /v1/v1/models, got 404 and took it out of service)."""
    if base_url.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base_url + path


class Instance:
    """One configured backend. ``inflight`` is incremented by ``acquire`` and decremented by ``release`` on
    every exit path of a request (the request path guarantees the pairing)."""

    __slots__ = (
        "_ewma_at",
        "adapter",
        "base_url",
        "breaker",
        "config",
        "cooldown_until",
        "ewma",
        "headers",
        "health",
        "healthy",
        "id",
        "inflight",
        "json_headers",
        "key",
        "labels",
        "max_response_bytes",
        "name",
        "probe_url",
        "timeouts",
        "upstream_model",
        "urls",
        "weight",
    )

    def __init__(
        self,
        config: InstanceConfig,
        service: str,
        urls: dict[str, str],
        timeouts: Timeouts,
        adapter: Adapter,
        breaker: BreakerConfig | None = None,
        health: HealthCheckConfig | None = None,
        name: str | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self.config = config
        # What clients and metrics see: the operator's `id`, or "<name>#<n>" (``ServiceConfig.instance_names``
        # gives n; the routing table passes it). Never the URL: clients must not learn hosts, ports or
        # credentials, and the URL is no stable label either (it changes when a backend moves).
        self.name = name or config.id or f"{config.name}#1"
        # Operator-side identity, for log lines and the admin view: the URL is what an operator looks for
        # there. It carries no credentials: the config refuses user:pass@ in base_url.
        self.id = f"{service}/{self.name}@{config.base_url}"
        self.labels = (service, self.name)  # (service, instance) metric labels
        self.base_url = config.base_url
        # endpoint name -> full upstream URL, computed once per config
        self.urls = urls
        self.weight = config.weight
        self.upstream_model = config.upstream_model or config.name
        # Set here rather than left to the HTTP client: aiohttp's per-request "skip auto headers" path measured
        # a few percent of throughput. Identity encoding: answers are passed through or parsed, never unzipped.
        given = {name.lower() for name in config.headers}
        dialect = {name: value for name, value in adapter.default_headers.items() if name.lower() not in given}
        self.headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", **dialect, **config.headers}
        # Built once: the upstream client copies headers, so one dict can serve every JSON request.
        self.json_headers = {**self.headers, "Content-Type": "application/json"}
        self.timeouts = timeouts
        # Largest non-streamed answer read from this instance (its own, its service's or the kind's default).
        self.max_response_bytes = max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES[service]
        self.adapter = adapter
        # Identity across config reloads: the same key means the same backend, so its state may be kept. The
        # resilience settings are not part of it: changing a threshold keeps the instance and its state; nor is
        # its public name (`id`), which only relabels it.
        self.key = (
            service,
            config.model_dump_json(exclude={"id", "timeouts", "max_response_bytes", "breaker", "health_check"}),
        )
        self.breaker = CircuitBreaker(breaker or BreakerConfig())
        self.health = health or HealthCheckConfig(enabled=False)
        # GET/POST target of the active health check, or None when checks are off.
        self.probe_url: str | None = None
        if self.health.enabled:
            self.probe_url = join_url(config.base_url, self.health.path or adapter.health_path)
        # Until the first probe says otherwise an instance is taken to be healthy: traffic flows at once.
        self.healthy = True
        # A 429/503 with Retry-After keeps requests away until then (monotonic time).
        self.cooldown_until = 0.0
        self.inflight = 0
        self.ewma = 0.0
        self._ewma_at = time.monotonic()

    def adopt(self, newer: Instance) -> None:
        """Take the settings of ``newer`` (same backend, from a reloaded config) and keep this state."""
        self.timeouts = newer.timeouts
        self.max_response_bytes = newer.max_response_bytes
        self.breaker.config = newer.breaker.config
        self.health = newer.health
        self.probe_url = newer.probe_url
        self.config = newer.config
        # A default name counts position among same-named instances, which a reload may change without
        # changing the backend (another instance added before this one).
        self.name, self.id, self.labels = newer.name, newer.id, newer.labels

    def usable(self, now: float) -> bool:
        """May a request be sent here now? Health, Retry-After cool-down and circuit breaker."""
        return self.healthy and self.cooldown_until <= now and self.breaker.allows()

    def usable_in(self, now: float) -> float | None:
        """Seconds until ``usable`` may say yes (0: now), for a 503's Retry-After; None while unhealthy (the
        next good health probe decides, at no known time) or while the breaker's probes are all out."""
        if not self.healthy:
            return None
        breaker = self.breaker.wait()
        if breaker is None:
            return None
        return max(self.cooldown_until - now, breaker, 0.0)

    def acquire(self) -> None:
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1

    def observe_latency(self, seconds: float) -> None:
        """Peak EWMA: jump up to a slower observation at once, decay towards faster ones over time."""
        now = time.monotonic()
        if seconds > self.ewma:
            self.ewma = seconds
        else:
            elapsed = now - self._ewma_at
            w = math.exp(-elapsed / _EWMA_TAU)
            self.ewma = self.ewma * w + seconds * (1.0 - w)
        self._ewma_at = now

    def __repr__(self) -> str:
        health = "healthy" if self.healthy else "UNHEALTHY"
        return (
            f"<Instance {self.id} weight={self.weight:g} inflight={self.inflight} "
            f"ewma={self.ewma * 1000:.1f}ms {health} breaker={self.breaker.state}>"
        )
