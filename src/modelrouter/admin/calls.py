"""What every admin route shares: the routed request a handler sees (``Call``), the route table's entries
(``Route``, ``route``), the views of records that leave the API (never a hash, a secret already shown, or a
password), and the checks of request input. ``AdminApp`` does the rest (matching, the store check,
authentication, roles, turning errors into responses); a handler validates its input, acts on the store and
writes the audit log (with the acting admin's username and the client IP, never a secret or password)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..config.model import AdminConfig, KeyQuotas
from ..errors import InvalidRequest, echo
from ..store.records import AdminRecord, AuditRecord, Role
from .http import Request
from .ratelimit import AttemptLimiter

if TYPE_CHECKING:  # the store pulls in SQLAlchemy, which a gateway without a store never loads
    from ..control.source import ConfigControl
    from ..store import Store

__all__ = [
    "ANONYMOUS",
    "GLOBAL",
    "MAX_NAME_LENGTH",
    "MAX_TIME",
    "PER_ADDRESS",
    "ROLE_RANK",
    "Call",
    "Handler",
    "Reply",
    "Route",
    "admin_view",
    "audit_view",
    "expiry",
    "invalid",
    "key_quotas",
    "names",
    "only",
    "route",
    "text",
]

log = logging.getLogger("modelrouter.admin")

MAX_NAME_LENGTH = 200
ROLE_RANK: Mapping[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last time a database timestamp column holds
ANONYMOUS = "anonymous"  # the audit actor of a failed login: nobody is authenticated yet
# Login attempts a minute, as multiples of `admin.login_attempts_per_minute` (N), which counts per (username,
# address): an address gets 4 N over all usernames (several admins behind one NAT), the process 20 N in all (at the
# default N = 5: 100 argon2id checks a minute, ~90 ms each here, at most 15 % of a core however many addresses guess).
PER_ADDRESS = 4
GLOBAL = 20


@dataclass(slots=True)
class Call:
    """One routed request, as a handler sees it. ``admin`` and ``token`` are None only on the login route."""

    request: Request
    params: Mapping[str, str]
    store: Store
    config: AdminConfig
    clock: Callable[[], float]
    login_limiter: AttemptLimiter
    admin: AdminRecord | None = None
    token: str | None = None
    control: ConfigControl | None = None  # the gateway's config source (None: a gateway without one)
    live: Callable[[], dict[str, Any]] | None = None  # the gateway's live state, for GET /admin/api/state

    @property
    def who(self) -> AdminRecord:
        assert self.admin is not None, "only the login route runs without an admin"
        return self.admin

    async def audit(self, action: str, target: str, detail: Mapping[str, Any] | None = None) -> None:
        actor = self.admin.username if self.admin is not None else ANONYMOUS
        await self.store.audit(actor, action, target, {**(detail or {}), "ip": self.request.client_ip})


Reply = tuple[int, Any]  # status, JSON-serialisable body
Handler = Callable[[Call], Awaitable[Reply]]


# --- the route table -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str  # e.g. /admin/api/keys/{id}/disable
    handler: Handler
    role: Role | None  # the least role allowed; None: no login needed (only the login route itself)
    pattern: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else found.groupdict()


_PARAMS = {
    "id": r"[0-9]{1,18}",  # a key id: digits only, and few enough to fit a 64-bit integer column
    "version": r"[0-9]{1,9}",
}


def route(method: str, template: str, handler: Handler, role: Role | None) -> Route:
    """A route; ``{id}`` and ``{version}`` match numbers, other ``{name}``s one path segment."""
    pattern = re.escape(template)
    for name in re.findall(r"\{(\w+)\}", template):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{_PARAMS.get(name, '[^/]+')})")
    return Route(method, template, handler, role, re.compile(pattern))


# --- views: what leaves the API (never a hash, a secret already shown, or a password) --------------------------


def admin_view(record: AdminRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "username": record.username,
        "role": record.role,
        "disabled": record.disabled,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def audit_view(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "ts": record.ts,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "detail": dict(record.detail),
    }


# --- input ---------------------------------------------------------------------------------------------------


def invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def only(body: Mapping[str, Any], allowed: set[str]) -> None:
    """Unknown fields are errors, as in the config file: a misspelt ``expires_at`` must not make a key that
    never expires."""
    if unknown := sorted(set(body) - allowed):
        raise invalid(f"unknown field(s): {echo(', '.join(unknown))}", echo(unknown[0]), "unknown_parameter")


def text(body: Mapping[str, Any], name: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    value = body.get(name)
    if value is None:
        raise invalid(f"Invalid request: missing required parameter '{name}'", name, "missing_parameter")
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"'{name}' must be a non-empty string", name, "invalid_type")
    if len(value) > max_length:
        raise invalid(f"'{name}' is longer than {max_length} characters", name)
    return value


def names(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise invalid(f"'{name}' must be a list of non-empty strings", name, "invalid_type")
    return tuple(value)


def expiry(body: Mapping[str, Any], now: float) -> float | None:
    value = body.get("expires_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid("'expires_at' must be a unix time in seconds, or null", "expires_at", "invalid_type")
    if value <= now:
        raise invalid("'expires_at' is in the past", "expires_at")
    if value > MAX_TIME:
        raise invalid("'expires_at' is after the year 9999; leave it out for a key that never expires", "expires_at")
    return float(value)


def key_quotas(body: Mapping[str, Any]) -> KeyQuotas:
    value = body.get("quotas")
    if value is None:
        return KeyQuotas()
    if not isinstance(value, dict):
        raise invalid("'quotas' must be an object", "quotas", "invalid_type")
    try:
        return KeyQuotas.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in ("quotas", *error["loc"]))
        raise invalid(f"{where}: {error['msg']}", where) from None
