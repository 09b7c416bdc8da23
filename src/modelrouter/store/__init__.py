"""Persistence: client keys, admin users and tokens, usage, audit, config versions (SQLite or PostgreSQL).

Use ``await Store.open(config.store)`` once per process, ``await store.close()`` at shutdown. The schema is
created and upgraded by the Alembic migrations shipped in ``migrations/`` when the store opens - in a child process
for ``modelrouter serve`` (``migrate.py``), and Alembic is not imported at all when the schema is up to date.

What the store hands out (``records``) is importable without the store: ``Store`` itself, and with it
SQLAlchemy, is imported the first time it is asked for, so the request path and a library user's gateway
without a store never load it.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .records import (
    MIN_PASSWORD_LENGTH,
    ROLES,
    AdminRecord,
    AuditRecord,
    ConfigVersion,
    ConflictError,
    KeyRecord,
    NoStoreError,
    NotFoundError,
    Role,
    StaleVersionError,
    StoreError,
    UsageRecord,
    UsageTotal,
)

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "AdminRecord",
    "AuditRecord",
    "ConfigVersion",
    "ConflictError",
    "KeyRecord",
    "NoStoreError",
    "NotFoundError",
    "Role",
    "StaleVersionError",
    "Store",
    "StoreError",
    "UsageRecord",
    "UsageTotal",
]


def __getattr__(name: str) -> Any:
    if name == "Store":
        return importlib.import_module(".store", __name__).Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
