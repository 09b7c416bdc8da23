"""Client API keys. Only the SHA-256 of a secret is stored; every write also bumps the ``keys_version`` counter
in the same transaction, so a gateway polling that one row sees any change made by the CLI or another replica."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..access.keys import hash_secret, new_secret, prefix_of
from ..config.model import SERVICE_NAMES, KeyQuotas, LimitRule
from .aio import AsyncConnection
from .base import StoreBase
from .changes import announce
from .records import KEEP, ConflictError, Keep, KeyRecord, NotFoundError, StoreError
from .schema import KEYS_VERSION, api_keys, meta

__all__ = ["KeyStore"]


class KeyStore(StoreBase):
    async def create_key(
        self,
        name: str,
        *,
        models: Iterable[str] = (),
        services: Iterable[str] = (),
        expires_at: float | None = None,
        quotas: KeyQuotas | None = None,
        limits: Sequence[LimitRule] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new enabled key. Returns its record and the secret, which is not kept and cannot be shown again."""
        _check_name(name)
        services = _known_services(services)
        secret = new_secret()
        now = self._now()
        values = {
            "name": name,
            "prefix": prefix_of(secret),
            "hash": hash_secret(secret),
            "enabled": True,
            "expires_at": expires_at,
            "models": list(models),
            "services": list(services),
            "quotas": (quotas or KeyQuotas()).model_dump(mode="json", exclude_none=True),
            "limits": [rule.model_dump(mode="json", exclude_defaults=True) for rule in limits or ()],
            "metadata": dict(metadata or {}),
            "created_at": now,
            "updated_at": now,
            "revoked_at": None,
        }
        async with self._write() as conn:
            # Names are unique so that commands can take one instead of an id. The version bump comes first: its
            # row lock makes concurrent creators (PostgreSQL, several replicas) take turns, so the check below
            # sees a name another transaction just committed (SQLite writers take turns anyway).
            await _bump_keys_version(conn)
            taken = await conn.scalar(sa.select(api_keys.c.id).where(api_keys.c.name == name).limit(1))
            if taken is not None:
                raise ConflictError(
                    f"a key named {name!r} exists already (id {taken}); choose another name, or delete that key first"
                )
            result = await conn.execute(api_keys.insert().values(values))
            key_id = result.inserted_primary_key[0]  # type: ignore[index]  # always set for a single-row insert
            record = await _get(conn, api_keys.c.id == key_id)
        assert record is not None
        return record, secret

    async def list_keys(self) -> list[KeyRecord]:
        async with self._read() as conn:
            rows = await conn.execute(api_keys.select().order_by(api_keys.c.id))
            return [_record(row) for row in rows]

    async def get_key(self, id_or_prefix: int | str) -> KeyRecord | None:
        """By id (an int or a string of digits) or by the displayed 12-character prefix. A prefix shared by two
        keys matches neither: acting on the wrong key would be worse than asking for the id."""
        if isinstance(id_or_prefix, int) or id_or_prefix.isdigit():
            where = api_keys.c.id == int(id_or_prefix)
        else:
            where = api_keys.c.prefix == id_or_prefix
        async with self._read() as conn:
            rows = (await conn.execute(api_keys.select().where(where).limit(2))).all()
        return _record(rows[0]) if len(rows) == 1 else None

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key whose secret hashes to ``key_hash`` (hex), whatever its state: check ``is_active``."""
        async with self._read() as conn:
            return await _get(conn, api_keys.c.hash == key_hash)

    async def update_key(
        self,
        key_id: int,
        *,
        name: str | None = None,
        models: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        expires_at: float | Keep | None = KEEP,
        quotas: KeyQuotas | None = None,
        limits: Sequence[LimitRule] | None = None,
    ) -> KeyRecord:
        """Change a key's settings (what is given; ``expires_at=None`` means never), its secret kept. Every
        gateway sees the change on its next key refresh, like any key write. A revoked key stays as it is."""
        values: dict[str, Any] = {}
        if name is not None:
            _check_name(name)
            values["name"] = name
        if models is not None:
            values["models"] = list(models)
        if services is not None:
            values["services"] = list(_known_services(services))
        if not isinstance(expires_at, Keep):
            values["expires_at"] = expires_at
        if quotas is not None:
            values["quotas"] = quotas.model_dump(mode="json", exclude_none=True)
        if limits is not None:
            values["limits"] = [rule.model_dump(mode="json", exclude_defaults=True) for rule in limits]
        async with self._write() as conn:
            await _bump_keys_version(conn)  # first: its row lock orders concurrent writers (see create_key)
            current = await _require(conn, key_id)
            if current.revoked:
                raise StoreError(f"key {key_id} is revoked; its settings no longer matter — create a new key")
            if name is not None and name != current.name:
                taken = await conn.scalar(
                    sa.select(api_keys.c.id).where(api_keys.c.name == name, api_keys.c.id != key_id).limit(1)
                )
                if taken is not None:
                    raise ConflictError(f"a key named {name!r} exists already (id {taken}); choose another name")
            return await _update(conn, key_id, **values, updated_at=self._now())

    async def set_key_enabled(self, key_id: int, enabled: bool) -> KeyRecord:
        async with self._write() as conn:
            current = await _require(conn, key_id)
            if enabled and current.revoked:
                raise StoreError(f"key {key_id} is revoked and cannot be enabled again; create a new key")
            return await _update(conn, key_id, enabled=enabled, updated_at=self._now())

    async def revoke_key(self, key_id: int) -> KeyRecord:
        """Revoked for good: a revoked key never authenticates, whatever ``enabled`` says. Revoking twice keeps
        the first time."""
        async with self._write() as conn:
            current = await _require(conn, key_id)
            now = self._now()
            return await _update(conn, key_id, revoked_at=current.revoked_at or now, updated_at=now)

    async def delete_key(self, key_id: int) -> None:
        """Remove the row. Usage records keep the key's id and name."""
        async with self._write() as conn:
            result = await conn.execute(api_keys.delete().where(api_keys.c.id == key_id))
            if result.rowcount == 0:
                raise NotFoundError(f"no key with id {key_id}")
            await _bump_keys_version(conn)

    async def rotate_key(self, key_id: int) -> str:
        """A new secret for the key, with all its settings kept; the old secret stops working at once."""
        secret = new_secret()
        async with self._write() as conn:
            current = await _require(conn, key_id)
            if current.revoked:
                raise StoreError(f"key {key_id} is revoked; create a new key instead")
            await _update(conn, key_id, prefix=prefix_of(secret), hash=hash_secret(secret), updated_at=self._now())
        return secret

    async def keys_version(self) -> int:
        """A counter that changes with every key write: a one-row read, cheap enough to poll."""
        async with self._read() as conn:
            value = await conn.scalar(sa.select(meta.c.value).where(meta.c.name == KEYS_VERSION))
        return int(value or 0)

    async def all_active_keys(self) -> list[KeyRecord]:
        """Keys that may authenticate now. A key can expire after this call: check ``is_active`` on use."""
        now = self._now()
        query = api_keys.select().where(
            api_keys.c.enabled.is_(True),
            api_keys.c.revoked_at.is_(None),
            sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
        )
        async with self._read() as conn:
            rows = await conn.execute(query.order_by(api_keys.c.id))
            return [_record(row) for row in rows]


