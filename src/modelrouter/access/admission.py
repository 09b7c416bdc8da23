"""Traffic control around one request: rate limits, concurrency caps and quotas before it is forwarded, and
afterwards the reconciliation of token estimates with real usage and the usage record.

Before: every limit that applies (global, service, model, API key, client IP, the request's ``user``; the key's
own limits and its per-minute quotas) is taken at once - if one refuses, none is consumed - then the key's
concurrency cap and daily/monthly quotas. Token limits take an estimate (prompt size + ``max_tokens``).
After: the difference between the estimate and the real usage is applied, the concurrency slot freed and a
usage record buffered for the store.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from typing import Any, NoReturn

from ..config.model import Config, LimitRule
from ..endpoints import Endpoint
from ..errors import QuotaExceeded, RateLimited, echo
from ..http.multipart import Form
from ..observability.meter import Meter
from ..observability.metrics import Metrics
from ..routing.router import RoutingTable
from ..state import SharedState
from .auth import Principal
from .limits import Concurrency, Decision, Limiter, MemoryBackend, Quota
from .limits.shared import RedisBackend, SharedConcurrency, SharedQuota
from .plans import BY_IP, BY_USER, FIXED, Item, Plan, bucket_tag, describe, limit_headers
from .records import UsageRecord, UsageRecorder
from .usage import estimate_completion_tokens, estimate_prompt_tokens

__all__ = ["Accounting", "AdmissionState", "Ticket"]


class Ticket:
    """What one admitted request took, to be settled when it ends (exactly once)."""

    __slots__ = (
        "bytes_in",
        "concurrency_key",
        "endpoint",
        "estimate",
        "items",
        "meter",
        "model",
        "principal",
        "prompt_estimate",
        "quota_key",
        "started",
    )

    def __init__(self, endpoint: Endpoint, model: str, principal: Principal | None, meter: Meter | None) -> None:
        self.endpoint = endpoint
        self.model = model
        self.principal = principal
        self.meter = meter
        self.items: list[Item] = []  # token-unit buckets taken with the estimate, for reconciliation
        self.estimate = 0
        self.prompt_estimate = 0
        self.concurrency_key: str | None = None
        self.quota_key: str | None = None
        self.started = time.monotonic()
        self.bytes_in = 0


class AdmissionState:
    """What admission control counts, carried over from one config to the next: limiter buckets (those of
    unchanged rules keep their state: a rule's bucket is named by its content), requests in flight per key, and
    quota counts."""

    __slots__ = ("concurrency", "limiter", "quota")

    def __init__(self, shared: SharedState | None = None) -> None:
        # state.backend: redis - the limiter's buckets live there, shared with every process and replica.
        self.limiter = Limiter(MemoryBackend() if shared is None else RedisBackend(shared))
        self.concurrency = Concurrency() if shared is None else SharedConcurrency(shared)
        self.quota = Quota() if shared is None else SharedQuota(shared)

    async def aclose(self) -> None:
        """At shutdown: give back the units leased ahead from shared buckets."""
        backend = self.limiter.backend
        if isinstance(backend, RedisBackend):
            await backend.aclose()


class Accounting:
    """Admission control for one config: its rules, and the plans worked out from them, over the carried-over
    ``state``. A new config gets a new ``Accounting`` (in the config bundle); a request is admitted and settled
    by the same one, so a reload between the two cannot mix two configs' limits."""

    def __init__(
        self,
        config: Config,
        recorder: UsageRecorder | None = None,
        *,
        state: AdmissionState | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.state = state if state is not None else AdmissionState()
        self.limiter = self.state.limiter
        self.concurrency = self.state.concurrency
        self.quota = self.state.quota
        self.recorder = recorder
        self.metrics = metrics  # counts refusals by scope when metrics are on
        self.rules: tuple[LimitRule, ...] = tuple(r for r in config.limits if r.scope != "instance")
        self._plans: dict[tuple[int, str, str], Plan] = {}
        self._last: tuple[Principal | None, str, str, Plan] | None = None
        self.instance_rules: tuple[LimitRule, ...] = tuple(r for r in config.limits if r.scope == "instance")

    def _refused(self, scope: str) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.rate_limited, (scope,))

    async def instance_limit(self, endpoint: Endpoint, model: str, instance_id: str) -> RateLimited | None:
        """Take one request from each ``scope: instance`` limit of the chosen instance; a refusal sends the
        request to another instance (all or nothing, like the other limits)."""
        items: list[Item] = []
        for rule in self.instance_rules:
            if rule.services and endpoint.service not in rule.services:
                continue
            if rule.models and model not in rule.models:
                continue
            items.append((f"{bucket_tag(rule)}|instance:{instance_id}", 1.0, rule))
        if not items:
            return None
        refusal, decisions = await self.limiter.check(items)
        if refusal is None:
            return None
        rule = items[len(decisions) - 1][2]
        self._refused("instance")
        return RateLimited(
            f"Every instance of model '{echo(model)}' is at its rate limit ({describe(rule)})",
            headers=limit_headers(refusal, rule),
        )

    def _plan(self, endpoint: Endpoint, model: str, principal: Principal | None) -> Plan:
        """The limits that apply to requests of this key for this endpoint and model: worked out once, then
        looked up (the rules only change with the config or the keys, and either brings new objects)."""
        last = self._last
        if last is not None and last[0] is principal and last[1] == endpoint.service and last[2] == model:
            return last[3]  # the same key and model as the request before: the usual case, without a dict lookup
        cache_key = (id(principal), endpoint.service, model)
        plan = self._plans.get(cache_key)
        if plan is not None and plan.principal is principal:
            self._last = (principal, endpoint.service, model, plan)
            return plan
        rules = self.rules + principal.rules if principal is not None else self.rules
        plan = Plan(principal)
        for rule in rules:
            if rule.services and endpoint.service not in rule.services:
                continue
            if rule.models and model not in rule.models:
                continue
            scope = rule.scope
            tag = bucket_tag(rule)
            if scope == "global":
                plan.add(f"{tag}|global", FIXED, rule)
            elif scope == "service":
                plan.add(f"{tag}|service:{endpoint.service}", FIXED, rule)
            elif scope == "model":
                plan.add(f"{tag}|model:{model}", FIXED, rule)
            elif scope == "key":
                if principal is not None:
                    plan.add(f"{tag}|key:{principal.id}", FIXED, rule)
            elif scope == "ip":
                plan.add(f"{tag}|ip:", BY_IP, rule)
            elif scope == "user":
                plan.add(f"{tag}|user:", BY_USER, rule)
        if len(self._plans) > 10_000:
            self._plans.clear()
        self._plans[cache_key] = plan
        self._last = (principal, endpoint.service, model, plan)
        return plan

    def admit_now(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any] | Form,
        ip: str | None,
        principal: Principal | None,
        table: RoutingTable,
        meter: Meter,
    ) -> Ticket | None:
        """``admit`` without a coroutine, where nothing in it can wait: in-process limits of buckets that never
        hold a request, and a key without a concurrency cap or daily/monthly quotas - what most requests are. None
        when something may wait; the caller then awaits ``admit``."""
        if self.limiter.shared or (
            principal is not None and (principal.has_quota or principal.quotas.max_concurrent is not None)
        ):
            return None
        ticket, plan = self._ticket(endpoint, payload, principal, table, meter)
        if plan.may_wait:
            return None
        if plan.steps:
            items = self._items(plan, ticket, payload, ip)
            refusal, decisions = self.limiter.check_now(items)
            if refusal is not None:
                self._refuse(refusal, items[len(decisions) - 1][2])
        return ticket

    async def admit(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any] | Form,
        ip: str | None,
        principal: Principal | None,
        table: RoutingTable,
        meter: Meter,
    ) -> Ticket:
        ticket, plan = self._ticket(endpoint, payload, principal, table, meter)
        items: list[Item] = []
        wait = 0.0
        if plan.steps:
            items = self._items(plan, ticket, payload, ip)
            if self.limiter.shared:
                refusal, decisions = await self.limiter.check(items)
            else:  # without a coroutine per request
                refusal, decisions = self.limiter.check_now(items)
            if refusal is not None:
                self._refuse(refusal, items[len(decisions) - 1][2])  # decisions end with the refusing bucket's
            if plan.may_wait:
                wait = max(d.wait for d in decisions)
        if principal is not None:
            cap = principal.quotas.max_concurrent
            if cap is not None:
                if not await self.concurrency.acquire(principal.id, cap):
                    self._refused("concurrency")
                    await self._give_back(ticket, items)
                    raise RateLimited(
                        f"Too many concurrent requests for this API key (limit {cap})",
                        headers=[(b"retry-after", b"1")],
                    )
                ticket.concurrency_key = principal.id
            if principal.has_quota:
                quota = await self.quota.take(principal.id, principal.quotas, float(ticket.estimate))
                if quota is not None:
                    self._refused("quota")
                    await self._give_back(ticket, items)
                    raise QuotaExceeded(
                        f"You exceeded your {quota.quota.replace('_', ' ')} quota "
                        f"({quota.used:.0f} of {quota.limit:.0f}).",
                        headers=[(b"retry-after", str(math.ceil(quota.retry_after)).encode())],
                    )
                ticket.quota_key = principal.id
        if wait > 0:
            await asyncio.sleep(wait)  # leaky bucket: smooth the request into its slot
        return ticket

    def _ticket(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any] | Form,
        principal: Principal | None,
        table: RoutingTable,
        meter: Meter,
    ) -> tuple[Ticket, Plan]:
        """The request's ticket, with its token estimate, and the plan of the limits that apply to it."""
        requested = payload.get("model")
        model = table.aliases.get(requested, requested) if isinstance(requested, str) else ""
        meter.needs_usage = True
        meter.model = model  # the routing sets the pool's name; this one shows on a refusal
        ticket = Ticket(endpoint, model, principal, meter)
        if isinstance(payload, dict):
            # From the text itself, not the body's size: JSON's overhead would over-reserve and refuse requests
            # that real usage would have let through.
            ticket.prompt_estimate = estimate_prompt_tokens(payload)
            ticket.estimate = ticket.prompt_estimate + estimate_completion_tokens(payload)
        return ticket, self._plan(endpoint, model, principal)

    @staticmethod
    def _items(plan: Plan, ticket: Ticket, payload: dict[str, Any] | Form, ip: str | None) -> list[Item]:
        """The buckets this request takes from, with what it takes from each; its token buckets also go on the
        ticket, to be reconciled with the real usage."""
        estimate = float(ticket.estimate)
        if plan.simple:
            laid, places = plan.layout(ip)
            items: list[Any] = laid.copy()
            if places:
                tokens = []
                for place, bucket, token_cap, rule in places:
                    # A token estimate larger than the bucket could never pass; it then waits for a full bucket
                    # instead (real usage is reconciled afterwards either way).
                    items[place] = item = (bucket, token_cap if token_cap < estimate else estimate, rule)
                    tokens.append(item)
                ticket.items = tokens
            return items
        items = []
        tokens = []
        for bucket, how, rule, token_cap, fixed in plan.steps:
            if fixed is not None:
                items.append(fixed)
                continue
            if how is BY_IP:
                if ip is None:
                    continue
                bucket += ip
            elif how is BY_USER:
                user = payload.get("user")
                if not isinstance(user, str) or not user:
                    continue
                bucket += user
            if token_cap == 0.0:
                items.append((bucket, 1.0, rule))
                continue
            item = (bucket, token_cap if token_cap < estimate else estimate, rule)
            items.append(item)
            tokens.append(item)
        if tokens:
            ticket.items = tokens
        return items

    def _refuse(self, refusal: Decision, rule: LimitRule) -> NoReturn:
        self._refused(rule.scope)
        raise RateLimited(
            f"Rate limit reached ({describe(rule)}). Try again in {refusal.retry_after:.1f}s.",
            headers=limit_headers(refusal, rule),
        )

    def _reconcile(self, items: list[Item]) -> None:
        if self.limiter.shared:
            _run_now(self.limiter.reconcile(items), shared=True)
        else:
            self.limiter.reconcile_now(items)

    async def _give_back(self, ticket: Ticket, items: list[Item]) -> None:
        self._reconcile([(key, -cost, rule) for key, cost, rule in items])
        if ticket.concurrency_key is not None:
            self.concurrency.release(ticket.concurrency_key)
            ticket.concurrency_key = None

    def settle(self, ticket: Ticket, status: int) -> None:
        """Called once when the request ended, however it ended. Synchronous: it may run while the request's
        task is being cancelled; the memory backend's corrections are applied at once."""
        meter = ticket.meter
        assert meter is not None
        if ticket.concurrency_key is not None:
            self.concurrency.release(ticket.concurrency_key)
            ticket.concurrency_key = None
        meter.settle(ticket.prompt_estimate)
        used = meter.prompt_tokens + meter.completion_tokens if status < 400 else 0
        delta = used - ticket.estimate
        if delta and ticket.items:
            corrections = [(key, delta, rule) for key, _, rule in ticket.items]
            limiter = self.limiter
            if limiter.shared:
                _run_now(limiter.reconcile(corrections), shared=True)
            else:  # _reconcile, inlined: this runs at the end of every request with token limits
                limiter.backend.adjust_all(corrections, limiter.clock())  # type: ignore[attr-defined]
        if ticket.quota_key is not None and delta:
            _run_now(self.quota.reconcile(ticket.quota_key, tokens=float(delta)), shared=self.limiter.shared)
        if self.recorder is not None:
            principal = ticket.principal
            self.recorder.record(
                UsageRecord(
                    ts=time.time(),
                    key_id=principal.id if principal is not None else None,
                    model=ticket.model,
                    instance=meter.instance,
                    endpoint=ticket.endpoint.name,
                    status=status,
                    prompt_tokens=meter.prompt_tokens,
                    completion_tokens=meter.completion_tokens,
                    latency_ms=(time.monotonic() - ticket.started) * 1000,
                    ttft_ms=None if meter.first_at is None else (meter.first_at - ticket.started) * 1000,
                    bytes_in=ticket.bytes_in,
                    bytes_out=meter.bytes_out,
                )
            )


def _run_now(coro: Coroutine[Any, Any, None], shared: bool) -> None:
    """Run a correction: an in-process backend's to completion at once, without an event-loop turn (it never
    suspends); the shared state's (a call to Redis) as a task, held here until it ends."""
    if shared:
        task = asyncio.get_running_loop().create_task(coro)
        _corrections.add(task)
        task.add_done_callback(_corrections.discard)
        return
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an in-process limiter backend suspended")


_corrections: set[asyncio.Task[None]] = set()
