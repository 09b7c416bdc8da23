"""The first admin user, made at startup when the store has none, so that a fresh install can be administered
without a fixed default password (which would be the same, and known, on every install).

The password comes from ``$MODELROUTER_ADMIN_PASSWORD`` when set; otherwise a random one is generated and shown
exactly once, in the log. Later starts find an admin and do nothing, so the environment variable does not reset a
password someone has since changed."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..store.records import MIN_PASSWORD_LENGTH, PASSWORD_ENV, ConflictError

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["FIRST_ADMIN", "PASSWORD_ENV", "ensure_first_admin"]

FIRST_ADMIN = "admin"

_log = logging.getLogger("modelrouter.admin")


async def ensure_first_admin(
    store: Store,
    *,
    env: Mapping[str, str] = os.environ,
    log: logging.Logger = _log,
    username: str = FIRST_ADMIN,
) -> str | None:
    """Create ``username`` (role admin) if the store has no admin user at all. Returns the username created, or
    None when there already was an admin. A password from ``env`` shorter than 8 characters is refused with a
    ValueError: better no start than a guessable admin account."""
    if await store.count_admins() > 0:
        return None
    password = env.get(PASSWORD_ENV) or ""
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)  # 144 random bits
    elif len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"${PASSWORD_ENV} must have at least {MIN_PASSWORD_LENGTH} characters")
    try:
        record = await store.create_admin(username, password, "admin")
    except ConflictError:
        return None  # another replica starting at the same moment made it; its log shows the password
    await store.audit("system", "admin.create", f"admin:{record.username}", {"role": record.role, "first_start": True})
    if generated:
        _show_once(
            log,
            f"first start: created admin user {username!r} with password {password} -- shown only this once; "
            f"change it with `modelrouter admin reset-password {username}`",
        )
    else:
        log.info("first start: created admin user %r with the password from $%s", username, PASSWORD_ENV)
    return record.username


def _show_once(log: logging.Logger, line: str) -> None:
    # Once, and surely seen: in the log when it shows warnings, else straight on stderr (a quiet --log-level
    # must not leave an install with an admin password nobody ever saw).
    if log.isEnabledFor(logging.WARNING):
        log.warning(line)
    else:
        print(f"WARNING: {line}", file=sys.stderr, flush=True)
