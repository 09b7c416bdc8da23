"""The app factory: the one place where config, routing, transport and the front door are wired together."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any

from .accounting import Accounting
from .admin import AdminApp, ensure_first_admin
from .auth import KeyRing, Principal, principal_from_config, principal_from_record
from .config.model import Config
from .control import ConfigControl
from .front.asgi import FrontDoor
from .livestate import live_state
from .pipeline import Pipeline
from .redaction import ContentMasks, install_log_redaction
from .routing.health import HealthChecker
from .routing.router import RoutingTable
from .telemetry import MetricsListener, Telemetry
from .upstream.aiohttp_transport import AiohttpTransport
from .upstream.base import Transport
from .usage import UsageRecorder

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("modelrouter")

# Usage records and audit entries past their retention are deleted this often; the first time a random part of
# PRUNE_FIRST after the store opens, so that replicas and workers started together do not all prune at once (each
# pruning is harmless: they delete the same expired rows, and whoever comes second finds fewer or none).
PRUNE_INTERVAL = 3600.0
PRUNE_FIRST = 300.0


class Gateway(FrontDoor):
    """The assembled gateway: the front door (an ASGI application) with its side services wired in.
    ``reload`` swaps in a new config without a restart."""

    def __init__(self, config: Config, *, transport: Transport | None = None) -> None:
        self.config = config
        self.transport: Transport = transport if transport is not None else AiohttpTransport()
        self.health = HealthChecker(self.transport)
        self._started = False
        server = config.server
        super().__init__(
            Pipeline(RoutingTable(config), self.transport),
            max_body_bytes=server.max_body_bytes,
            max_upload_bytes=server.max_upload_bytes,
            spool_bytes=server.spool_memory_bytes,
            validate_parameters=server.validate_parameters,
        )
        self._config_keys: list[Principal] = []
        self._store_keys: list[Principal] = []
        self.store: Store | None = None
        self.recorder: UsageRecorder | None = None
        # The admin API answers 503 until a store is open (the store holds admin users and tokens).
        self.admin = AdminApp(
            lambda: self.store,
            lambda: self.config.admin,
            trusted_proxies=lambda: self.trusted_proxies,
            control_getter=lambda: self.control,
            live_state=self.live_state,
        )
        self._refresher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # background work started by reloads (see _background)
        self._opening = False  # the store is being opened in the background
        self._publisher: asyncio.Task[None] | None = None
        # Where the config comes from and its versions (the CLI sets one; a library user may leave it unset).
        self.control: ConfigControl | None = None
        # Set by the process owner (the CLI), not by a library user: freezing the GC heap is process-wide.
        self.freeze_heap = False
        self.telemetry = Telemetry(self)
        # observability.metrics_listen as started with: bound once, at startup (a reload that changes it is
        # reported, not applied). While set, the main port does not serve /metrics.
        self.metrics_listen = config.observability.metrics_listen
        self.metrics_listener: MetricsListener | None = None
        self._exposition: Callable[[], tuple[bytes, str]] | None = None
        self.pipeline.max_event_bytes = server.max_event_bytes
        self._apply_auth(config)
        self._apply_redaction(config)
        self._apply_observability()

    def _apply_auth(self, config: Config) -> None:
        auth = config.auth
        self.trusted_proxies = tuple(ip_network(cidr, strict=False) for cidr in auth.trusted_proxies)
        self._config_keys = [principal_from_config(k) for k in auth.keys]
        if not auth.enabled:
            self.keys = None
            return
        if self.keys is None:
            self.keys = KeyRing()
        self.keys.replace([*self._config_keys, *self._store_keys])

    def _apply_accounting(self, config: Config) -> bool:
        """Limits, quotas and usage records as ``config`` says; True when they came on just now (their quotas
        are then to be seeded from the store). Limits and usage records cost a little per request; with none
        configured, none is paid."""
        wanted = bool(config.limits) or config.auth.enabled or self.recorder is not None
        created = False
        if not wanted:
            self.accounting = None
        elif self.accounting is None:
            self.accounting = Accounting(config, self.recorder)
            self.accounting.metrics = self.pipeline.metrics
            created = True
        else:
            self.accounting.configure(config)
            self.accounting.recorder = self.recorder
        accounting = self.accounting
        self.pipeline.instance_limits = accounting.instance_limit if accounting and accounting.instance_rules else None
        return created

    def _apply_usage(self, config: Config) -> None:
        """Usage records on or off as ``usage`` (and ``auth``) say, at startup and after every reload: a reload
        that turns auth on must record what its keys use from the next request on."""
        store = self.store
        enabled = config.usage.enabled
        wanted = store is not None and (enabled is True or (enabled is None and config.auth.enabled))
        recorder = self.recorder
        if wanted and recorder is None:
            assert store is not None
            self.recorder = UsageRecorder(
                store.insert_usage,
                capacity=config.usage.buffer,
                batch=config.usage.batch,
                interval=config.usage.flush_interval,
            )
            self.recorder.start()
        elif wanted and recorder is not None:
            recorder.capacity, recorder.batch = config.usage.buffer, config.usage.batch
            recorder.interval = config.usage.flush_interval
        elif recorder is not None:
            self.recorder = None
            self._background(recorder.aclose(), "usage recorder close")  # what it holds is still written
        if self.accounting is not None:
            self.accounting.recorder = self.recorder

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` off the request path; kept referenced until done, and awaited (bounded) at shutdown."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _apply_observability(self) -> None:
        """Metrics, access log, response headers and tracing from ``observability`` (after the routing table, whose
        model names bound the ``model`` label)."""
        self.observe = self.telemetry.apply(self.config)
        metrics = self.observe.metrics if self.observe is not None else None
        self.pipeline.metrics = metrics
        if self.accounting is not None:
            self.accounting.metrics = metrics
        self._exposition = self.telemetry.exposition if metrics is not None else None
        self.metrics_exposition = None if self.metrics_listen is not None else self._exposition
        self.metrics_token = self.config.observability.metrics_token

    def _apply_redaction(self, config: Config) -> None:
        redaction = config.redaction
        masks = ContentMasks(redaction.request_masks, redaction.response_masks)
        self.pipeline.masks = masks if masks.active else None
        if self._started:
            install_log_redaction(redaction)

    @staticmethod
    def store_wanted(config: Config) -> bool:
        """Without a config control (a library user's gateway), the store is opened only when keys or usage
        records need it. ``modelrouter serve`` always has one: config versions live in the store."""
        return config.auth.enabled or config.usage.enabled is True

    async def _seed_quotas(self, store: Store, until: float) -> None:
        """Daily and monthly quotas count from the store's usage records, so a restart does not reset them.
        Only records before ``until`` (when the quotas started counting in this process) are added: later ones
        were counted here already."""
        accounting = self.accounting
        if accounting is None:
            return
        now = until
        day = now - now % 86400
        month = datetime.fromtimestamp(now, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
        per_key: dict[str, list[float]] = {}
        for since, slot in ((month, 2), (day, 0)):
            for total in await store.usage_totals(since=since, until=until):
                if total.key_id is None:
                    continue
                counts = per_key.setdefault(total.key_id, [0, 0, 0, 0])
                counts[slot] += total.requests
                counts[slot + 1] += total.prompt_tokens + total.completion_tokens
        for key_id, (day_requests, day_tokens, month_requests, month_tokens) in per_key.items():
            accounting.quota.seed(
                key_id,
                day_requests=int(day_requests),
                day_tokens=day_tokens,
                month_requests=int(month_requests),
                month_tokens=month_tokens,
            )

    async def _poll_store(self, store: Store) -> None:
        """Poll the store for what other processes change: the key version (a key created, disabled or revoked
        by the CLI, the admin API or another replica is honoured within ``store.refresh_interval``) and, in store
        mode, the newest config version."""
        version = -1
        while True:
            try:
                current = await store.keys_version()
                if current != version:
                    records = await store.all_active_keys()
                    self._store_keys = [principal_from_record(r) for r in records]
                    if self.keys is not None:
                        self.keys.replace([*self._config_keys, *self._store_keys])
                    version = current
                if self.control is not None:
                    await self.control.refresh()
            except Exception as exc:  # the store is down: keep what we have, try again
                log.warning("could not refresh keys or config from the store: %s", exc)
            await asyncio.sleep(self.config.store.refresh_interval)

    async def _prune_store(self, store: Store) -> None:
        """Delete usage records and audit entries older than ``usage.retention_days`` and
        ``admin.audit_retention_days`` (read at each run: a reload applies). Its own task, never on the request path;
        the store deletes in short batches, so the usage recorder and admin writes get in between. Every replica
        runs one: only one is needed, several do no harm."""
        await asyncio.sleep(random.uniform(0, PRUNE_FIRST))
        while True:
            now = time.time()
            for what, days, prune in (
                ("usage records", self.config.usage.retention_days, store.prune_usage),
                ("audit log entries", self.config.admin.audit_retention_days, store.prune_audit),
            ):
                if days is None:
                    continue
                try:
                    deleted = await prune(now - days * 86400)
                except Exception as exc:  # the store is down: try again next time
                    log.warning("could not delete %s older than %d days: %s", what, days, exc)
                    continue
                if deleted:
                    log.info("deleted %d %s older than %d days", deleted, what, days)
            await asyncio.sleep(PRUNE_INTERVAL)

    def live_state(self) -> dict[str, Any]:
        return live_state(self.table, self.accounting, self.control.version if self.control is not None else None)

    @property
    def table(self) -> RoutingTable:
        return self.pipeline.table

    async def _seed_quotas_logged(self, store: Store, until: float) -> None:
        try:
            await self._seed_quotas(store, until)
        except Exception as exc:  # the store is down: quotas count from zero in this process until a restart
            log.warning("could not read today's and this month's usage for quotas from the store: %s", exc)

    async def _open_store_later(self) -> None:
        """A library user's gateway that started without a store, and a reload turned on keys or usage records:
        open it now (in the background; config keys work at once, the store's keys once it is open)."""
        try:
            await self._open_store()
        except Exception as exc:
            log.error("could not open the store that keys or usage records need: %s", exc)
            return
        self._apply_usage(self.config)
        if self._apply_accounting(self.config):
            assert self.store is not None
            await self._seed_quotas_logged(self.store, time.time())

    async def _open_store(self) -> None:
        from .store import Store  # imported here: it is large, and only needed when wanted

        self.store = store = await Store.open(self.config.store)
        log.info("store: %r", store)
        if self.control is not None:
            await self.control.start(store)  # store mode: the newest stored version replaces the seed
        # Before log redaction is installed: custom patterns must not mask the one-time password.
        await ensure_first_admin(store)
        self._refresher = asyncio.get_running_loop().create_task(self._poll_store(store), name="store poll")
        self._pruner = asyncio.get_running_loop().create_task(self._prune_store(store), name="store prune")

    def reload(self, config: Config) -> None:
        """Build a new routing table (keeping the state of unchanged instances) and swap it in atomically.
        Size limits and parameter checks in ``server`` apply to new requests too; the listen address needs a
        restart."""
        self.pipeline.swap(RoutingTable(config, previous=self.pipeline.table))
        self._apply_auth(config)
        if self._started:
            # Whatever a reload turns on works from the next request: usage records, quotas, the store.
            self._apply_usage(config)
            if self.store is None and self.store_wanted(config) and not self._opening:
                self._opening = True
                self._background(self._open_store_later(), "store open")
        if self._apply_accounting(config) and self._started and self.store is not None:
            self._background(self._seed_quotas_logged(self.store, time.time()), "quota seed")
        self._apply_redaction(config)
        if self._started:
            self.health.watch(self.table.all_instances())
        server = config.server
        self.max_body_bytes = server.max_body_bytes
        self.max_upload_bytes = server.max_upload_bytes
        self.spool_bytes = server.spool_memory_bytes
        self.validate_parameters = server.validate_parameters
        self.pipeline.max_event_bytes = server.max_event_bytes
        if config.observability.metrics_listen != self.metrics_listen:
            log.warning(
                "observability.metrics_listen changed to %s (started with %s): that needs a restart",
                config.observability.metrics_listen,
                self.metrics_listen,
            )
        self.config = config
        self._apply_observability()

    async def startup(self) -> None:
        if self.store_wanted(self.config) or self.control is not None:
            await self._open_store()
            assert self.store is not None
            self._apply_usage(self.config)  # the config may be the store's newest version now
            if self._apply_accounting(self.config):
                await self._seed_quotas(self.store, time.time())
        config = self.config
        if self.metrics_listen is not None:
            from .config.model import split_address

            host, port = split_address(self.metrics_listen)
            self.metrics_listener = MetricsListener(lambda: self._exposition, lambda: self.metrics_token)
            # Workers share the address (SO_REUSEPORT); whichever answers adds up the others' counters.
            await self.metrics_listener.start(host, port, reuse_port=self.telemetry.exchange is not None)
        if self.telemetry.exchange is not None:
            self._publisher = asyncio.get_running_loop().create_task(self.telemetry.publish_every(), name="metrics")
        log.info("routing %d model(s) over %d instance(s)", len(self.table.pools), len(self.table.all_instances()))
        self._apply_accounting(config)
        self._started = True
        self._apply_redaction(config)
        self.health.watch(self.table.all_instances())
        if self.freeze_heap:
            # The store's libraries and migrations left a large heap that lives as long as the process: keep
            # the collector from walking it again and again (see cli._tune_gc).
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        if self.metrics_listener is not None:
            await self.metrics_listener.aclose()
        await self.health.aclose()
        if self._tasks:  # a store being opened, quotas being seeded, a usage recorder's last writes
            await asyncio.wait(self._tasks, timeout=5)
        if self._publisher is not None:
            self._publisher.cancel()
        self.telemetry.close()
        for task in (self._refresher, self._pruner):
            if task is not None:
                task.cancel()  # a prune stopped between or within a batch leaves only fewer rows to delete
                await asyncio.gather(task, return_exceptions=True)
        if self.recorder is not None:
            await self.recorder.aclose()
        if self.store is not None:
            await self.store.close()
        await self.transport.aclose()


def create_app(config: Config, *, transport: Transport | None = None) -> Gateway:
    return Gateway(config, transport=transport)
