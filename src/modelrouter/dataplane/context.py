"""What one request carries down the pipeline: what the front door knows of its client (``ClientInfo``), and the
request prepared once for all its tries (``Call``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..access.auth import Principal
from ..adapters.base import Adapter
from ..endpoints import Endpoint
from ..http.multipart import Form
from ..observability.meter import Meter
from ..observability.observe import RequestTrace
from .bundle import Bundle
from .postprocess import EmbeddingsB64, RerankShape

__all__ = ["Call", "ClientInfo"]


@dataclass(slots=True)
class ClientInfo:
    ip: str | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    principal: Principal | None = None  # the client's API key, when auth is on
    meter: Meter | None = None  # set when limits, usage records or observability need this request's facts
    trace: RequestTrace | None = None  # set when tracing is on
    # A front door of another API (dialects.py): its dialect and the request as the client sent it, which goes
    # unchanged to a backend that speaks that dialect itself.
    native: tuple[str, dict[str, Any]] | None = None

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


class Call:
    """What one client request needs across its tries: prepared once, reused for every instance."""

    __slots__ = ("bundle", "client", "endpoint", "model", "payload", "post", "supply_usage", "wants_stream")

    def __init__(
        self, bundle: Bundle, endpoint: Endpoint, payload: dict[str, Any] | Form, model: str, client: ClientInfo
    ) -> None:
        self.bundle = bundle
        self.endpoint = endpoint
        self.payload = payload
        self.model = model
        self.client = client
        self.post: EmbeddingsB64 | RerankShape | None = None
        self.wants_stream = False
        self.supply_usage = False  # the client asked for stream usage: supplied if the upstream sends none
        if isinstance(payload, dict):
            if endpoint.name == "embeddings":
                self.post = EmbeddingsB64.prepare(payload)
            elif endpoint.name == "rerank":
                self.post = RerankShape.prepare(payload, model)
            self.wants_stream = endpoint.output == "sse" and payload.get("stream") is True
            options = payload.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            self.supply_usage = self.wants_stream and asked
            meter = client.meter
            if meter is not None and meter.needs_usage and self.wants_stream and not asked:
                # Ask for usage in the stream; as the client did not, its extra chunk is removed again.
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                meter.strip_usage = True

    def native_for(self, adapter: Adapter) -> dict[str, Any] | None:
        """The client's own request when ``adapter`` speaks its front door's dialect (it then goes unchanged)."""
        native = self.client.native
        return native[1] if native is not None and native[0] == adapter.native else None
