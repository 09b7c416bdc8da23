"""The limits one request is subject to, worked out from the rules: a ``Plan`` per (key, service, model) of the
buckets to take from, the names of those buckets, and how a refusal is worded (message and x-ratelimit headers).
``admission.py`` builds the plans and runs them."""

from __future__ import annotations

import hashlib
import math

from ..config.model import LimitRule
from .auth import Principal
from .limits import Decision

__all__ = ["BY_IP", "BY_USER", "FIXED", "Item", "Plan", "bucket_tag", "describe", "limit_headers"]

# What a request takes from one bucket: (bucket name, units, rule).
Item = tuple[str, float, LimitRule]

# How a plan step names its bucket: as is, or with the client IP / the request's ``user`` appended.
FIXED, BY_IP, BY_USER = "fixed", "ip", "user"


class Plan:
    """The limits for one (key, service, model): steps of (bucket name or its prefix, how to complete it, rule,
    the most tokens the bucket can hold - 0.0 for a request-counting rule - and, for a request-counting bucket
    named as is, its whole item, built once: most steps of most requests are those)."""

    __slots__ = ("by_ip", "may_wait", "principal", "simple", "steps", "tokens")

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal  # kept so that a cached plan is only used for this very key object
        self.steps: list[tuple[str, str, LimitRule, float, Item | None]] = []
        self.tokens = False  # some step counts tokens (its estimate is reconciled with real usage)
        self.may_wait = False  # some step is a leaky bucket that may hold the request
        # No step depends on the request but by its client IP (for a request count) and its token estimate (for
        # a bucket named as is): the items can then be laid out once per client IP (``layout``).
        self.simple = True
        self.by_ip: dict[str | None, tuple[list[Item | None], list[tuple[int, str, float, LimitRule]]]] = {}

    def add(self, bucket: str, how: str, rule: LimitRule) -> None:
        tokens = rule.unit == "tokens"
        token_cap = (rule.burst or rule.rate) if tokens else 0.0
        item = (bucket, 1.0, rule) if how is FIXED and not tokens else None
        self.steps.append((bucket, how, rule, token_cap, item))
        self.tokens = self.tokens or tokens
        self.may_wait = self.may_wait or rule.algorithm == "leaky_bucket"
        self.simple = self.simple and (how is FIXED or (how is BY_IP and not tokens))

    def layout(self, ip: str | None) -> tuple[list[Item | None], list[tuple[int, str, float, LimitRule]]]:
        """For a ``simple`` plan: the items of a request from ``ip``, in step order, with None where a token
        bucket's item goes, and those places (place, bucket, the most it holds, rule). Made once per client IP
        (a client sends many requests), bounded however many pass by."""
        laid = self.by_ip.get(ip)
        if laid is None:
            items: list[Item | None] = []
            places: list[tuple[int, str, float, LimitRule]] = []
            for bucket, how, rule, token_cap, fixed in self.steps:
                if fixed is not None:
                    items.append(fixed)
                elif how is BY_IP:
                    if ip is not None:
                        items.append((bucket + ip, 1.0, rule))
                else:
                    places.append((len(items), bucket, token_cap, rule))
                    items.append(None)
            if len(self.by_ip) > 4096:
                self.by_ip.clear()
            laid = self.by_ip[ip] = (items, places)
        return laid


_tags: dict[int, tuple[LimitRule, str]] = {}


def bucket_tag(rule: LimitRule) -> str:
    """A bucket-name part for a rule, equal for equal rules (so buckets survive a reload that keeps the rule) and
    the same in every process (a shared backend's buckets are named by it: Python's ``hash`` of a string differs
    from process to process). Done once per rule object, not per request."""
    entry = _tags.get(id(rule))
    if entry is None or entry[0] is not rule:
        if len(_tags) > 4096:
            _tags.clear()
        digest = hashlib.blake2b(rule.model_dump_json().encode(), digest_size=8).hexdigest()
        entry = _tags[id(rule)] = (rule, digest)
    return entry[1]


def describe(rule: LimitRule) -> str:
    per = f"{rule.period:g}s" if rule.period != 60 else "minute"
    return f"{rule.rate:g} {rule.unit} per {per}, {rule.scope} scope"


def limit_headers(refusal: Decision, rule: LimitRule) -> list[tuple[bytes, bytes]]:
    kind = b"tokens" if rule.unit == "tokens" else b"requests"
    retry = refusal.retry_after if math.isfinite(refusal.retry_after) else 3600.0
    return [
        (b"retry-after", str(max(math.ceil(retry), 1)).encode()),
        (b"retry-after-ms", str(math.ceil(retry * 1000)).encode()),
        (b"x-ratelimit-limit-" + kind, b"%d" % int(refusal.limit)),
        (b"x-ratelimit-remaining-" + kind, b"%d" % int(refusal.remaining)),
        (b"x-ratelimit-reset-" + kind, f"{refusal.reset_after:.3g}s".encode()),
    ]
