"""Admin routes for the session: log in (throttled), log out, who am I."""

from __future__ import annotations

import logging

from ..errors import AuthenticationFailed, RateLimited
from .calls import GLOBAL, PER_ADDRESS, Call, Reply, Routes, admin_view
from .ratelimit import retry_after_header
from .schema import Body, LoginPassword, Name, obj, ref

__all__ = ["Credentials", "login", "logout", "me", "routes"]

log = logging.getLogger("modelrouter.admin")

routes = Routes()


class Credentials(Body):
    username: Name
    password: LoginPassword


@routes("POST", "/admin/api/login", None, reply=ref("Login"), errors=(429,))
async def login(call: Call, body: Credentials) -> Reply:
    """Log in: exchange a username and password for an admin token (throttled per client IP and username)."""
    username, password = body.username, body.password
    # Checked after validation (a malformed request is no guess) and before the password hash (which is the
    # expensive part, and what a guesser is after).
    limit = call.config.login_attempts_per_minute
    ip = call.request.client_ip
    wait = await call.login_limiter.attempt(
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


@routes("POST", "/admin/api/logout", "viewer", reply=obj({"logged_out": {"const": True}}, ["logged_out"]))
async def logout(call: Call) -> Reply:
    """Log out: revoke the token presented.

    Every role may end its own session."""
    assert call.token is not None
    await call.store.revoke_token(call.token)
    await call.audit("admin.logout", f"admin:{call.who.username}")
    return 200, {"logged_out": True}


@routes("GET", "/admin/api/me", "viewer", reply=ref("AdminUser"))
async def me(call: Call) -> Reply:
    """The admin user the token belongs to."""
    return 200, admin_view(call.who)
