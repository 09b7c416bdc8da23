"""What the gateway is doing now, as the admin API's ``GET /admin/api/state`` shows it: per instance its health,
breaker (and why and when it last opened), requests in flight, latency and recent error rate; per rate limit how
many buckets are live and, for a limit with a single bucket (global, service, model), how much is left in it (with
``state.backend: redis``: the buckets are in Redis; what this replica holds is the units its leases have not
spent). Read from the live objects, never from the config: a number here moves when the thing it describes
happens."""

from __future__ import annotations

import time
from typing import Any

from ..access.admission import Accounting
from ..access.limits import MemoryBackend
from ..access.limits.shared import RedisBackend
from ..access.plans import bucket_tag
from ..observability.telemetry import replica_id
from ..routing.router import RoutingTable

__all__ = ["live_state"]


def live_state(table: RoutingTable, accounting: Accounting | None, config_version: int | None) -> dict[str, Any]:
    now = time.monotonic()
    instances = []
    for inst in table.all_instances():
        breaker = inst.breaker
        requests, failures = breaker.window_counts()
        instances.append(
            {
                "id": inst.id,
                "service": inst.id.split("/", 1)[0],
                "name": inst.config.name,
                "instance": inst.name,  # as x-modelrouter-instance and the metrics label call it
                "models": list(inst.config.served_names),
                "base_url": inst.base_url,
                "weight": inst.weight,
                "healthy": inst.healthy,
                "breaker": breaker.state,
                # Why and when it last opened (kept after it closes again); null if it never has.
                "breaker_reason": breaker.reason,
                "breaker_opened_at": breaker.opened_at,
                "in_flight": inst.inflight,
                "ewma_latency_ms": round(inst.ewma * 1000, 3),
                "recent_requests": requests,
                "recent_error_rate": round(failures / requests, 4) if requests else 0.0,
                "cooldown_s": round(max(inst.cooldown_until - now, 0.0), 3),
            }
        )
    limits = []
    if accounting is not None:
        backend = accounting.limiter.backend
        shared = isinstance(backend, RedisBackend)
        states = dict(backend.items()) if isinstance(backend, MemoryBackend) else {}
        leases = backend.leases if isinstance(backend, RedisBackend) else None
        held = leases.held() if leases is not None else {}
        for rule in (*accounting.rules, *accounting.instance_rules):
            prefix = bucket_tag(rule) + "|"
            entry: dict[str, Any] = {"rule": rule.model_dump(mode="json", exclude_defaults=True)}
            if shared:
                # The buckets are in Redis, for every replica; what this one holds is its leases' unspent units.
                entry["counted_in"] = "redis"
                mine = {key[len(prefix) :]: units for key, units in held.items() if key.startswith(prefix)}
                entry["leased_here"] = dict(sorted(mine.items())[:16])
            else:
                buckets = {key[len(prefix) :]: state for key, state in states.items() if key.startswith(prefix)}
                entry["live_buckets"] = len(buckets)
                if rule.scope in ("global", "service", "model") and len(buckets) <= 16:
                    entry["buckets"] = {name: dict(state) for name, state in buckets.items() if state is not None}
            limits.append(entry)
    return {
        "replica": replica_id(),
        "config_version": config_version,
        "models": sorted({model for _service, model in table.pools}),
        "instances": instances,
        "limits": limits,
        "concurrency": accounting.concurrency.snapshot() if accounting is not None else {},
    }
