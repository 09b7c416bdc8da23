"""Admin routes for admin users and the audit log: list and create admins, change their role, disabled state
and password, read the audit log."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ConfigDict, Field

from ..errors import PermissionDenied
from ..store.records import Role
from .calls import Call, Reply, Routes, admin_view, audit_view, invalid
from .schema import Body, Limit, NewPassword, Query, UnixTime, Username, list_of, obj, ref

__all__ = [
    "AdminChange",
    "AuditQuery",
    "NewAdmin",
    "PasswordChange",
    "create_admin",
    "list_admins",
    "list_audit",
    "routes",
    "set_admin_password",
    "update_admin",
]

log = logging.getLogger("modelrouter.admin")

routes = Routes()


class NewAdmin(Body):
    username: Username
    password: NewPassword
    role: Role


class AdminChange(Body):
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    role: Role | None = None
    disabled: bool | None = None


class PasswordChange(Body):
    password: NewPassword


class AuditQuery(Query):
    """Filters of the audit log; unknown ones are refused (a misspelt filter must not show every entry)."""

    model_config = ConfigDict(extra="forbid")

    limit: Limit = 100
    actor: str | None = Field(None, description="the admin's username (anonymous: failed logins)")
    action: str | None = Field(None, description="an action, or what comes before its dot: key matches key.create")
    target: str | None = Field(None, description="e.g. key:3, admin:ann, config")
    since: UnixTime | None = Field(None, description="entries at or after this time")
    until: UnixTime | None = Field(None, description="entries before this time")
    before_id: int | None = Field(None, ge=1, description="entries older than this one: the next page")


@routes("GET", "/admin/api/admins", "viewer", reply=list_of(ref("AdminUser")))
async def list_admins(call: Call) -> Reply:
    """Admin users."""
    return 200, {"object": "list", "data": [admin_view(a) for a in await call.store.list_admins()]}


@routes("POST", "/admin/api/admins", "admin", reply=ref("AdminUser"), status=201, errors=(409,))
async def create_admin(call: Call, body: NewAdmin) -> Reply:
    """Create an admin user."""
    record = await call.store.create_admin(body.username, body.password, body.role)
    await call.audit("admin.create", f"admin:{record.username}", {"role": record.role})
    return 201, admin_view(record)


@routes("PATCH", "/admin/api/admins/{username}", "admin", reply=ref("AdminUser"), errors=(404,))
async def update_admin(call: Call, body: AdminChange) -> Reply:
    """Change another admin user's role, or disable or enable them."""
    username = call.params["username"]
    if body.role is None and body.disabled is None:
        raise invalid("give 'role' and/or 'disabled'", "role", "missing_parameter")
    if username == call.who.username:
        # An admin who demotes or disables themselves by mistake may leave nobody able to undo it.
        raise invalid("you cannot change your own role or disable yourself; ask another admin", "username")
    record = None
    detail: dict[str, Any] = {}
    if body.role is not None:
        record = await call.store.set_admin_role(username, body.role)
        detail["role"] = body.role
    if body.disabled is not None:
        record = await call.store.set_admin_disabled(username, body.disabled)
        detail["disabled"] = body.disabled
    assert record is not None
    await call.audit("admin.update", f"admin:{username}", detail)
    return 200, admin_view(record)


@routes(
    "POST",
    "/admin/api/admins/{username}/password",
    "viewer",
    reply=obj({"username": {"type": "string"}, "password_changed": {"const": True}}, ["username"]),
    errors=(403, 404),
)
async def set_admin_password(call: Call, body: PasswordChange) -> Reply:
    """Set an admin user's password (one's own, or anyone's as an admin); their tokens are revoked.

    Any role may set its own password; only an admin may set another user's."""
    username = call.params["username"]
    if username != call.who.username and call.who.role != "admin":
        raise PermissionDenied("only an admin may set another user's password", code="insufficient_role")
    await call.store.set_password(username, body.password)
    await call.audit("admin.password", f"admin:{username}")
    return 200, {"username": username, "password_changed": True}


@routes(
    "GET",
    "/admin/api/audit",
    "viewer",
    reply=obj(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("AuditEntry")},
            "has_more": {"type": "boolean", "description": "older entries match: ask again with before_id"},
        },
        ["object", "data", "has_more"],
    ),
)
async def list_audit(call: Call, query: AuditQuery) -> Reply:
    """The audit log, newest first, filtered by actor, action, target and time; paged with ``before_id``.

    ``has_more`` says whether older entries match; the next page is ``before_id=<the last id read>``."""
    entries = await call.store.list_audit(
        query.limit + 1,
        actor=query.actor,
        action=query.action,
        target=query.target,
        since=query.since,
        until=query.until,
        before_id=query.before_id,
    )
    page = entries[: query.limit]
    return 200, {"object": "list", "data": [audit_view(r) for r in page], "has_more": len(entries) > query.limit}
