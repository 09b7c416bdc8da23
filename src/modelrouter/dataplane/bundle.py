"""``Bundle``: everything a request needs that depends on the config, in one immutable object.

The wiring (``app.Gateway.rebuild``) builds a bundle from a config and the state carried over from the previous
one (instances' health and breakers, limiter buckets, the key ring), and swaps it in with one assignment
(``FrontDoor.bundle``). The front door reads it once when a request starts and hands it down the pipeline:
nothing on the request path reads the config's products a second time, so a request is routed, admitted,
limited and observed under exactly one config, whatever reload lands meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..access.admission import Accounting
from ..access.auth import KeyRing
from ..adapters.base import MAX_EVENT_BYTES
from ..config.model import Config
from ..endpoints import Endpoint
from ..errors import RateLimited
from ..http.client import TrustedProxies
from ..observability.metrics import Metrics
from ..observability.observe import Observe
from ..routing.router import RoutingTable
from .masks import ContentMasks

__all__ = ["Bundle"]


@dataclass(frozen=True, slots=True, eq=False)
class Bundle:
    config: Config
    table: RoutingTable
    # Client keys; None while auth is off (the gateway is then open).
    keys: KeyRing | None = None
    trusted_proxies: TrustedProxies = ()
    # Rate limits, quotas and usage records; None when nothing is configured (nothing is paid).
    accounting: Accounting | None = None
    # Limits with `scope: instance`: (endpoint, model, instance id) -> a refusal, or None to go ahead.
    instance_limits: Callable[[Endpoint, str, str], Awaitable[RateLimited | None]] | None = None
    # Metrics, access log, response headers, tracing; None when all are off (nothing is paid).
    observe: Observe | None = None
    metrics: Metrics | None = None  # upstream timings, retries and fallbacks, when metrics are on
    masks: ContentMasks | None = None  # request/response masking rules, when configured
    # GET /metrics on the main port: the exposition (body, content type); None: not served there.
    metrics_exposition: Callable[[], tuple[bytes, str]] | None = None
    metrics_token: str | None = None  # a bearer token GET /metrics requires, when set
    # server.*: request size limits, parameter ranges, one stream event's size. (The body-read timeout is read at
    # start, like the server layer's client limits: FrontDoor.body_read_timeout.)
    max_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024
    spool_bytes: int = 1024 * 1024
    validate_parameters: bool = True
    max_event_bytes: int = MAX_EVENT_BYTES

    @classmethod
    def plain(cls, config: Config, table: RoutingTable | None = None) -> Bundle:
        """A bundle with only what the config's ``server`` section and routes give: no keys, limits or
        observability (what tests of the bare data plane use)."""
        server = config.server
        return cls(
            config=config,
            table=table if table is not None else RoutingTable(config),
            max_body_bytes=server.max_body_bytes,
            max_upload_bytes=server.max_upload_bytes,
            spool_bytes=server.spool_memory_bytes,
            validate_parameters=server.validate_parameters,
            max_event_bytes=server.max_event_bytes,
        )
