"""The app factory: the one place where config, routing, transport and the front door are wired together."""

from __future__ import annotations

import logging
from typing import Any

from .config.model import Config
from .front.asgi import FrontDoor, Receive, Scope, Send
from .pipeline import Pipeline
from .routing.router import RoutingTable
from .upstream.aiohttp_transport import AiohttpTransport
from .upstream.base import Transport

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("modelrouter")


class Gateway:
    """The assembled gateway, an ASGI application. ``reload`` swaps in a new config without a restart."""

    def __init__(self, config: Config, *, transport: Transport | None = None) -> None:
        self.config = config
        self.transport: Transport = transport if transport is not None else AiohttpTransport()
        self.pipeline = Pipeline(RoutingTable(config), self.transport)
        server = config.server
        self.front = FrontDoor(
            self.pipeline,
            max_body_bytes=server.max_body_bytes,
            max_upload_bytes=server.max_upload_bytes,
            spool_bytes=server.spool_memory_bytes,
        )

    @property
    def table(self) -> RoutingTable:
        return self.pipeline.table

    def reload(self, config: Config) -> None:
        """Build a new routing table (keeping the state of unchanged instances) and swap it in atomically."""
        self.pipeline.swap(RoutingTable(config, previous=self.pipeline.table))
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.front(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: dict[str, Any] = await receive()
            if message["type"] == "lifespan.startup":
                log.info(
                    "routing %d model(s) over %d instance(s)",
                    len(self.table.pools),
                    len(self.table.all_instances()),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.front.accepting = False
                await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: Config, *, transport: Transport | None = None) -> Gateway:
    return Gateway(config, transport=transport)
