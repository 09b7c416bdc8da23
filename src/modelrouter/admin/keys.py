"""Admin routes for client keys: list, create (the secret shown once), disable, enable, revoke, rotate, delete."""

from __future__ import annotations

import logging

from ..config.model import SERVICE_NAMES
from ..errors import NotFound, echo
from ..store.records import KeyRecord
from .calls import (
    Call,
    Reply,
    expiry,
    invalid,
    key_quotas,
    names,
    only,
    text,
)

__all__ = ["create_key", "delete_key", "disable_key", "enable_key", "list_keys", "revoke_key", "rotate_key"]

log = logging.getLogger("modelrouter.admin")


# --- client keys -----------------------------------------------------------------------------------------------


async def list_keys(call: Call) -> Reply:
    return 200, {"object": "list", "data": [k.public_view(call.clock()) for k in await call.store.list_keys()]}


async def create_key(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"name", "models", "services", "expires_at", "quotas"})
    name = text(body, "name")
    models = names(body, "models")
    services = names(body, "services")
    if unknown := [s for s in services if s not in SERVICE_NAMES]:
        raise invalid(f"unknown service(s) {echo(', '.join(unknown))} (known: {', '.join(SERVICE_NAMES)})", "services")
    expires_at = expiry(body, call.clock())
    quotas = key_quotas(body)
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
