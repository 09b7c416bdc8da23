"""Leases: units of a shared bucket taken ahead by one replica, so that most admissions need no Redis call.

A Redis round trip per request costs more than the rest of the request (bench/run --redis). So when a bucket is
busy and far from its limit, the take that goes to Redis also asks for a lease: about as many units as this
replica spent from the bucket in the last ``LEASE_SECONDS`` (one such take per bucket at a time). Redis grants it
only from what is left beyond a quarter of the limit, an eighth of that and a 256th of the limit at most
(``state/limits.lua``), so leases shrink as the bucket fills and near the limit none is granted: there every
admission is decided in Redis, one at a time, and stays exact. A limit under 256 units never leases.
Every leased unit was counted in Redis when it was leased, so the replicas together never admit more than the
limit; what a lease still holds when it ends (after ``LEASE_SECONDS``, or the end of a fixed window) is given
back in one batched call, and at shutdown.

What a lease changes, and what it does not:
- a unit counts in Redis from the moment it was leased, at most ``LEASE_SECONDS`` before the request that spends
  it (a fixed window's lease ends with its window, so no unit moves from one window to the next);
- while a replica holds unspent units, another replica may be refused a little early - only far from the limit,
  where leases are granted at all, and for at most ``LEASE_SECONDS``;
- a token estimate's correction (``adjust``) is applied to the lease while it lives, so real usage still counts;
- a refusal from Redis is remembered until its retry time, for a lease's life at most: asking again before then
  would be refused again, so the replica refuses by itself (a cost at least as large), with the same Retry-After.

Leaky buckets never lease: a lease would queue requests that have not arrived yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...config.model import LimitRule
from .base import Decision

__all__ = ["LEASE_SECONDS", "Leases", "Plan"]

LEASE_SECONDS = 1.0
_MAX_LEASES = 65536  # beyond this many live leases (client IPs, users), new buckets take none

_Item = tuple[str, float, LimitRule]


class _Lease:
    __slots__ = ("asking", "limit", "remaining", "reset_at", "rule", "since", "units", "until", "used")

    def __init__(self, rule: LimitRule, now: float) -> None:
        self.rule = rule
        self.units = 0.0  # leased and not spent; negative: a correction this replica still owes Redis
        self.until = now  # when the units go back
        self.remaining = 0.0  # what Redis had left after the last grant, and its limit, for the headers
        self.limit = 0.0
        self.reset_at = now
        self.used = 0.0  # spent since ``since``: the pace the next lease is sized by
        self.since = now
        # A take asking for a lease is on its way to Redis: the takes meanwhile ask for none (a burst of
        # requests arriving together would otherwise each take a lease, far more than the pace wants).
        self.asking = False


class _Refusal:
    __slots__ = ("cost", "limit", "reset_at", "retry_at", "rule", "until")

    def __init__(self, rule: LimitRule, cost: float, decision: Decision, now: float, seconds: float) -> None:
        self.rule = rule
        self.cost = cost
        self.limit = decision.limit
        self.retry_at = now + decision.retry_after  # inf: this cost never passes
        self.reset_at = now + decision.reset_after
        # Remembered until the retry time, but not past a lease's life: units other replicas leased and did not
        # spend come back by then, and this replica should see them.
        self.until = min(self.retry_at, now + seconds)


class Plan:
    """What one request's take needs from Redis: ``asks`` as ``(key, amount, lease wanted, rule)`` for the buckets
    whose lease cannot pay, at ``places`` in the request's items, with the lease units (``credits``) that count
    toward each; the other buckets were paid from leases (given back by ``Leases.settle`` if Redis refuses)."""

    __slots__ = ("asks", "credits", "paid", "places")

    def __init__(self) -> None:
        self.asks: list[tuple[str, float, float, LimitRule]] = []
        self.places: list[int] = []
        self.credits: list[float] = []
        self.paid: list[tuple[int, Decision]] = []


class Leases:
    """The leases and remembered refusals of one replica, by bucket key. Synchronous: a step runs between two
    awaits, so it needs no lock."""

    __slots__ = ("_leases", "_owed", "_refusals", "seconds")

    def __init__(self, seconds: float = LEASE_SECONDS) -> None:
        self.seconds = seconds
        self._leases: dict[str, _Lease] = {}
        self._refusals: dict[str, _Refusal] = {}
        self._owed: list[_Item] = []  # corrections for Redis from leases that ended: unspent units, or a debt

    def plan(self, items: Sequence[_Item], now: float) -> tuple[Decision | None, list[Decision]] | Plan:
        """The request's answer when this replica can give it alone (every bucket paid from a lease, or one that
        refused lately), else the ``Plan`` of what to ask Redis."""
        plan = Plan()
        for place, (key, cost, rule) in enumerate(items):
            lease = self._leases.get(key)
            credit = 0.0
            if lease is not None and lease.rule is rule:
                if now >= lease.until:
                    self._end(key, lease)
                elif lease.units >= cost:
                    lease.units -= cost
                    lease.used += cost
                    reset = max(lease.reset_at - now, 0.0)
                    plan.paid.append((place, Decision(True, lease.remaining + lease.units, lease.limit, 0.0, reset)))
                    continue
                else:
                    credit = lease.units  # what is left counts toward this take; a debt (negative) is paid by it
            refusal = self._refusals.get(key)
            if refusal is not None and refusal.rule is rule and now < refusal.until and cost - credit >= refusal.cost:
                retry, reset = refusal.retry_at - now, max(refusal.reset_at - now, 0.0)
                decision = Decision(False, 0.0, refusal.limit, retry, reset)
                decisions = [paid for at, paid in plan.paid if at < place]
                self._give_back(items, plan)
                return decision, [*decisions, decision]
            wanted = self._wanted(lease, rule, now)
            if wanted:
                assert lease is not None
                lease.asking = True
            plan.places.append(place)
            plan.credits.append(credit)
            plan.asks.append((key, cost - credit, wanted, rule))
        if not plan.asks:
            return None, [decision for _, decision in plan.paid]
        return plan

    def settle(
        self, items: Sequence[_Item], plan: Plan, answers: list[tuple[Decision, float]], now: float
    ) -> tuple[Decision | None, list[Decision]]:
        """Redis's ``answers`` (a decision and the lease granted, per ask up to a refusal) to the request's."""
        self._asked(plan)
        decisions: list[Decision | None] = [None] * len(items)
        for place, decision in plan.paid:
            decisions[place] = decision
        for place, credit, (decision, granted) in zip(plan.places, plan.credits, answers, strict=False):
            key, cost, rule = items[place]
            if not decision.allowed:
                self._give_back(items, plan)
                if len(self._refusals) < _MAX_LEASES:
                    self._refusals[key] = _Refusal(rule, plan.asks[len(answers) - 1][1], decision, now, self.seconds)
                return decision, [d for d in decisions[:place] if d is not None] + [decision]
            decisions[place] = self._granted(key, rule, cost, credit, decision, granted, now)
        return None, [d for d in decisions if d is not None]

    def cancel(self, items: Sequence[_Item], plan: Plan) -> None:
        """The plan's asks got no answer from Redis (it is away, or the request was cancelled): give back what
        leases paid for the request."""
        self._asked(plan)
        self._give_back(items, plan)

    def adjust(self, items: Sequence[_Item], now: float) -> list[_Item]:
        """Apply corrections to the live leases of their buckets; return the others (for Redis)."""
        rest: list[_Item] = []
        for item in items:
            key, delta, rule = item
            lease = self._leases.get(key)
            if lease is not None and lease.rule is rule and now < lease.until:
                lease.units -= delta
                lease.used += delta
            else:
                rest.append(item)
        return rest

    def expired(self, now: float) -> list[_Item]:
        """End the leases whose time is over and forget old refusals; return the corrections owed to Redis."""
        for key, lease in [(key, lease) for key, lease in self._leases.items() if now >= lease.until]:
            self._end(key, lease)
            del self._leases[key]
        for key in [key for key, refusal in self._refusals.items() if now >= refusal.until]:
            del self._refusals[key]
        owed, self._owed = self._owed, []
        return owed

    def drain(self) -> list[_Item]:
        """End every lease (shutdown); return the corrections owed to Redis."""
        for key, lease in self._leases.items():
            self._end(key, lease)
        self._leases.clear()
        self._refusals.clear()
        owed, self._owed = self._owed, []
        return owed

    def held(self) -> dict[str, float]:
        """Unspent units of the live leases, by bucket key (for /admin/api/state)."""
        return {key: lease.units for key, lease in self._leases.items() if lease.units > 0}

    def __bool__(self) -> bool:
        return bool(self._leases or self._refusals or self._owed)

    def __len__(self) -> int:
        return len(self._leases)

    # -- steps ------------------------------------------------------------------------------------------------

    def _end(self, key: str, lease: _Lease) -> None:
        if lease.units:
            self._owed.append((key, -lease.units, lease.rule))
            lease.units = 0.0

    def _wanted(self, lease: _Lease | None, rule: LimitRule, now: float) -> float:
        """The lease to ask for: about what this replica spends from the bucket in ``LEASE_SECONDS``, at its pace
        since the pace was last measured (at most ten times what it spent then; Redis caps it by what is left).
        Nothing for a bucket seen for the first time, or one that may hold requests back (leaky bucket)."""
        if lease is None or lease.asking or rule.algorithm == "leaky_bucket" or rule.max_wait:
            return 0.0
        elapsed = now - lease.since
        if elapsed <= 0:
            return 0.0
        return float(math.floor(lease.used * min(self.seconds / elapsed, 10.0)))

    def _granted(
        self, key: str, rule: LimitRule, cost: float, credit: float, decision: Decision, granted: float, now: float
    ) -> Decision:
        lease = self._leases.get(key)
        if lease is None or lease.rule is not rule:
            if lease is not None:
                self._end(key, lease)
            if len(self._leases) >= _MAX_LEASES:
                return decision
            lease = self._leases[key] = _Lease(rule, now)
        self._refusals.pop(key, None)  # Redis admitted: a refusal remembered from before is out of date
        # The credit went into this take; whatever else happened to the lease meanwhile stays (spent: a debt).
        lease.units += granted - credit
        lease.remaining, lease.limit = decision.remaining, decision.limit
        lease.reset_at = now + decision.reset_after
        if granted:
            lease.until = now + self._lifetime(rule, decision)
        if now - lease.since >= self.seconds:  # the pace is measured afresh about once per lease's life
            lease.used, lease.since = 0.0, now
        lease.used += cost
        return decision._replace(remaining=decision.remaining + max(lease.units, 0.0)) if granted else decision

    def _lifetime(self, rule: LimitRule, decision: Decision) -> float:
        if rule.algorithm == "fixed_window":
            return min(self.seconds, decision.reset_after)  # a fixed window's units stay in their window
        return self.seconds

    def _asked(self, plan: Plan) -> None:
        for key, _, wanted, _ in plan.asks:
            if wanted and (lease := self._leases.get(key)) is not None:
                lease.asking = False

    def _give_back(self, items: Sequence[_Item], plan: Plan) -> None:
        """Undo the payments from leases of a refused request (all limits or none)."""
        for place, _ in plan.paid:
            key, cost, _ = items[place]
            lease = self._leases[key]
            lease.units += cost
            lease.used -= cost
        plan.paid.clear()
