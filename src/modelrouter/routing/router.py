"""The routing table: (service, model name) -> pool of instances -> one instance per request.

A table is built once per config and never mutated afterwards; a reload builds a new table and swaps it in one
assignment, so a request sees one consistent table from start to end. Instances whose configuration did not
change are carried over (with their counters) from the previous table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import orjson

from ..adapters import adapter_for
from ..config.model import (
    DEFAULT_TIMEOUTS,
    Config,
    InstanceConfig,
    RetryConfig,
    ServiceConfig,
    Timeouts,
    layered,
)
from ..endpoints import ENDPOINTS_BY_SERVICE
from ..errors import ModelNotFound, echo
from .balancers import BALANCERS, Balancer
from .instance import Instance, join_url

__all__ = ["Pool", "RoutingTable"]

# How many names a "model not found" answer lists at most.
_LISTED_NAMES = 20


class Pool:
    """The instances serving one model name in one service, the balancer choosing among them, and what to do
    when they fail (retry policy, fallback models, panic mode)."""

    __slots__ = (
        "balancer",
        "fallbacks",
        "hash_on",
        "instances",
        "model",
        "panic",
        "retry",
        "service",
        "settings",
        "unavailable",
    )

    def __init__(
        self,
        service: str,
        model: str,
        instances: Sequence[Instance],
        balancer: str,
        hash_on: str,
        *,
        retry: RetryConfig | None = None,
        fallbacks: tuple[str, ...] = (),
        panic: bool = False,
        settings: ServiceConfig | None = None,
        unavailable: str | None = None,
    ) -> None:
        self.service = service
        self.model = model
        self.instances = tuple(instances)
        self.balancer: Balancer = BALANCERS[balancer](self.instances)
        self.hash_on = hash_on
        self.retry = retry or RetryConfig()
        self.fallbacks = fallbacks
        self.panic = panic
        self.settings = settings or ServiceConfig()
        self.unavailable = unavailable  # what the 503 tells a client when no instance is usable

    def usable(self, exclude: Collection[Instance] = ()) -> list[Instance]:
        """Instances a request may go to now: healthy, not cooling down after a Retry-After, breaker not open,
        and not already tried by this request. In panic mode an all-unusable pool is tried anyway."""
        now = time.monotonic()
        usable = [i for i in self.instances if i.usable(now) and i not in exclude]
        if not usable and self.panic:
            usable = [i for i in self.instances if i not in exclude]
        return usable

    def why_unusable(self) -> str:
        """What keeps each instance from taking requests now, counted ("2 unhealthy, 1 circuit open")."""
        now = time.monotonic()
        counts: dict[str, int] = {}
        for inst in self.instances:
            why = (
                "unhealthy"
                if not inst.healthy
                else "cooling down after Retry-After"
                if inst.cooldown_until > now
                else f"circuit {inst.breaker.state.replace('_', '-')}"
            )
            counts[why] = counts.get(why, 0) + 1
        return ", ".join(f"{n} {why}" for why, n in counts.items()) or "no instances"

    def select(self, key: str | None = None, exclude: Collection[Instance] = ()) -> Instance | None:
        usable = self.usable(exclude)
        return self.balancer.select(usable, key) if usable else None

    def __repr__(self) -> str:
        return f"<Pool {self.service}:{self.model} {type(self.balancer).__name__} {list(self.instances)}>"


def _instance_urls(service: str, inst: InstanceConfig) -> dict[str, str]:
    adapter = adapter_for(inst)
    urls: dict[str, str] = {}
    for i, endpoint in enumerate(ENDPOINTS_BY_SERVICE.get(service, ())):
        if inst.path and i == 0:
            # An instance `path` is taken literally, for the service's main endpoint (the first listed for it).
            urls[endpoint.name] = inst.base_url + inst.path
        elif (path := adapter.path(endpoint)) is not None:
            urls[endpoint.name] = join_url(inst.base_url, path)
    if adapter.native_path is not None:  # where a front door's request in the backend's own dialect goes
        urls["native"] = join_url(inst.base_url, adapter.native_path)
    return urls


class RoutingTable:
    """Immutable once built. ``resolve`` and ``Pool.select`` are the per-request calls."""

    def __init__(self, config: Config, previous: RoutingTable | None = None) -> None:
        self.config = config
        self.created = int(time.time())
        self.aliases: Mapping[str, str] = dict(config.aliases)
        old: dict[tuple[str, str], Instance] = {}
        if previous is not None:
            old = {inst.key: inst for inst in previous.all_instances()}
        self.pools: dict[tuple[str, str], Pool] = {}
        self._service_of_model: dict[str, list[str]] = {}
        self._instances: list[Instance] = []
        for service_name, service in config.services.items():
            self._build_service(service_name, service, old)
        self.models_body = self._models_listing()
        # Per service, the names a client may send (models, then aliases of them), for "not found" messages.
        self._served_names: dict[str, list[str]] = {}
        for served, model in self.pools:
            self._served_names.setdefault(served, []).append(model)
        for alias, target in self.aliases.items():
            for served in self._service_of_model.get(target, ()):
                if (served, alias) not in self.pools:
                    self._served_names.setdefault(served, []).append(alias)

    def _build_service(self, service_name: str, service: ServiceConfig, old: dict[tuple[str, str], Instance]) -> None:
        config = self.config
        base_timeouts = DEFAULT_TIMEOUTS[service_name]
        if service.timeouts is not None:
            base_timeouts = service.timeouts.merged_over(base_timeouts)
        members: dict[str, list[Instance]] = {}
        for inst_cfg, name in zip(service.instances, service.instance_names(), strict=True):
            timeouts: Timeouts = inst_cfg.timeouts.merged_over(base_timeouts) if inst_cfg.timeouts else base_timeouts
            instance = Instance(
                inst_cfg,
                service_name,
                _instance_urls(service_name, inst_cfg),
                timeouts,
                adapter_for(inst_cfg),
                breaker=layered(config.breaker, service.breaker, inst_cfg.breaker),
                health=layered(config.health_check, service.health_check, inst_cfg.health_check),
                name=name,
                max_response_bytes=inst_cfg.max_response_bytes or service.max_response_bytes,
            )
            kept = old.pop(instance.key, None)
            if kept is not None:
                # Same backend as before the reload: keep its counters, breaker and health, take new settings.
                kept.adopt(instance)
                instance = kept
            self._instances.append(instance)
            for name in inst_cfg.served_names:
                members.setdefault(name, []).append(instance)
        for model, declared in service.models.items():
            if declared.unavailable is not None:
                members.setdefault(model, [])  # a placeholder: a name that answers its 503, no instance behind
        retry = layered(config.retry, service.retry)
        for model, instances in members.items():
            override = service.models.get(model)
            balancer = (override.load_balance if override else None) or service.load_balance
            hash_on = (override.hash_on if override else None) or service.hash_on
            self.pools[(service_name, model)] = Pool(
                service_name,
                model,
                instances,
                balancer,
                hash_on,
                retry=retry,
                fallbacks=override.fallbacks if override else (),
                panic=service.panic_mode,
                settings=service,
                unavailable=override.unavailable if override else None,
            )
            self._service_of_model.setdefault(model, []).append(service_name)

    def _models_listing(self) -> bytes:
        seen: dict[str, dict[str, Any]] = {}
        for (_service, model), pool in self.pools.items():
            if not pool.instances:
                continue  # a placeholder: listed names are those that can answer
            seen.setdefault(model, {"id": model, "object": "model", "created": self.created, "owned_by": "modelrouter"})
        for alias in self.aliases:
            seen.setdefault(alias, {"id": alias, "object": "model", "created": self.created, "owned_by": "modelrouter"})
        self._model_objects = seen
        return orjson.dumps({"object": "list", "data": list(seen.values())})

    def names_served(self, service: str) -> list[str]:
        """The names a client may send to ``service``'s endpoints: its models, then aliases of them."""
        return list(self._served_names.get(service, ()))

    def models_visible(self, may_use: Callable[[str, str, str], bool]) -> list[str]:
        """Names (models and aliases) that ``may_use(service, requested, model)`` allows in some service."""
        visible = [
            m for m in self._model_objects if any(may_use(s, m, self.aliases.get(m, m)) for s in self._services_of(m))
        ]
        return visible

    def models_listing(self, names: list[str]) -> bytes:
        return orjson.dumps({"object": "list", "data": [self._model_objects[n] for n in names]})

    def _services_of(self, name: str) -> list[str]:
        return self._service_of_model.get(self.aliases.get(name, name), [])

    def model_object(self, model_id: str) -> bytes:
        obj = self._model_objects.get(model_id)
        if obj is None:
            raise ModelNotFound(f"The model '{echo(model_id)}' does not exist", param="model")
        return orjson.dumps(obj)

    def all_instances(self) -> list[Instance]:
        return self._instances

    def resolve(self, service: str, model: str, may_use: Callable[[str, str, str], bool] | None = None) -> Pool:
        """The pool for ``model`` (or an alias of it) in ``service``. When there is none, the 404 lists the names
        this endpoint does serve (only those ``may_use`` allows, for a restricted key), so a newcomer sees what
        to send."""
        name = self.aliases.get(model, model)
        pool = self.pools.get((service, name))
        if pool is not None:
            return pool
        elsewhere = self._service_of_model.get(name)
        if elsewhere and (may_use is None or any(may_use(s, model, name) for s in elsewhere)):
            what = f"The model '{echo(model)}' is not available for this endpoint (it serves: {', '.join(elsewhere)})"
        else:
            what = f"The model '{echo(model)}' does not exist"
        raise ModelNotFound(f"{what}; {self._names_for(service, may_use)}", param="model")

    def _names_for(self, service: str, may_use: Callable[[str, str, str], bool] | None) -> str:
        names = [
            n
            for n in self._served_names.get(service, ())
            if may_use is None or may_use(service, n, self.aliases.get(n, n))
        ]
        if not names:
            return "this endpoint serves no models"
        shown = ", ".join(names[:_LISTED_NAMES])
        more = (
            f" and {len(names) - _LISTED_NAMES} more (GET /v1/models lists them)" if len(names) > _LISTED_NAMES else ""
        )
        return f"models for this endpoint: {shown}{more}"

    def only_model(self, service: str) -> str | None:
        """The service's model name if it has exactly one (for endpoints where `model` is optional)."""
        names = [m for (s, m) in self.pools if s == service]
        return names[0] if len(names) == 1 else None

    def has_usable_instance(self) -> bool:
        return any(pool.usable() for pool in self.pools.values())

    def fallback_pools(self, pool: Pool) -> list[Pool]:
        """The pools to try, in order, after ``pool`` is exhausted (validated at load: same service)."""
        return [p for name in pool.fallbacks if (p := self.pools.get((pool.service, name))) is not None]
