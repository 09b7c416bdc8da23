"""The admin API's routes: one function per route, and the table that names each route's method, path and the
least role allowed to call it. ``AdminApp`` does the rest (matching, the store check, authentication, roles,
turning errors into responses); a handler only validates its input, acts on the store and writes the audit log.

Every write is audited with the acting admin's username, the client IP, and never a secret or password."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..config.model import SERVICE_NAMES, AdminConfig, KeyQuotas
from ..errors import AuthenticationFailed, InvalidRequest, NotFound, RateLimited, echo
from ..store.records import MIN_PASSWORD_LENGTH, ROLES, AdminRecord, AuditRecord, KeyRecord, Role
from .http import Request
from .ratelimit import AttemptLimiter, retry_after_header

if TYPE_CHECKING:  # the store pulls in SQLAlchemy, which a gateway without a store never loads
    from ..control.source import ConfigControl
    from ..store import Store

__all__ = ["MAX_TIME", "MIN_PASSWORD_LENGTH", "ROLE_RANK", "Call", "Route", "route"]

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


# --- session ---------------------------------------------------------------------------------------------------


async def login(call: Call) -> Reply:
    body = await call.request.json()
    _only(body, {"username", "password"})
    username = _text(body, "username")
    password = _text(body, "password", max_length=1024)
    # Checked after validation (a malformed request is no guess) and before the password hash (which is the
    # expensive part, and what a guesser is after).
    limit = call.config.login_attempts_per_minute
    ip = call.request.client_ip
    wait = call.login_limiter.check(
        (f"user:{username} ip:{ip}", limit),
        (f"ip:{ip}", limit * PER_ADDRESS),
        ("all", limit * GLOBAL),
    )
    if wait is not None:
        log.warning("admin login throttled for %r from %s", username, call.request.client_ip)
        header = retry_after_header(wait)
        raise RateLimited(
            f"Too many login attempts; try again in {header.decode()} seconds",
            headers=[(b"retry-after", header)],
        )
    admin = await call.store.verify_admin(username, password)
    if admin is None:
        await call.audit("admin.login_failed", f"admin:{username}")
        # The same answer for an unknown user, a wrong password and a disabled account.
        raise AuthenticationFailed("Incorrect username or password", code="invalid_credentials")
    ttl = call.config.token_ttl
    token = await call.store.create_token(admin.id, ttl)
    call.admin = admin
    await call.audit("admin.login", f"admin:{admin.username}")
    return 200, {
        "token": token,
        "token_type": "bearer",
        "expires_at": call.clock() + ttl,
        "username": admin.username,
        "role": admin.role,
    }


async def logout(call: Call) -> Reply:
    assert call.token is not None
    await call.store.revoke_token(call.token)
    await call.audit("admin.logout", f"admin:{call.who.username}")
    return 200, {"logged_out": True}


async def me(call: Call) -> Reply:
    return 200, _admin_view(call.who)


# --- client keys -----------------------------------------------------------------------------------------------


async def list_keys(call: Call) -> Reply:
    return 200, {"object": "list", "data": [k.public_view(call.clock()) for k in await call.store.list_keys()]}


async def create_key(call: Call) -> Reply:
    body = await call.request.json()
    _only(body, {"name", "models", "services", "expires_at", "quotas"})
    name = _text(body, "name")
    models = _names(body, "models")
    services = _names(body, "services")
    if unknown := [s for s in services if s not in SERVICE_NAMES]:
        raise _invalid(f"unknown service(s) {echo(', '.join(unknown))} (known: {', '.join(SERVICE_NAMES)})", "services")
    expires_at = _expiry(body, call.clock())
    quotas = _quotas(body)
    record, secret = await call.store.create_key(
        name, models=models, services=services, expires_at=expires_at, quotas=quotas
    )
    await call.audit(
        "key.create",
        f"key:{record.id}",
        {
            "name": record.name,
            "prefix": record.prefix,
            "models": list(models),
            "services": list(services),
            "expires_at": expires_at,
            "quotas": quotas.model_dump(exclude_none=True),
        },
    )
    return 201, {**record.public_view(call.clock()), "secret": secret}


async def disable_key(call: Call) -> Reply:
    return await _set_enabled(call, enabled=False)


async def enable_key(call: Call) -> Reply:
    return await _set_enabled(call, enabled=True)


async def _set_enabled(call: Call, *, enabled: bool) -> Reply:
    key = await _key(call)
    record = await call.store.set_key_enabled(key.id, enabled)
    await call.audit("key.enable" if enabled else "key.disable", f"key:{key.id}", {"name": key.name})
    return 200, record.public_view(call.clock())


async def revoke_key(call: Call) -> Reply:
    key = await _key(call)
    record = await call.store.revoke_key(key.id)
    await call.audit("key.revoke", f"key:{key.id}", {"name": key.name})
    return 200, record.public_view(call.clock())


async def rotate_key(call: Call) -> Reply:
    key = await _key(call)
    secret = await call.store.rotate_key(key.id)
    record = await _key(call)
    detail = {"name": key.name, "old_prefix": key.prefix, "prefix": record.prefix}
    await call.audit("key.rotate", f"key:{key.id}", detail)
    return 200, {**record.public_view(call.clock()), "secret": secret}


async def delete_key(call: Call) -> Reply:
    key = await _key(call)
    await call.store.delete_key(key.id)
    await call.audit("key.delete", f"key:{key.id}", {"name": key.name, "prefix": key.prefix})
    return 200, {"id": key.id, "deleted": True}


async def _key(call: Call) -> KeyRecord:
    key_id = int(call.params["id"])
    record = await call.store.get_key(key_id)
    if record is None:
        raise NotFound(f"no key with id {key_id}", code="key_not_found")
    return record


# --- admin users and the audit log -----------------------------------------------------------------------------


async def list_admins(call: Call) -> Reply:
    return 200, {"object": "list", "data": [_admin_view(a) for a in await call.store.list_admins()]}


async def create_admin(call: Call) -> Reply:
    body = await call.request.json()
    _only(body, {"username", "password", "role"})
    username = _text(body, "username")
    if username != username.strip():
        raise _invalid("'username' must not start or end with spaces", "username")
    password = _text(body, "password", max_length=1024)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise _invalid(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", "password")
    role = _text(body, "role")
    if role not in ROLES:
        raise _invalid(f"'role' must be one of {', '.join(ROLES)}", "role")
    record = await call.store.create_admin(username, password, role)  # `in ROLES` narrowed role to a Role
    await call.audit("admin.create", f"admin:{record.username}", {"role": record.role})
    return 201, _admin_view(record)


async def list_audit(call: Call) -> Reply:
    text = call.request.query().get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise _invalid("'limit' must be a whole number from 1 to 1000", "limit")
    return 200, {"object": "list", "data": [_audit_view(r) for r in await call.store.list_audit(int(text))]}


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


def _admin_view(record: AdminRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "username": record.username,
        "role": record.role,
        "disabled": record.disabled,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _audit_view(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "ts": record.ts,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "detail": dict(record.detail),
    }


# --- input ---------------------------------------------------------------------------------------------------


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    """Unknown fields are errors, as in the config file: a misspelt ``expires_at`` must not make a key that
    never expires."""
    if unknown := sorted(set(body) - allowed):
        raise _invalid(f"unknown field(s): {echo(', '.join(unknown))}", echo(unknown[0]), "unknown_parameter")


def _text(body: Mapping[str, Any], name: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    value = body.get(name)
    if value is None:
        raise _invalid(f"Invalid request: missing required parameter '{name}'", name, "missing_parameter")
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"'{name}' must be a non-empty string", name, "invalid_type")
    if len(value) > max_length:
        raise _invalid(f"'{name}' is longer than {max_length} characters", name)
    return value


def _names(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _invalid(f"'{name}' must be a list of non-empty strings", name, "invalid_type")
    return tuple(value)


def _expiry(body: Mapping[str, Any], now: float) -> float | None:
    value = body.get("expires_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid("'expires_at' must be a unix time in seconds, or null", "expires_at", "invalid_type")
    if value <= now:
        raise _invalid("'expires_at' is in the past", "expires_at")
    if value > MAX_TIME:
        raise _invalid("'expires_at' is after the year 9999; leave it out for a key that never expires", "expires_at")
    return float(value)


def _quotas(body: Mapping[str, Any]) -> KeyQuotas:
    value = body.get("quotas")
    if value is None:
        return KeyQuotas()
    if not isinstance(value, dict):
        raise _invalid("'quotas' must be an object", "quotas", "invalid_type")
    try:
        return KeyQuotas.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in ("quotas", *error["loc"]))
        raise _invalid(f"{where}: {error['msg']}", where) from None
