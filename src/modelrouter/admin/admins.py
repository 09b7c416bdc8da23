"""Admin routes for admin users and the audit log: list and create admins, change their role, disabled state
and password, read the audit log."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import PermissionDenied
from ..store.records import MIN_PASSWORD_LENGTH, ROLES
from .calls import (
    Call,
    Reply,
    admin_view,
    audit_view,
    invalid,
    only,
    text,
)

__all__ = ["create_admin", "list_admins", "list_audit", "set_admin_password", "update_admin"]

log = logging.getLogger("modelrouter.admin")


# --- admin users and the audit log -----------------------------------------------------------------------------


async def list_admins(call: Call) -> Reply:
    return 200, {"object": "list", "data": [admin_view(a) for a in await call.store.list_admins()]}


async def create_admin(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"username", "password", "role"})
    username = text(body, "username")
    if username != username.strip():
        raise invalid("'username' must not start or end with spaces", "username")
    password = text(body, "password", max_length=1024)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise invalid(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", "password")
    role = text(body, "role")
    if role not in ROLES:
        raise invalid(f"'role' must be one of {', '.join(ROLES)}", "role")
    record = await call.store.create_admin(username, password, role)  # `in ROLES` narrowed role to a Role
    await call.audit("admin.create", f"admin:{record.username}", {"role": record.role})
    return 201, admin_view(record)


async def list_audit(call: Call) -> Reply:
    text = call.request.query().get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise invalid("'limit' must be a whole number from 1 to 1000", "limit")
    return 200, {"object": "list", "data": [audit_view(r) for r in await call.store.list_audit(int(text))]}


async def update_admin(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"role", "disabled"})
    username = call.params["username"]
    if not body:
        raise invalid("give 'role' and/or 'disabled'", "role", "missing_parameter")
    if username == call.who.username:
        # An admin who demotes or disables themselves by mistake may leave nobody able to undo it.
        raise invalid("you cannot change your own role or disable yourself; ask another admin", "username")
    record = None
    detail: dict[str, Any] = {}
    if "role" in body:
        role = text(body, "role")
        if role not in ROLES:
            raise invalid(f"'role' must be one of {', '.join(ROLES)}", "role")
        record = await call.store.set_admin_role(username, role)
        detail["role"] = role
    if "disabled" in body:
        disabled = body["disabled"]
        if not isinstance(disabled, bool):
            raise invalid("'disabled' must be true or false", "disabled", "invalid_type")
        record = await call.store.set_admin_disabled(username, disabled)
        detail["disabled"] = disabled
    assert record is not None
    await call.audit("admin.update", f"admin:{username}", detail)
    return 200, admin_view(record)


async def set_admin_password(call: Call) -> Reply:
    """Set an admin's password (an admin for anyone, or anyone for themselves); their tokens are revoked."""
    body = await call.request.json()
    only(body, {"password"})
    username = call.params["username"]
    if username != call.who.username and call.who.role != "admin":
        raise PermissionDenied("only an admin may set another user's password", code="insufficient_role")
    password = text(body, "password", max_length=1024)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise invalid(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", "password")
    await call.store.set_password(username, password)
    await call.audit("admin.password", f"admin:{username}")
    return 200, {"username": username, "password_changed": True}
