"""What the store hands out: frozen dataclasses, never rows or ORM objects, so callers cannot write through
them and do not depend on SQLAlchemy. Times are unix seconds (floats), as in the config file.

Exceptions::

    StoreError              the store cannot do what was asked (unreachable database, revoked key ...)
    ├── NoStoreError        opened without ``create``, and there is no store there (no file, no schema)
    ├── NotFoundError       no such key / admin (also a LookupError)
    └── ConflictError       a unique value is taken (admin username, key name)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..config.model import KeyQuotas, LimitRule

__all__ = [
    "KEEP",
    "MIN_PASSWORD_LENGTH",
    "PASSWORD_ENV",
    "ROLES",
    "AdminRecord",
    "AuditRecord",
    "ConfigVersion",
    "ConflictError",
    "Keep",
    "KeyRecord",
    "NoStoreError",
    "NotFoundError",
    "Role",
    "StoreError",
    "UsageRecord",
    "UsageTotal",
]

Role = Literal["admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "viewer")
MIN_PASSWORD_LENGTH = 8  # for admin passwords, wherever they are set (CLI, admin API, first start)
PASSWORD_ENV = "MODELROUTER_ADMIN_PASSWORD"  # an admin password given by the environment (CLI, first start)


class StoreError(Exception):
    pass


class NoStoreError(StoreError):
    """Nothing to open at ``where``: no SQLite file, or a database without modelrouter's schema."""

    def __init__(self, where: str, why: str | None = None) -> None:
        self.where = where
        super().__init__(f"no store at {where}" + (f" ({why})" if why else ""))


class NotFoundError(StoreError, LookupError):
    pass


class ConflictError(StoreError):
    pass


class StaleVersionError(ConflictError):
    """A config change was based on a version that is no longer the newest (someone else changed it first)."""

    def __init__(self, expected: int | None, latest: int | None) -> None:
        self.expected = expected
        self.latest = latest
        super().__init__(
            f"the config changed meanwhile: this change is based on version {expected}, the current one is "
            f"{latest}; reload it and apply your change again"
        )


class Keep(enum.Enum):
    KEEP = "keep"


KEEP = Keep.KEEP  # ``update_key(expires_at=KEEP)``: leave the expiry as it is (None would mean never)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A client API key as stored. ``hash`` is the SHA-256 hex of the secret; the secret itself is not kept."""

    id: int
    name: str
    prefix: str
    hash: str
    enabled: bool
    expires_at: float | None
    models: tuple[str, ...]  # allowed models (empty: all)
    services: tuple[str, ...]  # allowed services (empty: all)
    quotas: KeyQuotas
    limits: tuple[LimitRule, ...]
    metadata: Mapping[str, str]
    created_at: float
    updated_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def is_active(self, now: float) -> bool:
        """Whether this key may authenticate at ``now``: enabled, not revoked, not expired."""
        return self.enabled and self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public_view(self, now: float) -> dict[str, Any]:
        """What the CLI and the admin API show of a key: never its hash (printed output ends up in tickets
        and chat), and the secret only once, by the caller, at creation."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "enabled": self.enabled,
            "active": self.is_active(now),
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "models": list(self.models),
            "services": list(self.services),
            "quotas": self.quotas.model_dump(exclude_none=True),
            "limits": [rule.model_dump(mode="json", exclude_defaults=True) for rule in self.limits],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """An admin user, without the password hash."""

    id: int
    username: str
    role: Role
    disabled: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One finished request. ``id`` is None until stored. ``key_id`` is the gateway's key id as text
    (``auth.Principal.id``): ``"store:<KeyRecord.id>"`` or ``"config:<name>"`` for keys from the config file."""

    ts: float
    model: str
    endpoint: str
    status: int
    key_id: str | None = None
    instance: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None  # time to first token (streaming only)
    bytes_in: int | None = None
    bytes_out: int | None = None
    id: int | None = None


# The columns a usage record writes (its id is the database's).
USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UsageRecord) if f.name != "id")


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Sums over usage records of one (key, model), or of one (day, key, model) when totals are asked per day.
    ``errors`` counts statuses >= 400; ``last_used`` is the newest record's time."""

    key_id: str | None
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    bytes_in: int
    bytes_out: int
    last_used: float | None = None
    day: str | None = None  # "YYYY-MM-DD" in the asked offset from UTC, when per day

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    ts: float
    actor: str
    action: str
    target: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One version of the config: the YAML text as written (``${ENV}`` references unexpanded), who made it,
    when and why. Versions are immutable and numbered 1, 2, 3 … in the order they were made."""

    id: int
    created_at: float
    author: str
    comment: str
    config: str
