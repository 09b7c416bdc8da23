"""The app factory: the one place where config, routing, transport and the front door are wired together."""

from __future__ import annotations

import logging
from ipaddress import ip_network

from .auth import KeyRing, Principal, principal_from_config
from .config.model import Config
from .front.asgi import FrontDoor
from .pipeline import Pipeline
from .routing.health import HealthChecker
from .routing.router import RoutingTable
from .upstream.aiohttp_transport import AiohttpTransport
from .upstream.base import Transport

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("modelrouter")


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
        )
        self._config_keys: list[Principal] = []
        self._store_keys: list[Principal] = []
        self._apply_auth(config)

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

    @property
    def table(self) -> RoutingTable:
        return self.pipeline.table

    def reload(self, config: Config) -> None:
        """Build a new routing table (keeping the state of unchanged instances) and swap it in atomically.
        Size limits in ``server`` apply to new requests too; the listen address needs a restart."""
        self.pipeline.swap(RoutingTable(config, previous=self.pipeline.table))
        self._apply_auth(config)
        if self._started:
            self.health.watch(self.table.all_instances())
        server = config.server
        self.max_body_bytes = server.max_body_bytes
        self.max_upload_bytes = server.max_upload_bytes
        self.spool_bytes = server.spool_memory_bytes
        self.config = config

    async def startup(self) -> None:
        log.info("routing %d model(s) over %d instance(s)", len(self.table.pools), len(self.table.all_instances()))
        self.health.watch(self.table.all_instances())
        self._started = True

    async def shutdown(self) -> None:
        await self.health.aclose()
        await self.transport.aclose()


def create_app(config: Config, *, transport: Transport | None = None) -> Gateway:
    return Gateway(config, transport=transport)
