"""Typed configuration values. Validation happens once, at load; the request path only reads these.

Unknown keys are errors everywhere (``extra="forbid"``): a typo must not silently change routing.

Why this module is long: it is the whole typed config, one class per section in the order of the YAML file,
so that a reader finds every setting and its default in one place.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .providers import apply_provider

__all__ = [
    "SERVICE_NAMES",
    "Config",
    "InstanceConfig",
    "ModelOverride",
    "ServerConfig",
    "ServiceConfig",
    "Timeouts",
    "UpstreamConfig",
]

ServiceName = Literal["chat", "embedding", "rerank", "tts", "stt", "image_generation", "image_edit"]
SERVICE_NAMES: tuple[str, ...] = ServiceName.__args__  # type: ignore[attr-defined]
BalancerName = Literal["random", "round_robin", "least_connections", "ip_hash", "consistent_hash", "latency"]
AdapterName = Literal["openai", "ollama", "tei", "anthropic", "azure", "gemini"]
# Services each non-OpenAI dialect can serve (the OpenAI adapter serves all).
ADAPTER_SERVICES: dict[str, tuple[str, ...]] = {
    "ollama": ("chat", "embedding"),
    "tei": ("rerank", "embedding"),
    "anthropic": ("chat",),
    "azure": ("chat", "embedding", "tts", "stt", "image_generation", "image_edit"),
    "gemini": ("chat", "embedding"),
}

PositiveSeconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Seconds. ``None`` means "no limit" for that phase."""

    connect: PositiveSeconds | None = None
    first_byte: PositiveSeconds | None = None  # request sent -> response headers; streams: -> first event
    idle: PositiveSeconds | None = None  # longest gap between two body chunks (streams: after the first event)
    total: PositiveSeconds | None = None

    def merged_over(self, base: Timeouts) -> Timeouts:
        """This object's set fields win over ``base``."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


# Defaults by kind of work: embeddings and rerank are short; generation may think for minutes.
DEFAULT_TIMEOUTS: dict[str, Timeouts] = {
    "chat": Timeouts(connect=5, first_byte=300, idle=120, total=1800),
    "embedding": Timeouts(connect=5, first_byte=60, idle=60, total=120),
    "rerank": Timeouts(connect=5, first_byte=60, idle=60, total=120),
    "tts": Timeouts(connect=5, first_byte=120, idle=60, total=600),
    "stt": Timeouts(connect=5, first_byte=600, idle=120, total=1800),
    "image_generation": Timeouts(connect=5, first_byte=600, idle=120, total=1800),
    "image_edit": Timeouts(connect=5, first_byte=600, idle=120, total=1800),
}


_MIB = 1024 * 1024
# Largest non-streamed answer read into memory, by kind of work; an instance's or service's
# `max_response_bytes` overrides it. Chat and rerank answers are kilobytes (a long answer with logprobs a few
# megabytes). Embeddings are asked for as floats (base64 is made here): 2048 inputs of 3072 dimensions is
# ~130 MB of JSON. Image answers carry base64 pictures; transcripts of long audio can be large too.
# Streamed answers (SSE, speech, binary images) are never held whole and are not bounded by it.
DEFAULT_MAX_RESPONSE_BYTES: dict[str, int] = {
    "chat": 64 * _MIB,
    "embedding": 256 * _MIB,
    "rerank": 64 * _MIB,
    "tts": 256 * _MIB,
    "stt": 256 * _MIB,
    "image_generation": 256 * _MIB,
    "image_edit": 256 * _MIB,
}


class BreakerConfig(_Strict):
    """Per-instance circuit breaker. Set globally, per service or per instance; the nearer setting wins
    field by field. See docs/resilience.md for the state machine."""

    enabled: bool = True
    consecutive_failures: int = Field(default=5, ge=1)  # open after this many failures in a row ...
    failure_rate: float = Field(default=0.5, gt=0, le=1)  # ... or this share of failures within `window`
    window: PositiveSeconds = 30
    min_requests: int = Field(default=20, ge=1)  # ... once the window holds at least this many requests
    open_for: PositiveSeconds = 5  # first open period; doubles on each re-trip ...
    max_open_for: PositiveSeconds = 120  # ... up to this
    half_open_probes: int = Field(default=1, ge=1)  # requests let through at once while half-open
    close_after: int = Field(default=2, ge=1)  # probe successes that close the breaker


class HealthCheckConfig(_Strict):
    """Active HTTP probes per instance. ``path: null`` uses the adapter's default (OpenAI: /v1/models,
    Ollama: /api/tags, TEI: /health); ``enabled: false`` turns probing off."""

    enabled: bool = True
    path: str | None = None
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expected_status: tuple[int, ...] = (200,)
    interval: PositiveSeconds = 10
    timeout: PositiveSeconds = 3
    unhealthy_after: int = Field(default=2, ge=1)  # consecutive failed probes
    healthy_after: int = Field(default=1, ge=1)  # consecutive good probes
    jitter: float = Field(default=0.1, ge=0, le=0.5)  # +- share of the interval, so probes do not align


class RetryConfig(_Strict):
    """Failover: a request that failed before anything reached the client is tried on another instance."""

    attempts: int = Field(default=3, ge=1)  # tries per model, the first included
    deadline: PositiveSeconds | None = None  # for all tries together; None: each try's own timeouts only
    on_status: tuple[int, ...] = (429, 500, 502, 503, 504)  # upstream statuses worth another instance
    max_retry_after: PositiveSeconds = 60  # longest Retry-After honoured when avoiding an instance


class DefaultResponse(_Strict):
    """A static answer when every instance (and fallback) failed; for non-streaming requests."""

    status: int = Field(default=200, ge=100, le=599)
    body: Any
    headers: dict[str, str] = Field(default_factory=dict)


class StaleCacheConfig(_Strict):
    """Remember successful non-streaming answers; serve one for an identical request only when every
    instance is down. Off by default: an old answer is not always better than an error."""

    enabled: bool = False
    max_entries: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    ttl: PositiveSeconds = 300


def _check_url(value: str) -> str:
    # urlsplit keeps spaces in the host ("http://host with space") and drops tabs and newlines silently.
    if any(c.isspace() for c in value):
        raise ValueError("not a URL (it contains a space)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not a URL (expected scheme://host[:port][/prefix])")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("not a URL (bad port)") from None
    if parts.query or parts.fragment:
        raise ValueError("not a URL prefix (no query or fragment allowed)")
    return value.rstrip("/")


class InstanceConfig(_Strict):
    name: str = Field(min_length=1)
    # What clients (x-modelrouter-instance) and metrics (the `instance` label) call this instance; unique in
    # its service. Default: "<name>#<n>", n counting instances of the same name in the service from 1. A
    # header value and a label: short, printable ASCII, no spaces.
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:#/+-]{0,99}$")
    models: tuple[str, ...] = ()  # further names this instance serves
    # A preset (config/providers.py) filling base_url and adapter; what the instance gives overrides it.
    provider: str | None = None
    base_url: str
    path: str | None = None
    adapter: AdapterName = "openai"
    # Sent as the adapter's auth header (Authorization: Bearer, x-api-key, api-key) unless headers give it.
    api_key: str | None = Field(default=None, min_length=1)
    weight: float = Field(default=1, gt=0)
    upstream_model: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # adapter anthropic: max_tokens when a request gives none (Anthropic requires one); 4096 if unset.
    default_max_tokens: int | None = Field(default=None, ge=1)
    # adapter openai: the backend serves /v1/responses itself (OpenAI; the preset says so): requests to the
    # gateway's /v1/responses go to it unchanged instead of as chat.
    responses_api: bool = False
    # adapter azure: the api-version query parameter; 2024-10-21 if unset.
    api_version: str | None = Field(default=None, pattern=r"^[0-9A-Za-z.-]{1,40}$")
    timeouts: Timeouts | None = None
    # Largest non-streamed answer taken from this instance (bytes); None: the service's, else its kind's default.
    max_response_bytes: int | None = Field(default=None, gt=0)
    breaker: BreakerConfig | None = None
    health_check: HealthCheckConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return apply_provider(data)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        url = _check_url(value)
        if "@" in urlsplit(url).netloc:
            # Credentials in the URL end up wherever the URL does (logs, error reports, the admin view); the
            # message does not repeat the value, which would print them once more.
            raise ValueError(
                "must not carry credentials (user:pass@host): give them as a header instead, e.g. "
                "headers: {Authorization: 'Basic <base64 of user:pass>'} (a ${ENV} variable keeps them out of "
                "the file)"
            )
        return url

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.name, *(m for m in self.models if m != self.name))


HashOn = Annotated[str, Field(pattern=r"^(client_ip|user|header:[A-Za-z0-9-]+)$")]


class ModelOverride(_Strict):
    load_balance: BalancerName | None = None
    hash_on: HashOn | None = None
    # Models to try, in order, when every instance of this one failed (same service).
    fallbacks: tuple[str, ...] = ()
    # Told to clients in the 503 when this model has no usable instance: how to bring one up ("run `ollama
    # serve`"). A model given only this, with no instance serving it, is a placeholder: every request answers
    # that 503 (the default config's dall-e-3 says how to add an image backend).
    unavailable: str | None = Field(default=None, min_length=1, max_length=500)


class ServiceConfig(_Strict):
    load_balance: BalancerName = "round_robin"
    # What ip_hash / consistent_hash hash: the client IP, the request's `user` field, or a header.
    hash_on: HashOn = "client_ip"
    timeouts: Timeouts | None = None
    # Largest non-streamed answer read from an instance (bytes); larger ones fail with a 502
    # (upstream_response_too_large). None: DEFAULT_MAX_RESPONSE_BYTES of this service.
    max_response_bytes: int | None = Field(default=None, gt=0)
    breaker: BreakerConfig | None = None
    health_check: HealthCheckConfig | None = None
    retry: RetryConfig | None = None
    # When no instance is usable (unhealthy or breaker open), try them anyway rather than answer 503.
    panic_mode: bool = False
    default_response: DefaultResponse | None = None
    stale_cache: StaleCacheConfig = StaleCacheConfig()
    models: dict[str, ModelOverride] = Field(default_factory=dict)
    instances: list[InstanceConfig] = Field(default_factory=list)

    def instance_names(self) -> list[str]:
        """Each instance's public name, in order: its ``id``, or "<name>#<n>" with n its position (from 1)
        among the instances of the same ``name`` in this service, whether or not they have an ``id``."""
        seen: dict[str, int] = {}
        names = []
        for inst in self.instances:
            seen[inst.name] = n = seen.get(inst.name, 0) + 1
            names.append(inst.id or f"{inst.name}#{n}")
        return names

    @model_validator(mode="after")
    def _unique_names(self) -> ServiceConfig:
        # Two instances of one name would share one header value and one metrics series.
        taken: dict[str, int] = {}
        for i, name in enumerate(self.instance_names()):
            if name in taken:
                raise ValueError(
                    f"instances[{i}]: the instance name {name!r} is already that of instances[{taken[name]}]; "
                    "give one of them another `id`"
                )
            taken[name] = i
        return self


LimitScope = Literal["global", "service", "model", "instance", "key", "ip", "user"]
LimitAlgorithm = Literal["token_bucket", "leaky_bucket", "sliding_window", "fixed_window", "warmup"]


class LimitRule(_Strict):
    """One rate limit. ``rate`` units per ``period`` seconds, counted per scope value (per key, per IP …).
    ``unit: tokens`` counts prompt+completion tokens (reserved from an estimate, reconciled with real usage)."""

    scope: LimitScope
    algorithm: LimitAlgorithm = "token_bucket"
    rate: float = Field(gt=0)
    period: PositiveSeconds = 60
    unit: Literal["requests", "tokens"] = "requests"
    burst: float | None = Field(default=None, gt=0)  # bucket capacity; default: rate
    max_wait: float = Field(default=0, ge=0)  # leaky bucket: how long a request may queue before refusal
    warmup: PositiveSeconds = 60  # warm-up: seconds for capacity to ramp from cold to full after idle
    cold_factor: float = Field(default=3, gt=1)  # warm-up: capacity when cold is rate / cold_factor
    # Apply only to requests for these services / models (empty: all).
    services: tuple[str, ...] = ()
    models: tuple[str, ...] = ()


class KeyQuotas(_Strict):
    """Per-key ceilings besides rate limits; each optional."""

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    daily_requests: int | None = Field(default=None, ge=1)
    daily_tokens: int | None = Field(default=None, ge=1)
    monthly_requests: int | None = Field(default=None, ge=1)
    monthly_tokens: int | None = Field(default=None, ge=1)


class ApiKeyConfig(_Strict):
    """A client key declared in the config. Give ``key`` (the secret, e.g. from ``${ENV}``; hashed at load and
    never stored) or ``hash`` (``sha256:<hex>`` as printed by ``modelrouter keys hash``)."""

    name: str = Field(min_length=1)
    key: str | None = Field(default=None, min_length=16)
    hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    enabled: bool = True
    expires_at: float | None = None  # unix time
    models: tuple[str, ...] = ()  # allowed models (empty: all)
    services: tuple[str, ...] = ()  # allowed services (empty: all)
    quotas: KeyQuotas = KeyQuotas()
    limits: tuple[LimitRule, ...] = ()  # extra limits for this key only
    metadata: dict[str, str] = Field(default_factory=dict)


class AuthConfig(_Strict):
    # Off: the gateway is open (the embedded default for a laptop). On: every /v1 request needs a key.
    enabled: bool = False
    keys: tuple[ApiKeyConfig, ...] = ()
    # Clients at these addresses (CIDRs) are proxies: the client IP is then taken from X-Forwarded-For.
    trusted_proxies: tuple[str, ...] = ()


class StoreConfig(_Strict):
    """Where keys, admin users, usage and audit live. Default: SQLite in ``<data_dir>/modelrouter.db``."""

    database_url: str | None = None  # e.g. postgresql+asyncpg://user@127.0.0.1/modelrouter
    data_dir: str = "./data"
    # How often the gateway looks for keys changed by the CLI or another replica (seconds).
    refresh_interval: PositiveSeconds = 0.5


class UsageConfig(_Strict):
    # None: record usage when client keys are on (auth.enabled); True: always; False: never.
    enabled: bool | None = None
    buffer: int = Field(default=10_000, ge=1)  # records held while the store is slow; beyond: dropped, counted
    batch: int = Field(default=500, ge=1)
    flush_interval: PositiveSeconds = 1
    # Records older than this are deleted (hourly, in the background); None: kept forever (~3 GB a day at 200 req/s).
    retention_days: int | None = Field(default=90, ge=1)


class MaskRule(_Strict):
    pattern: str
    replacement: str = "[redacted]"


class RedactionConfig(_Strict):
    log_patterns: tuple[str, ...] = ()  # extra regexes never to be logged
    request_masks: tuple[MaskRule, ...] = ()  # applied to request content before forwarding
    response_masks: tuple[MaskRule, ...] = ()  # applied to (non-streaming) response content


class ConsoleConfig(_Strict):
    """The web console (console/): served at ``path`` on the main port, using only the admin API."""

    enabled: bool = True
    path: str = Field(default="/console", pattern=r"^/[a-z0-9][a-z0-9/_-]{0,60}$")


class AdminConfig(_Strict):
    token_ttl: PositiveSeconds = 3600
    login_attempts_per_minute: int = Field(default=5, ge=1)
    # Audit log entries older than this are deleted (as usage records are); None: kept forever. Longer than usage:
    # the log is small, and who changed what is asked about long after.
    audit_retention_days: int | None = Field(default=365, ge=1)


class ObservabilityHeaders(_Strict):
    """Response headers, each switchable off."""

    instance: bool = True  # x-modelrouter-instance: which instance answered
    overhead: bool = True  # x-modelrouter-overhead-ms: the gateway's own time, the upstream's excluded
    server_timing: bool = True  # Server-Timing: gateway;dur=…, upstream;dur=…


def split_address(value: str) -> tuple[str, int]:
    """("127.0.0.1", 9464) from "127.0.0.1:9464"; IPv6 in brackets ("[::1]:9464"). ValueError when not that."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
        raise ValueError("must be host:port, e.g. 127.0.0.1:9464 (IPv6: [::1]:9464)")
    return host, int(port)


