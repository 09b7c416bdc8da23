"""``modelrouter store init``: create the store (or bring an older one up to date).

Only ``store init`` (and ``serve``) create a store: any other command finding none refuses, rather than act on a
new empty store in the wrong place (how a store is found, and the exit codes: ``common.py``).
"""

from __future__ import annotations

import argparse

from .. import store as persistence  # the package is light: Store (and SQLAlchemy) load when first used
from ..config.model import StoreConfig
from ..store.records import NoStoreError
from .common import Subparsers, run_on_store, store_options

__all__ = ["register"]


# --- store ---------------------------------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    options = store_options()
    store = subparsers.add_parser("store", parents=[options], help="create the store")
    commands = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    init = commands.add_parser(
        "init",
        parents=[options],
        help="create the store (the SQLite file, or the schema in an empty PostgreSQL database); "
        "the other commands never create one",
    )
    init.set_defaults(func=_store_init, parser=init)


def _store_init(args: argparse.Namespace) -> int:
    async def main(config: StoreConfig) -> int:
        try:
            store = await persistence.Store.open(config, create=False)  # an older schema is brought up to date
            message = f"The store at {store.where} exists already; its schema is up to date."
        except NoStoreError:
            store = await persistence.Store.open(config)
            message = f"Created the store at {store.where}."
        await store.close()
        print(message)
        return 0

    return run_on_store(args, main)
