"""Admin users (argon2id password hashes) and their bearer tokens (random secrets stored as SHA-256).

Hashing and verifying a password take tens of milliseconds of CPU by design, so they run in a worker thread:
a login must not stall requests served by the same event loop."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..access.keys import hash_secret, new_secret
from .aio import AsyncConnection
from .base import StoreBase
from .records import ROLES, AdminRecord, ConflictError, NotFoundError, Role
from .schema import admin_tokens, admin_users

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["TOKEN_PREFIX", "AdminStore"]

TOKEN_PREFIX = "mrt-"  # admin tokens look different from client keys, so neither is mistaken for the other


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id with the library's defaults (RFC 9106 low-memory profile). Made on the first password to hash or
    check: argon2 and its cffi bindings stay out of a gateway's memory until someone logs in."""
    from argon2 import PasswordHasher

    return PasswordHasher()


_dummy_hash: str | None = None


def _check_password(stored_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _dummy() -> str:
    """A hash to verify against when the user does not exist, so that the answer takes as long as for a wrong
    password and does not tell which usernames exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await asyncio.to_thread(_hasher().hash, "not a password")
    return _dummy_hash


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    return role


class AdminStore(StoreBase):
    async def create_admin(self, username: str, password: str, role: Role = "admin") -> AdminRecord:
        role = _check_role(role)
        if not username.strip() or username != username.strip():
            raise ValueError("a username must be non-empty, without surrounding spaces")
        if not password:
            raise ValueError("a password must not be empty")
        password_hash = await asyncio.to_thread(_hasher().hash, password)
        now = self._now()
        try:
            async with self._write() as conn:
                if await _admin(conn, admin_users.c.username == username) is not None:
                    raise ConflictError(f"admin {username!r} exists")
                await conn.execute(
                    admin_users.insert().values(
                        username=username,
                        password_hash=password_hash,
                        role=role,
                        created_at=now,
                        updated_at=now,
                        disabled=False,
                    )
                )
                record = await _admin(conn, admin_users.c.username == username)
        except IntegrityError:  # created by someone else between our check and insert
            raise ConflictError(f"admin {username!r} exists") from None
        assert record is not None
        return record

    async def verify_admin(self, username: str, password: str) -> AdminRecord | None:
        """The admin if the password is right and the account enabled; None otherwise, in about the same time
        whether or not the user exists. Rehashes a password stored with weaker parameters than today's."""
        async with self._read() as conn:
            row = (await conn.execute(admin_users.select().where(admin_users.c.username == username))).first()
        stored = row.password_hash if row is not None else await _dummy()
        ok = await asyncio.to_thread(_check_password, stored, password)
        if row is None or not ok or row.disabled:
            return None
        if _hasher().check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(_hasher().hash, password)
            async with self._write() as conn:
                await conn.execute(
                    admin_users.update()
                    .where(admin_users.c.id == row.id, admin_users.c.password_hash == stored)
                    .values(password_hash=new_hash)
                )
        return _record(row)

    async def set_password(self, username: str, password: str) -> None:
        """Also revokes the admin's tokens: whoever knew the old password is logged out."""
        if not password:
            raise ValueError("a password must not be empty")
        password_hash = await asyncio.to_thread(_hasher().hash, password)
        now = self._now()
        async with self._write() as conn:
            admin = await _require(conn, username)
            await _update(conn, admin.id, password_hash=password_hash, updated_at=now)
            await _revoke_all_tokens(conn, admin.id, now)

    async def set_admin_disabled(self, username: str, disabled: bool) -> AdminRecord:
        """A disabled admin can neither log in nor use a token issued before."""
        async with self._write() as conn:
            admin = await _require(conn, username)
            await _update(conn, admin.id, disabled=disabled, updated_at=self._now())
            return await _require(conn, username)

    async def set_admin_role(self, username: str, role: Role) -> AdminRecord:
        role = _check_role(role)
        async with self._write() as conn:
            admin = await _require(conn, username)
            await _update(conn, admin.id, role=role, updated_at=self._now())
            return await _require(conn, username)

    async def get_admin(self, username: str) -> AdminRecord | None:
        async with self._read() as conn:
            return await _admin(conn, admin_users.c.username == username)

    async def list_admins(self) -> list[AdminRecord]:
        async with self._read() as conn:
            rows = await conn.execute(admin_users.select().order_by(admin_users.c.id))
            return [_record(row) for row in rows]

    async def count_admins(self) -> int:
        async with self._read() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(admin_users)) or 0)

    async def create_token(self, admin_id: int, ttl_seconds: float) -> str:
        """A bearer token for the admin API, valid for ``ttl_seconds``. Only its SHA-256 is stored."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        secret = new_secret(TOKEN_PREFIX)
        now = self._now()
        async with self._write() as conn:
            if await _admin(conn, admin_users.c.id == admin_id) is None:
                raise NotFoundError(f"no admin with id {admin_id}")
            await conn.execute(
                admin_tokens.insert().values(
                    token_hash=hash_secret(secret), admin_id=admin_id, created_at=now, expires_at=now + ttl_seconds
                )
            )
        return secret

    async def lookup_token(self, secret: str) -> AdminRecord | None:
        """The admin a token belongs to, if the token is neither expired nor revoked and the admin not disabled."""
        query = (
            admin_users.select()
            .join(admin_tokens, admin_tokens.c.admin_id == admin_users.c.id)
            .where(
                admin_tokens.c.token_hash == hash_secret(secret),
                admin_tokens.c.revoked_at.is_(None),
                admin_tokens.c.expires_at > self._now(),
                admin_users.c.disabled.is_(False),
            )
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _record(row)

    async def revoke_token(self, secret: str) -> bool:
        """Log out. False when there was no such live token."""
        async with self._write() as conn:
            result = await conn.execute(
                admin_tokens.update()
                .where(admin_tokens.c.token_hash == hash_secret(secret), admin_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
        return result.rowcount > 0


async def _update(conn: AsyncConnection, admin_id: int, **values: Any) -> None:
    await conn.execute(admin_users.update().where(admin_users.c.id == admin_id).values(**values))


async def _revoke_all_tokens(conn: AsyncConnection, admin_id: int, now: float) -> None:
    await conn.execute(
        admin_tokens.update()
        .where(admin_tokens.c.admin_id == admin_id, admin_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def _admin(conn: AsyncConnection, where: sa.ColumnElement[bool]) -> AdminRecord | None:
    row = (await conn.execute(admin_users.select().where(where))).first()
    return None if row is None else _record(row)


async def _require(conn: AsyncConnection, username: str) -> AdminRecord:
    admin = await _admin(conn, admin_users.c.username == username)
    if admin is None:
        raise NotFoundError(f"no admin named {username!r}")
    return admin


def _record(row: sa.Row[Any]) -> AdminRecord:
    return AdminRecord(
        id=row.id,
        username=row.username,
        role=row.role,
        disabled=bool(row.disabled),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