def _check_name(name: str) -> None:
    if not name.strip():
        raise ValueError("a key needs a name")
    if name.isdigit():
        raise ValueError(f"a key name cannot be only digits: {name!r} would read as a key id")


def _known_services(services: Iterable[str]) -> tuple[str, ...]:
    services = tuple(services)
    if unknown := [s for s in services if s not in SERVICE_NAMES]:
        raise ValueError(f"unknown service(s) {', '.join(unknown)} (known: {', '.join(SERVICE_NAMES)})")
    return services


async def _bump_keys_version(conn: AsyncConnection) -> None:
    await conn.execute(meta.update().where(meta.c.name == KEYS_VERSION).values(value=meta.c.value + 1))
    await announce(conn, "keys")


async def _get(conn: AsyncConnection, where: sa.ColumnElement[bool]) -> KeyRecord | None:
    row = (await conn.execute(api_keys.select().where(where))).first()
    return None if row is None else _record(row)


async def _require(conn: AsyncConnection, key_id: int) -> KeyRecord:
    record = await _get(conn, api_keys.c.id == key_id)
    if record is None:
        raise NotFoundError(f"no key with id {key_id}")
    return record


async def _update(conn: AsyncConnection, key_id: int, **values: Any) -> KeyRecord:
    await conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))
    await _bump_keys_version(conn)
    return await _require(conn, key_id)


def _record(row: sa.Row[Any]) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        hash=row.hash,
        enabled=bool(row.enabled),
        expires_at=row.expires_at,
        models=tuple(row.models),
        services=tuple(row.services),
        quotas=KeyQuotas.model_validate(row.quotas),
        limits=tuple(LimitRule.model_validate(rule) for rule in row.limits),
        metadata=dict(row.metadata),
        created_at=row.created_at,
        updated_at=row.updated_at,
        revoked_at=row.revoked_at,
    )
