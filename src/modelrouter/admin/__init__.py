"""The admin API: login, client keys, admin users and the audit log, over JSON under ``/admin/api/``.

Mounted by the front door (``FrontDoor.admin``) for every path under ``/admin/``; kept apart from the ``/v1`` data
plane in code and in credentials: it authenticates admin tokens only, never client API keys.

    POST   /admin/api/login              {username, password} -> {token, expires_at, role}   (throttled)
    POST   /admin/api/logout             revoke the token presented                          any role
    GET    /admin/api/me                                                                    viewer
    GET    /admin/api/keys               never a hash or secret                              viewer
    POST   /admin/api/keys               {name, models?, services?, expires_at?, quotas?}    operator
    POST   /admin/api/keys/{id}/disable | enable | revoke | rotate                           operator
    DELETE /admin/api/keys/{id}                                                             operator
    GET    /admin/api/admins                                                                viewer
    POST   /admin/api/admins             {username, password, role}                          admin
    GET    /admin/api/audit              ?limit=1..1000 (default 100), newest first          viewer

Roles rank viewer < operator < admin. Every write is recorded in the audit log.
"""

from .app import AdminApp
from .bootstrap import FIRST_ADMIN, PASSWORD_ENV, ensure_first_admin
from .calls import ROLE_RANK, Route
from .routes import ROUTES

__all__ = [
    "FIRST_ADMIN",
    "PASSWORD_ENV",
    "ROLE_RANK",
    "ROUTES",
    "AdminApp",
    "Route",
    "ensure_first_admin",
]
