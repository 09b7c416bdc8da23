"""Admin routes for client keys: list, create (the secret shown once), disable, enable, revoke, rotate, delete."""

from __future__ import annotations

import logging

from ..config.model import KeyQuotas, ServiceName
from ..errors import NotFound
from ..store.records import KeyRecord
from .calls import Call, Reply, Routes, invalid
from .schema import Body, Name, NonBlank, UnixTime, list_of, obj, ref

__all__ = [
    "NewKey",
    "create_key",
    "delete_key",
    "disable_key",
    "enable_key",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "routes",
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
    quotas = body.quotas or KeyQuotas()
    record, secret = await call.store.create_key(
        body.name, models=models, services=services, expires_at=body.expires_at, quotas=quotas
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
        },
    )
    return 201, {**record.public_view(call.clock()), "secret": secret}


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
