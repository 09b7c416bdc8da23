"""The app factory: the one place where config, routing, transport and the front door are wired together.

``Gateway`` builds the config bundle and swaps it on reload, opens the store and starts its background work
(``control/follow.py``: keys and config versions other processes write, pruning), health checks,
telemetry and the admin API."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any

from . import store as persistence
from .access.admission import Accounting, AdmissionState
from .access.auth import KeyRing, Principal, principal_from_config, principal_from_record
from .access.records import UsageRecorder, recorder_for
from .admin import AdminApp, ensure_first_admin
from .config.load import ConfigError
from .config.model import Config
from .control.catalog import endpoints_view
from .control.follow import StoreFollower
from .control.housekeeping import seed_quotas
from .control.livestate import live_state
from .control.openapi import openapi_json
from .control.source import ConfigControl
from .dataplane.bundle import Bundle
from .dataplane.front import FrontDoor
from .dataplane.masks import ContentMasks
from .dataplane.pipeline import Pipeline
from .http.asgi import Receive, Scope, Send
from .observability.observe import Observe
from .observability.redaction import install_log_redaction
from .observability.telemetry import Live, MetricsListener, Telemetry
from .resilience.health import HealthChecker
from .routing.router import RoutingTable
from .runtime.promises import PerWorkerKeys, worker_refusals
from .runtime.workers import MetricsExchange
from .state import SharedState
from .upstream.base import Transport
from .upstream.clients import build_transport

if TYPE_CHECKING:
    from .store import KeyRecord, Store

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("modelrouter")


class Gateway:
    """The assembled gateway: the front door (an ASGI application) with its side services wired in.
    ``reload`` swaps in a new config without a restart: one new ``Bundle``, one assignment."""

    def __init__(self, config: Config, *, transport: Transport | None = None) -> None:
        self.config = config
        self.transport: Transport = transport if transport is not None else build_transport(config.upstream)
        self.health = HealthChecker(self.transport)
        self._started = False
        self.pipeline = Pipeline(self.transport)
        table = RoutingTable(config)
        self.front = FrontDoor(self.pipeline, Bundle.plain(config, table), startup=self.startup, shutdown=self.shutdown)
        self._config_keys: list[Principal] = []
        self._store_keys: list[Principal] = []
        # Carried from one bundle to the next: the key ring (refreshed in place by the store poll), admission counts.
        self._keyring: KeyRing | None = None
        self._admission: AdmissionState | None = None
        self.state_config = config.state  # as started with: a reload that changes it is reported, not applied
        self.upstream_config = config.upstream  # the same
        self.shared_state = SharedState(config.state) if config.state.backend == "redis" else None
        self.store: Store | None = None
        self.recorder: UsageRecorder | None = None
        # The admin API answers 503 until a store is open (the store holds admin users and tokens).
        self.front.admin = AdminApp(
            lambda: self.store,
            lambda: self.config.admin,
            trusted_proxies=lambda: self.front.bundle.trusted_proxies,
            control_getter=lambda: self.control,
            live_state=self.live_state,
            history=lambda: self.telemetry.history,
            endpoints=self.endpoints_view,
            shared=self.shared_state,
        )
        self.front.openapi = openapi_json
        self._follower: StoreFollower | None = None  # the store's keys and versions, as other processes write them
        self._per_worker = PerWorkerKeys()
        self._tasks: set[asyncio.Task[None]] = set()  # background work started by reloads (see _background)
        self._opening = False  # the store is being opened in the background
        self._timers: list[asyncio.Task[None]] = []  # metrics publishing (workers), the traffic history
        # Where the config comes from and its versions (the CLI sets one; a library user may leave it unset).
        self.control: ConfigControl | None = None
        # Set by the process owner (the CLI), not by a library user: freezing the GC heap is process-wide.
        self.freeze_heap = False
        self.telemetry = Telemetry(
            Live(
                observe=lambda: self.front.bundle.observe,
                table=lambda: self.front.bundle.table,
                recorder=lambda: self.recorder,
                active=lambda: self.front.active,
                config_version=lambda: self.control.version if self.control is not None else None,
                state_errors=lambda: self.shared_state.errors if self.shared_state is not None else None,
            )
        )
        # observability.metrics_listen as started with: bound once, at startup (a reload that changes it is
        # reported, not applied). While set, the main port does not serve /metrics.
        self.metrics_listen = config.observability.metrics_listen
        self.metrics_listener: MetricsListener | None = None
        self._exposition: Callable[[], tuple[bytes, str]] | None = None
        self._install(config, table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway as an ASGI application (for a library user's server or tests; ``modelrouter serve`` gives
        uvicorn the front door itself, one call layer fewer on every request)."""
        await self.front(scope, receive, send)

    # --- the config bundle ------------------------------------------------------------------------------------

    def _install(self, config: Config, table: RoutingTable) -> bool:
        """Build the bundle for ``config`` over the carried-over state and swap it in (one assignment). True when
        admission control came on just now (its quotas are then to be seeded from the store)."""
        bundle, admission_started = self._build(config, table)
        self.front.bundle = bundle
        self.config = config
        return admission_started

    def _build(self, config: Config, table: RoutingTable) -> tuple[Bundle, bool]:
        auth = config.auth
        self._config_keys = [principal_from_config(k) for k in auth.keys]
        keys = None
        if auth.enabled:
            if self._keyring is None:
                self._keyring = KeyRing()
            self._keyring.replace([*self._config_keys, *self._store_keys])
            keys = self._keyring
        observe = self.telemetry.apply(config, table)
        metrics = observe.metrics if observe is not None else None
        # Limits, quotas and usage records cost a little per request; with none configured, none is paid.
        accounting = None
        started = False
        if config.limits or auth.enabled or self.recorder is not None:
            if self._admission is None or self.front.bundle.accounting is None:
                # Coming on: counts start afresh (quotas seeded from the store); in Redis, they are where they were.
                self._admission = AdmissionState(self.shared_state)
                started = True
            accounting = Accounting(config, self.recorder, state=self._admission, metrics=metrics)
        redaction = config.redaction
        masks = ContentMasks(redaction.request_masks, redaction.response_masks)
        self._exposition = self.telemetry.exposition if metrics is not None else None
        bundle = dataclasses.replace(
            Bundle.plain(config, table),  # the table and the server section's limits
            keys=keys,
            trusted_proxies=tuple(ip_network(cidr, strict=False) for cidr in auth.trusted_proxies),
            accounting=accounting,
            instance_limits=accounting.instance_limit if accounting is not None and accounting.instance_rules else None,
            observe=observe,
            metrics=metrics,
            masks=masks if masks.active else None,
            metrics_exposition=None if self.metrics_listen is not None else self._exposition,
            metrics_token=config.observability.metrics_token,
        )
        return bundle, started

    def _rebuild(self) -> bool:
        """The same config and table in a new bundle: after something it is built from changed (the store opened,
        the usage recorder came or went)."""
        return self._install(self.config, self.front.bundle.table)

    # Read-only views of the serving bundle, for the CLI, the admin API and tests.
    @property
    def bundle(self) -> Bundle:
        return self.front.bundle

    @property
    def table(self) -> RoutingTable:
        return self.front.bundle.table

    @property
    def keys(self) -> KeyRing | None:
        return self.front.bundle.keys

    @property
    def accounting(self) -> Accounting | None:
        return self.front.bundle.accounting

    @property
    def observe(self) -> Observe | None:
        return self.front.bundle.observe

    @property
    def admin(self) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        """The admin API the front door serves under /admin/ (replaceable, as tests do)."""
        return self.front.admin

    @admin.setter
    def admin(self, app: Callable[[Scope, Receive, Send], Awaitable[None]] | None) -> None:
        self.front.admin = app

    @property
    def accepting(self) -> bool:
        return self.front.accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self.front.accepting = value

    @property
    def body_read_timeout(self) -> float:
        return self.front.body_read_timeout

    @body_read_timeout.setter
    def body_read_timeout(self, value: float) -> None:
        self.front.body_read_timeout = value

    def _apply_usage(self, config: Config) -> bool:
        """Usage records on or off as ``usage`` (and ``auth``) say, at startup and after every reload: a reload
        that turns auth on must record what its keys use from the next request on. True when the recorder came
        or went (the bundle, whose admission control writes to it, is then to be rebuilt)."""
        old = self.recorder
        self.recorder = recorder_for(config, self.store, old)
        if old is not None and self.recorder is None:
            self._background(old.aclose(), "usage recorder close")  # what it holds is still written
        return self.recorder is not old

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` off the request path; kept referenced until done, and awaited (bounded) at shutdown."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def store_wanted(config: Config) -> bool:
        """Without a config control (a library user's gateway), the store is opened only when keys or usage
        records need it. ``modelrouter serve`` always has one: config versions live in the store."""
        return config.auth.enabled or config.usage.enabled is True

    async def _seed_quotas(self, store: Store, *, logged: bool = True) -> None:
        """Quotas count from the store's records of the day and month. A failure is logged (quotas then count
        from zero in this process until a restart), or with ``logged=False`` (startup) raised."""
        try:
            if self.accounting is not None:
                await seed_quotas(store, self.accounting.quota, time.time())
        except Exception as exc:
            if not logged:
                raise
            log.warning("could not read today's and this month's usage for quotas from the store: %s", exc)

    def _store_keys_changed(self, records: list[KeyRecord]) -> None:
        if self.telemetry.exchange is not None and self.state_config.backend == "memory":  # a worker of several
            self._per_worker.check(records)  # keys whose quotas count per worker: said once each
        self._store_keys = [principal_from_record(r) for r in records]
        if self._keyring is not None:  # state shared by the bundles: no rebuild needed
            self._keyring.replace([*self._config_keys, *self._store_keys])

    def live_state(self) -> dict[str, Any]:
        return live_state(self.table, self.accounting, self.control.version if self.control is not None else None)

    def endpoints_view(self) -> dict[str, Any]:
        bundle = self.front.bundle  # one snapshot: the table and the config it was built from
        return endpoints_view(bundle.table, bundle.config)

    async def _open_store_later(self) -> None:
        """A library user's gateway that started without a store, and a reload turned on keys or usage records:
        open it now (in the background; config keys work at once, the store's keys once it is open)."""
        try:
            await self._open_store()
        except Exception as exc:
            log.error("could not open the store that keys or usage records need: %s", exc)
            return
        self._apply_usage(self.config)
        if self._rebuild():  # with the store's usage recorder; admission control may come on with it
            assert self.store is not None
            await self._seed_quotas(self.store)

    async def _open_store(self) -> None:
        # The store package is light; Store itself (and SQLAlchemy) loads here, when a store is wanted.
        self.store = store = await persistence.Store.open(self.config.store)
        log.info("store: %r", store)
        self._follower = follower = StoreFollower(store, lambda: self.config, self._store_keys_changed, self.control)
        if self.shared_state is not None and not store.pushes:  # SQLite, with replicas perhaps elsewhere
            try:
                await follower.claim_sqlite(self.shared_state, persistence.Store.location(self.config.store))
            except Exception:
                await store.close()
                self.store = self._follower = None
                raise
        if self.control is not None:
            await self.control.start(store)  # store mode: the newest stored version replaces the seed
        # Before log redaction is installed: custom patterns must not mask the one-time password.
        await ensure_first_admin(store)
        follower.start()

    def refusals(self, config: Config) -> list[str]:
        """Why ``config`` may not serve in this process although it validates: in a worker of ``serve --workers
        N`` with the memory state backend, limits and per-key quotas or caps would count per worker."""
        if self.telemetry.exchange is None:  # not one of several workers
            return []
        return worker_refusals(config, self.state_config.backend)

    def reload(self, config: Config) -> None:
        """Build a new bundle - a routing table keeping the state of unchanged instances, keys, limits,
        observability, size limits - and swap it in with one assignment. Requests already running finish with the
        bundle they started with. The listen address and the client-side limits need a restart. A config that
        ``refusals`` names problems for raises ConfigError, and the running one stays."""
        if problems := self.refusals(config):
            raise ConfigError("the new config", problems)
        if self._started:
            # Whatever a reload turns on works from the next request: usage records, quotas, the store.
            self._apply_usage(config)
            if self.store is None and self.store_wanted(config) and not self._opening:
                self._opening = True
                self._background(self._open_store_later(), "store open")
        table = RoutingTable(config, previous=self.front.bundle.table)
        if self._install(config, table) and self._started and self.store is not None:
            self._background(self._seed_quotas(self.store), "quota seed")
        if self._started:
            install_log_redaction(config.redaction)
            self.health.watch(table.all_instances())
        if config.state != self.state_config or config.upstream != self.upstream_config:
            log.warning("the state or upstream section changed: that needs a restart (both stay as they started)")
        if config.observability.metrics_listen != self.metrics_listen:
            log.warning(
                "observability.metrics_listen changed to %s (started with %s): that needs a restart",
                config.observability.metrics_listen,
                self.metrics_listen,
            )

    async def startup(self) -> None:
        if self.store_wanted(self.config) or self.control is not None:
            await self._open_store()
            assert self.store is not None
            self._apply_usage(self.config)  # the config may be the store's newest version now
            # Rebuilt with the store's recorder; a fresh admission state counts quotas from the store's records.
            self._admission = None
            if self._rebuild():
                await self._seed_quotas(self.store, logged=False)
        if self.metrics_listen is not None:
            from .config.model import split_address

            host, port = split_address(self.metrics_listen)
            self.metrics_listener = MetricsListener(lambda: self._exposition, lambda: self.bundle.metrics_token)
            # Workers share the address (SO_REUSEPORT); whichever answers adds up the others' counters.
            await self.metrics_listener.start(host, port, reuse_port=self.telemetry.exchange is not None)
        if self.telemetry.exchange is not None:
            self._timers.append(asyncio.get_running_loop().create_task(self.telemetry.publish_every(), name="metrics"))
        if (history := self.telemetry.start_history(self.config.observability.history_interval)) is not None:
            self._timers.append(history)
        table = self.table
        log.info("routing %d model(s) over %d instance(s)", len(table.pools), len(table.all_instances()))
        self._started = True
        install_log_redaction(self.config.redaction)
        self.health.watch(table.all_instances())
        if self.freeze_heap:
            # The store's libraries and migrations left a large heap that lives as long as the process: keep
            # the collector from walking it again and again (see cli.main._tune_gc).
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        if self.metrics_listener is not None:
            await self.metrics_listener.aclose()
        await self.health.aclose()
        if self._tasks:  # a store being opened, quotas being seeded, a usage recorder's last writes
            await asyncio.wait(self._tasks, timeout=5)
        for timer in self._timers:
            timer.cancel()
        self.telemetry.close()
        if self._follower is not None:
            await self._follower.stop()
        if self.recorder is not None:
            await self.recorder.aclose()
        if self.shared_state is not None:
            if self._admission is not None:
                await self._admission.aclose()
            await self.shared_state.aclose()
        if self.store is not None:
            await self.store.close()
        await self.transport.aclose()


def create_app(
    config: Config,
    *,
    transport: Transport | None = None,
    control: Callable[[Gateway], ConfigControl] | None = None,
    exchange: MetricsExchange | None = None,
    freeze_heap: bool = False,
) -> Gateway:
    """The gateway for ``config``. ``control`` makes where its config comes from (the CLI's file or store mode;
    a library user may leave it out); ``exchange`` is where worker processes share metrics (``serve --workers``);
    ``freeze_heap`` freezes the GC heap after startup, which is process-wide: for the process owner to decide."""
    gateway = Gateway(config, transport=transport)
    if control is not None:
        gateway.control = control(gateway)
    gateway.telemetry.exchange = exchange
    gateway.freeze_heap = freeze_heap
    return gateway
