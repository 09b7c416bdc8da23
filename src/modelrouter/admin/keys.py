"""Admin routes for client keys: list, create (the secret shown once), change, disable, enable, revoke, rotate,
delete."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ConfigDict, Field

from ..config.model import KeyQuotas, LimitRule, ServiceName
from ..errors import NotFound
from ..store.records import KEEP, KeyRecord
from .calls import Call, Reply, Routes, invalid
from .schema import Body, Name, NonBlank, UnixTime, list_of, obj, ref

__all__ = [
    "KeyChange",
    "NewKey",
    "create_key",
    "delete_key",
    "disable_key",
    "enable_key",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "routes",
    "update_key",
]

log = logging.getLogger("modelrouter.admin")

routes = Routes()
_KEY_STATE_ERRORS = (404, 409)  # no such key; a revoked key cannot be enabled or rotated


class NewKey(Body):
    name: Name
    models: list[NonBlank] | None = None
    services: list[ServiceName] | None = None
    expires_at: UnixTime | None = None  # in the future: checked against the clock by the handler
    quotas: KeyQuotas | None = None
    limits: list[LimitRule] | None = None


class KeyChange(Body):
    """What ``PATCH /admin/api/keys/{id}`` may change; what is left out stays as it is."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Name | None = None
    models: list[NonBlank] | None = Field(None, description="allowed models; [] for all")
    services: list[ServiceName] | None = Field(None, description="allowed services; [] for all")
    expires_at: UnixTime | None = Field(None, description="in the future; null: never expires")
    quotas: KeyQuotas | None = Field(None, description="the whole set, replacing the old one; {} for none")
    limits: list[LimitRule] | None = Field(None, description="this key's own rate limits, replacing the old ones")


@routes("GET", "/admin/api/keys", "viewer", reply=list_of(ref("Key")))
async def list_keys(call: Call) -> Reply:
    """Client keys (never a hash or a secret)."""
    return 200, {"object": "list", "data": [k.public_view(call.clock()) for k in await call.store.list_keys()]}


@routes("POST", "/admin/api/keys", "operator", reply=ref("KeyWithSecret"), status=201)
async def create_key(call: Call, body: NewKey) -> Reply:
    """Create a client key; its secret is in this reply only."""
    if body.expires_at is not None and body.expires_at <= call.clock():
        raise invalid("'expires_at' is in the past", "expires_at")
    models, services = tuple(body.models or ()), tuple(body.services or ())
    quotas, limits = body.quotas or KeyQuotas(), body.limits or []
    record, secret = await call.store.create_key(
        body.name, models=models, services=services, expires_at=body.expires_at, quotas=quotas, limits=limits
    )
    await call.audit(
        "key.create",
        f"key:{record.id}",
        {
            "name": record.name,
            "prefix": record.prefix,
            "models": list(models),
            "services": list(services),
            "expires_at": body.expires_at,
            "quotas": quotas.model_dump(exclude_none=True),
            "limits": len(limits),
        },
    )
    return 201, {**record.public_view(call.clock()), "secret": secret}


@routes("PATCH", "/admin/api/keys/{id}", "operator", reply=ref("Key"), errors=_KEY_STATE_ERRORS)
async def update_key(call: Call, body: KeyChange) -> Reply:
    """Change a client key's name, models, services, expiry, quotas or limits; its secret stays the same.

    Only the fields sent change (``expires_at: null`` removes the expiry). Every gateway process honours the change
    within ``auth.refresh_interval``. A revoked key cannot be changed (409), nor can a name be taken twice (409)."""
    given = body.model_fields_set
    if not given:
        raise invalid("give at least one of: " + ", ".join(KeyChange.model_fields), "name", "missing_parameter")
    if body.expires_at is not None and body.expires_at <= call.clock():
        raise invalid("'expires_at' is in the past", "expires_at")
    for field in given - {"expires_at"}:
        if getattr(body, field) is None:
            raise invalid(f"'{field}' cannot be null; leave it out to keep it", field)
    key = await _key(call)
    record = await call.store.update_key(
        key.id,
        name=body.name,
        models=body.models,
        services=body.services,
        expires_at=body.expires_at if "expires_at" in given else KEEP,
        quotas=body.quotas,
        limits=body.limits,
    )
    detail: dict[str, Any] = {"name": key.name}
    for field in sorted(given):
        value = getattr(body, field)
        if field == "quotas":
            value = record.quotas.model_dump(exclude_none=True)
        elif field == "limits":
            value = len(record.limits)  # how many: the rules themselves are in the key's view
        detail["new_" + field if field == "name" else field] = value
    await call.audit("key.update", f"key:{key.id}", detail)
    return 200, record.public_view(call.clock())


@routes("POST", "/admin/api/keys/{id}/disable", "operator", reply=ref("Key"), errors=_KEY_STATE_ERRORS)
async def disable_key(call: Call) -> Reply:
    """Disable a client key."""
    return await _set_enabled(call, enabled=False)


@routes("POST", "/admin/api/keys/{id}/enable", "operator", reply=ref("Key"), errors=_KEY_STATE_ERRORS)
async def enable_key(call: Call) -> Reply:
    """Enable a disabled client key."""
    return await _set_enabled(call, enabled=True)


async def _set_enabled(call: Call, *, enabled: bool) -> Reply:
    key = await _key(call)
    record = await call.store.set_key_enabled(key.id, enabled)
    await call.audit("key.enable" if enabled else "key.disable", f"key:{key.id}", {"name": key.name})
    return 200, record.public_view(call.clock())


@routes("POST", "/admin/api/keys/{id}/revoke", "operator", reply=ref("Key"), errors=_KEY_STATE_ERRORS)
async def revoke_key(call: Call) -> Reply:
    """Revoke a client key for good."""
    key = await _key(call)
    record = await call.store.revoke_key(key.id)
    await call.audit("key.revoke", f"key:{key.id}", {"name": key.name})
    return 200, record.public_view(call.clock())


@routes("POST", "/admin/api/keys/{id}/rotate", "operator", reply=ref("KeyWithSecret"), errors=_KEY_STATE_ERRORS)
async def rotate_key(call: Call) -> Reply:
    """Give a client key a new secret (in this reply only); the old one stops working."""
    key = await _key(call)
    secret = await call.store.rotate_key(key.id)
    record = await _key(call)
    detail = {"name": key.name, "old_prefix": key.prefix, "prefix": record.prefix}
    await call.audit("key.rotate", f"key:{key.id}", detail)
    return 200, {**record.public_view(call.clock()), "secret": secret}


@routes(
    "DELETE",
    "/admin/api/keys/{id}",
    "operator",
    reply=obj({"id": {"type": "integer"}, "deleted": {"const": True}}, ["id", "deleted"]),
    errors=(404,),
)
async def delete_key(call: Call) -> Reply:
    """Delete a client key."""
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