class ObservabilityConfig(_Strict):
    metrics: bool = True  # GET /metrics (Prometheus text format)
    # A second address serving only GET /metrics (e.g. 127.0.0.1:9464), so that the metrics, which name
    # models and instances, need not be reachable where clients are; the main port's /metrics then answers
    # 404. Bound at start (a change needs a restart). None: /metrics on the main port.
    metrics_listen: str | None = None
    # A bearer token GET /metrics requires, wherever it is served (Prometheus: `authorization:
    # {credentials_file: ...}`). Static on purpose: admin tokens expire, a scraper cannot log in again.
    metrics_token: str | None = Field(default=None, min_length=16)
    access_log: bool = False  # one JSON line per request
    access_log_path: str | None = None  # a file to append to; default (or "-"): standard output
    request_id: bool = True  # X-Request-ID taken from the client (or made) and returned
    headers: ObservabilityHeaders = ObservabilityHeaders()
    tracing: bool = False  # OpenTelemetry spans (pip install 'modelrouter[otel]'; OTEL_* variables configure it)
    # Seconds between samples of the traffic history the console charts (GET /admin/api/metrics/history keeps
    # the last 360: an hour at 10 s). Read from the counters /metrics has, so it needs `metrics`; 0: no history.
    # Set at start (a reload that changes it is reported, not applied).
    history_interval: float = Field(default=10, ge=0, le=600)

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_address(value)
        return value


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Largest JSON request body accepted (bytes). Chat requests with inline images can be large.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    # Largest multipart upload (audio, image edits) accepted, and how much of it is kept in memory
    # before spooling to disk.
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    spool_memory_bytes: int = Field(default=1024 * 1024, ge=0)
    # Largest single event of an upstream stream (an SSE event, an Ollama NDJSON line) held while it is not
    # complete: an upstream that streams without event boundaries ends with an error instead of growing
    # memory without bound. Real events are a few hundred bytes; a long tool-call argument is still far below.
    max_event_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Refuse request parameters outside OpenAI's ranges (temperature 0-2, n >= 1, encoding_format float|base64,
    # ...) with a 400 before any backend is called. Off: for backends that accept wider ranges; types and
    # required fields are checked either way.
    validate_parameters: bool = True
    # Client-side limits: what one client may hold of the gateway before sending a request it can act on.
    # Without them a few hundred connections that send their head one byte at a time, or one header that never
    # ends, hold file descriptors and memory for ever. Read at start (a change needs a restart).
    # A request head (request line and headers) must be complete this long after its first byte (or after the
    # connection opened): a fixed deadline, not an idle timeout, which a byte every few seconds would defeat.
    header_timeout: PositiveSeconds = 10
    # Largest request head in bytes, and most headers; past either: 431 and the connection closed. A head is
    # refused as it arrives, so one that never ends costs at most this much memory.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=200, ge=8)
    # Longest pause while a request body is being read: past it, 408 and the connection closed (a body shorter
    # than its Content-Length ends here). After the answer, the rest of a body the gateway did not need (a
    # 401, a 413) must arrive within this long too.
    body_read_timeout: PositiveSeconds = 30
    # How long a connection may stay open with no request after the last answer.
    keep_alive_timeout: PositiveSeconds = 5
    # Open client connections per process (each worker of `serve --workers N` has its own). Past it a new
    # connection first displaces the oldest one that has not yet sent a complete request head; only if every
    # connection has a request in flight is it answered 503. At start the soft file-descriptor limit is raised
    # (up to the hard one) to fit; if it cannot, the cap is lowered to fit it (and that is logged).
    max_connections: int = Field(default=4096, ge=1)
    # On SIGTERM: stop accepting, let requests and streams in flight finish for at most this long, then close.
    drain_timeout: PositiveSeconds = 30
    # Reload the config file when it changes (checked every `watch_interval` seconds); SIGHUP always reloads.
    watch_config: bool = True
    watch_interval: PositiveSeconds = 1


