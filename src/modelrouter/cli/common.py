"""What the store commands share: finding the store, opening it, exit codes, and their output.

The store is found from ``--config FILE`` (its ``store:`` section) or ``--data-dir DIR`` (SQLite in DIR,
default ./data); every command says which on stderr (``store: <file or URL without password>``), so that stdout
stays the table or JSON. Only ``store init`` (and ``serve``) create a store: any other command finding none
there refuses, rather than act on a new empty store in the wrong place. Exit codes: 0 done, 1 not found or
failed (with a message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from .. import store as persistence  # the package is light: Store (and SQLAlchemy) load when first used
from ..config.load import ConfigError, load_config
from ..config.model import StoreConfig
from ..store.records import NoStoreError, StoreError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: import it only when a command runs
    from ..store import Store

__all__ = [
    "CommandError",
    "Subparsers",
    "actor",
    "positive",
    "store_config",
    "store_options",
    "table",
    "when",
    "with_store",
]

# argparse has no public name for the object add_subparsers() returns.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(Exception):
    """Ends a command with exit code 1 and this message."""


# --- where the store is ------------------------------------------------------------------------------------


def store_options() -> argparse.ArgumentParser:
    # SUPPRESS: the options are accepted both before and after the subcommand (`keys --data-dir D list` and
    # `keys list --data-dir D`) without the subcommand's default overwriting a value given before it.
    options = argparse.ArgumentParser(add_help=False)
    where = options.add_mutually_exclusive_group()
    where.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="use the store named in this config file"
    )
    where.add_argument(
        "--data-dir", metavar="DIR", default=argparse.SUPPRESS, help="use SQLite in DIR (default: ./data)"
    )
    return options


def store_config(args: argparse.Namespace) -> StoreConfig:
    config_file: str | None = getattr(args, "config", None)
    data_dir: str | None = getattr(args, "data_dir", None)
    if config_file is not None and data_dir is not None:
        args.parser.error("--config and --data-dir exclude each other")
    if config_file is None:
        return StoreConfig() if data_dir is None else StoreConfig(data_dir=data_dir)
    try:
        # Only its store: section is used, so a file that just says where the store is will do.
        return load_config(config_file, require_services=False).store
    except ConfigError as exc:
        raise CommandError(f"invalid configuration\n{exc}") from None


def run_on_store(args: argparse.Namespace, main: Callable[[StoreConfig], Coroutine[Any, Any, int]]) -> int:
    """Say which store, then run ``main`` on its config; expected failures become exit code 1 and a message."""
    try:
        config = store_config(args)
        print(f"store: {persistence.Store.location(config)}", file=sys.stderr)
        return asyncio.run(main(config))
    except NoStoreError as exc:
        print(f"modelrouter: {exc}\n{how_to_create(args)}", file=sys.stderr)
        return 1
    except (CommandError, StoreError, ValueError) as exc:
        print(f"modelrouter: {exc}", file=sys.stderr)
        return 1


def how_to_create(args: argparse.Namespace) -> str:
    where = [
        f"{flag} {shlex.quote(value)}"
        for flag, value in (
            ("--config", getattr(args, "config", None)),
            ("--data-dir", getattr(args, "data_dir", None)),
        )
        if value is not None
    ]
    init = " ".join(["modelrouter store init", *where])
    return (
        f"Create it with `{init}` (or by starting `modelrouter serve` with the same store), or point at the "
        "existing store with --data-dir DIR or --config FILE (its store: section)."
    )


StoreCommand = Callable[["Store", argparse.Namespace], Awaitable[int]]


def with_store(command: StoreCommand) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with the store open; a store that does not exist is refused, not created."""

    def run(args: argparse.Namespace) -> int:
        async def main(config: StoreConfig) -> int:
            store = await persistence.Store.open(config, create=False)
            try:
                return await command(store, args)
            finally:
                await store.close()

        return run_on_store(args, main)

    return run


def actor() -> str:
    """Who the audit log says did it."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in the environment or the password database
        return "cli"


# --- output --------------------------------------------------------------------------------------------------


def when(ts: float | None, never: str = "never") -> str:
    return never if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
