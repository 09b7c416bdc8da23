"""Admin routes for watching the gateway: its live state and the traffic history of the last hour."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from ..errors import GatewayError
from ..observability.telemetry import replica_id
from .calls import Call, Reply, Routes
from .schema import Query, UnixTime, obj, ref

__all__ = ["HistoryQuery", "metrics_history", "routes", "state"]

routes = Routes()


@routes("GET", "/admin/api/state", "viewer", reply=ref("LiveState"))
async def state(call: Call) -> Reply:
    """Live state: instances (health, breaker, load, latency) and rate limits."""
    if call.live is None:
        raise GatewayError("live state is not available in this process")
    return 200, call.live()


class HistoryQuery(Query):
    model_config = ConfigDict(extra="forbid")

    since: UnixTime | None = Field(None, description="only the points after this time (what a poller has not seen)")


_RATES = {"type": "object", "additionalProperties": {"type": "object"}}


@routes(
    "GET",
    "/admin/api/metrics/history",
    "viewer",
    reply=obj(
        {
            "object": {"const": "list"},
            "enabled": {"type": "boolean"},
            "interval": {"type": "number"},
            "replica": {"type": "string"},
            "data": {
                "type": "array",
                "items": obj(
                    {"t": {"type": "number"}, "seconds": {"type": "number"}, "models": _RATES, "instances": _RATES},
                    ["t", "seconds", "models", "instances"],
                ),
            },
        },
        ["object", "enabled", "data"],
    ),
)
async def metrics_history(call: Call, query: HistoryQuery) -> Reply:
    """The traffic of the last hour, one point per sample, oldest first (for the console's charts).

    Each point covers the ``seconds`` before ``t``: per model (``*``: all models) requests, rps, error_rate (5xx
    share), client_error_rate (4xx), p50_ms/p99_ms at the gateway, prompt/completion tokens and tokens_per_min;
    per instance requests, rps, upstream p50_ms/p99_ms, ttft_p50_ms/ttft_p99_ms and the breaker window's
    error_rate. Sampled every ``observability.history_interval`` seconds from the metrics counters (the whole
    gateway's with ``--workers``); ``enabled`` is false when there is no history (``metrics`` off or interval 0)."""
    history = call.history
    return 200, {
        "object": "list",
        "enabled": history is not None,
        "interval": history.interval if history is not None else 0,
        "replica": replica_id(),
        "data": history.since(query.since) if history is not None else [],
    }
