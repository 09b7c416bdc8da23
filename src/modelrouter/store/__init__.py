"""Persistence: client keys, admin users and tokens, usage, audit, config versions (SQLite or PostgreSQL).

Use ``await Store.open(config.store)`` once per process, ``await store.close()`` at shutdown. The schema is
created and upgraded by the Alembic migrations shipped in ``migrations/`` when the store opens.
"""

from ._records import (
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
    UsageLike,
    UsageRecord,
    UsageTotal,
)
from .store import Store

__all__ = [
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
    "UsageLike",
    "UsageRecord",
    "UsageTotal",
]