class UpstreamConfig(_Strict):
    """How the gateway talks to backends. ``client``: the HTTP client library behind the transport (both pass the
    same contract; docs/architecture.md says which is the default and why). Read at start: a change needs a
    restart."""

    client: Literal["aiohttp", "pyqwest", "pyreqwest"] = "aiohttp"

    @field_validator("client")
    @classmethod
    def _installed(cls, value: str) -> str:
        # Refused at load, like any other config error, rather than when the gateway starts.
        if value != "aiohttp" and importlib.util.find_spec(value) is None:
            raise ValueError(f"{value} is not installed (pip install 'modelrouter[{value}]')")
        return value


class SentinelConfig(_Strict):
    """Redis Sentinel: the gateway asks these nodes which server is ``master`` now, and follows a failover."""

    master: str = Field(min_length=1)
    nodes: tuple[str, ...] = Field(min_length=1)  # host:port of each sentinel

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for node in value:
            split_address(node)
        return value


class StateConfig(_Strict):
    """Where the counts behind rate limits, token limits, quotas and concurrency caps live. ``memory``: in this
    process, exact for one process only. ``redis``: one Redis shared by every process and replica, so a limit
    means the same however many there are."""

    backend: Literal["memory", "redis"] = "memory"
    # redis://[:password@]host:port/db, rediss:// (TLS), unix:///path.sock?db=0; the password via ${ENV}.
    url: str | None = None
    sentinel: SentinelConfig | None = None  # instead of url
    # One Redis round trip; past it (or when Redis is down) `on_error` applies to the request.
    timeout_ms: float = Field(default=50, gt=0, le=60_000)
    # allow: the request is admitted and counted in this process until Redis answers again; deny: 503.
    on_error: Literal["allow", "deny"] = "allow"
    prefix: str = Field(default="mr:", max_length=64)  # of every key, so that several gateways can share a Redis

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return value

    @model_validator(mode="after")
    def _where(self) -> StateConfig:
        if self.backend == "redis" and (self.url is None) == (self.sentinel is None):
            raise ValueError("state.backend redis needs exactly one of url or sentinel")
        return self


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    # Global resilience defaults; services and instances override them field by field.
    breaker: BreakerConfig = BreakerConfig()
    health_check: HealthCheckConfig = HealthCheckConfig()
    retry: RetryConfig = RetryConfig()
    auth: AuthConfig = AuthConfig()
    limits: tuple[LimitRule, ...] = ()
    store: StoreConfig = StoreConfig()
    state: StateConfig = StateConfig()
    usage: UsageConfig = UsageConfig()
    redaction: RedactionConfig = RedactionConfig()
    admin: AdminConfig = AdminConfig()
    console: ConsoleConfig = ConsoleConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    aliases: dict[str, str] = Field(default_factory=dict)
    services: dict[ServiceName, ServiceConfig] = Field(default_factory=dict)


_M = TypeVar("_M", bound=BaseModel)


def layered(base: _M, *overrides: _M | None) -> _M:
    """``base`` with the fields each override set explicitly applied in order (nearest last)."""
    for override in overrides:
        if override is not None:
            base = base.model_copy(update=override.model_dump(exclude_unset=True))
    return base
