"""The admin API's route table: every route of every resource, in the order declared. Each route is declared once,
at its handler (``Routes`` in admin/calls.py): method, path, least role, the body and query models it reads, its
summary and reply. Reads are open to viewers, config and key changes to operators, admin accounts and the raw
config export to admins."""

from __future__ import annotations

from . import admins, catalog, keys, services, session, state, usage
from . import config_routes as config
from .calls import Route

__all__ = ["ROUTES"]

ROUTES: tuple[Route, ...] = (
    *session.routes,
    *keys.routes,
    *admins.routes,
    *config.routes,
    *services.routes,
    *state.routes,
    *usage.routes,
    *catalog.routes,
)
