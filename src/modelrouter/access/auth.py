"""Client API keys on the request path: who is calling, and may they use this model?

Keys come from the config (secrets hashed at load) and from the store (created by the CLI or admin API). Only
SHA-256 hashes are held; a presented key is hashed and looked up, then compared in constant time. The key ring
is replaced whole when the store's key version changes (polled every ``store.refresh_interval``), so a key
created, disabled or revoked anywhere is honoured within about a second.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config.model import ApiKeyConfig, KeyQuotas, LimitRule
from ..errors import AuthenticationFailed, PermissionDenied, echo
from ..store.records import KeyRecord
from .keys import hash_secret
from .limits.quota import key_rate_rules

__all__ = ["KeyRing", "Principal", "hash_secret", "secret_from_headers"]


@dataclass(slots=True, frozen=True)
class Principal:
    """An authenticated client key."""

    id: str
    name: str
    hash: str
    enabled: bool = True
    expires_at: float | None = None
    models: frozenset[str] = frozenset()  # empty: every model
    services: frozenset[str] = frozenset()  # empty: every service
    quotas: KeyQuotas = KeyQuotas()  # noqa: RUF009 - a frozen model, safe to share
    limits: tuple[LimitRule, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    # Derived once (not per request): the key's own limits plus its per-minute quotas as rules, and whether it
    # has any daily/monthly quota to count.
    rules: tuple[LimitRule, ...] = field(init=False)
    has_quota: bool = field(init=False)

    def __post_init__(self) -> None:
        q = self.quotas
        object.__setattr__(self, "rules", self.limits + key_rate_rules(q))
        has = any(v is not None for v in (q.daily_requests, q.daily_tokens, q.monthly_requests, q.monthly_tokens))
        object.__setattr__(self, "has_quota", has)

    def may_use(self, service: str, requested: str, model: str) -> bool:
        if self.services and service not in self.services:
            return False
        return not self.models or requested in self.models or model in self.models

    def check(self, service: str, requested: str, model: str) -> None:
        if not self.may_use(service, requested, model):
            raise PermissionDenied(f"This API key may not use the model '{echo(requested)}'", param="model")


def principal_from_config(key: ApiKeyConfig) -> Principal:
    digest = key.hash.removeprefix("sha256:") if key.hash else hash_secret(key.key or "")
    return Principal(
        id=f"config:{key.name}",
        name=key.name,
        hash=digest,
        enabled=key.enabled,
        expires_at=key.expires_at,
        models=frozenset(key.models),
        services=frozenset(key.services),
        quotas=key.quotas,
        limits=key.limits,
        metadata=dict(key.metadata),
    )


def principal_from_record(record: KeyRecord) -> Principal:
    """A key from the store (see ``store.KeyRecord``)."""
    return Principal(
        id=f"store:{record.id}",
        name=record.name,
        hash=record.hash,
        enabled=record.enabled,
        expires_at=record.expires_at,
        models=frozenset(record.models),
        services=frozenset(record.services),
        quotas=record.quotas,
        limits=tuple(record.limits),
        metadata=dict(record.metadata),
    )


_SEEN_MAX = 4096  # remembered header values of valid keys; beyond that the table starts over


class KeyRing:
    def __init__(self, principals: Iterable[Principal] = ()) -> None:
        self._by_hash: dict[str, Principal] = {}
        self._seen: dict[tuple[bytes | None, bytes | None], Principal] = {}
        self.replace(principals)

    def replace(self, principals: Iterable[Principal]) -> None:
        """Swap in a new set of keys at once (a request sees the old set or the new one, never a mix)."""
        self._by_hash = {p.hash: p for p in principals}
        self._seen = {}

    def authenticate_headers(self, authorization: bytes | None, x_api_key: bytes | None) -> Principal:
        """The key a request's headers carry. Headers that already authenticated since the last ``replace`` are
        looked up directly, skipping the decode and the SHA-256 (a third of the cost of auth). Only headers
        that carried a valid key are remembered, so guessing cannot fill the table; it is bounded anyway."""
        headers = (authorization, x_api_key)
        principal = self._seen.get(headers)
        if principal is None:
            principal = self.authenticate(secret_from_headers(authorization, x_api_key))
            if len(self._seen) >= _SEEN_MAX:
                self._seen = {}
            self._seen[headers] = principal
        elif principal.expires_at is not None and principal.expires_at <= time.time():
            return self.authenticate(secret_from_headers(authorization, x_api_key))  # raises "has expired"
        return principal

    def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."
            )
        digest = hash_secret(secret)
        principal = self._by_hash.get(digest)
        # The dict lookup finds the candidate; the final comparison does not leak how much of a hash matched.
        if principal is None or not hmac.compare_digest(principal.hash, digest):
            raise AuthenticationFailed(f"Incorrect API key provided: {_shown(secret)}")
        if not principal.enabled:
            raise AuthenticationFailed(f"The API key {_shown(secret)} is disabled")
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise AuthenticationFailed(f"The API key {_shown(secret)} has expired")
        return principal

    def __len__(self) -> int:
        return len(self._by_hash)

    def __repr__(self) -> str:
        return f"<KeyRing {len(self._by_hash)} key(s)>"


def _shown(secret: str) -> str:
    """Like OpenAI: enough of a key to recognise it, never enough to use it."""
    return f"{secret[:6]}***{secret[-4:]}" if len(secret) > 12 else "***"


def secret_from_headers(authorization: bytes | None, x_api_key: bytes | None) -> str | None:
    if authorization is not None:
        scheme, _, value = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key is not None:
        return x_api_key.decode("latin-1").strip() or None
    return None
