"""``modelrouter config ...``: the config versions in the store, from the command line - list, show, export, diff,
import a file as a new version, roll back to an old one.

A gateway running with ``--config-source store`` applies a new version within ``store.refresh_interval``. One in
file mode serves its file (its versions are only a record), so while the store was last served in file mode
``import`` and ``rollback`` refuse, as the admin API does: the newest version is always the one served. The store
is found as for ``keys`` (see ``cli_store``): ``--config FILE`` (its ``store:`` section) or ``--data-dir DIR``
(default ./data), and must exist. For ``import FILE`` the positional FILE is what gets imported, never where the
store is. Exit codes: 0 done, 1 not found or failed (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.load import ConfigError, read_config_text
from ..control.source import diff_texts, file_mode_refusal, parse_text, secret_problems, stored_text
from .common import CommandError, Subparsers, actor, positive, store_options, table, with_store

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: import it only when a command runs
    from ..store import ConfigVersion, Store

__all__ = ["register"]

AUTHOR = "cli"
APPLIED = (
    "a gateway running with --config-source store applies it within a second; "
    "a gateway in file mode keeps serving its file"
)


def register(subparsers: Subparsers) -> None:
    """Add the ``config`` command to modelrouter's parser."""
    options = store_options()
    config = subparsers.add_parser(
        "config", parents=[options], help="list, show, diff, import and roll back config versions in the store"
    )
    commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    version = positive(int)  # version numbers start at 1: 0 or "x" is bad usage (exit 2), not "not found"

    versions = commands.add_parser("versions", parents=[options], help="list versions, newest first")
    versions.add_argument("--limit", type=version, default=50, metavar="N", help="show at most N (default: 50)")
    versions.set_defaults(func=with_store(_versions), parser=versions)

    show = commands.add_parser("show", parents=[options], help="print a version's YAML as stored")
    show.add_argument("version", type=version, nargs="?", metavar="N", help="default: the newest")
    show.set_defaults(func=with_store(_export), parser=show, output=None)

    export = commands.add_parser(
        "export", parents=[options], help="write a version's YAML to stdout or a file (a backup, or for file mode)"
    )
    export.add_argument("version", type=version, nargs="?", metavar="N", help="default: the newest")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(func=with_store(_export), parser=export)

    diff = commands.add_parser("diff", parents=[options], help="unified diff from version A to version B")
    diff.add_argument("old", type=version, metavar="A")
    diff.add_argument("new", type=version, nargs="?", metavar="B", help="default: the newest")
    diff.set_defaults(func=with_store(_diff), parser=diff)

    import_ = commands.add_parser(
        "import", parents=[options], help="validate a YAML file and save it as the newest version"
    )
    import_.add_argument("file", metavar="FILE", help="the config to import (--config only locates the store)")
    import_.add_argument("--comment", metavar="TEXT", help="default: imported from FILE")
    import_.set_defaults(func=_import, parser=import_)

    rollback = commands.add_parser(
        "rollback", parents=[options], help="save a new version with the text of version N (validated first)"
    )
    rollback.add_argument("version", type=version, metavar="N")
    rollback.add_argument("--comment", metavar="TEXT", help="default: rollback to version N")
    rollback.set_defaults(func=with_store(_rollback), parser=rollback)


async def _find(store: Store, number: int | None) -> ConfigVersion:
    """Version ``number``, or the newest when None."""
    found = await (store.latest_config_version() if number is None else store.get_config_version(number))
    if found is None:
        raise CommandError("no config versions in the store yet" if number is None else f"no version {number}")
    return found


async def _refuse_in_file_mode(store: Store) -> None:
    if await store.config_mode() == "file":
        raise CommandError(file_mode_refusal())


def _problems(source: str, exc: ConfigError, why: str) -> int:
    # One line per problem, as check-config prints them, then what happened.
    for problem in exc.problems:
        print(f"{source}: {problem}", file=sys.stderr)
    print(f"{source}: {len(exc.problems)} problem(s){why}; nothing saved", file=sys.stderr)
    return 1


# --- reading -------------------------------------------------------------------------------------------------


async def _versions(store: Store, args: argparse.Namespace) -> int:
    records = await store.list_config_versions(args.limit)
    if not records:
        print("no config versions in the store yet", file=sys.stderr)
        return 0
    newest = await store.latest_config_version_id()  # not records[0] alone: that is only the newest shown
    rows = [
        (
            f"{r.id}*" if r.id == newest else str(r.id),
            datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            r.author,
            " ".join(r.comment.split()),  # a multi-line comment would break the table
        )
        for r in records
    ]
    table(("ID", "TIME", "AUTHOR", "COMMENT"), rows)
    print("* newest (what a gateway in store mode serves)")
    return 0


async def _export(store: Store, args: argparse.Namespace) -> int:
    """``show`` and ``export``: the text exactly as stored - no newline added, nothing masked here - so that the
    output is a faithful backup and loads as the same config. (Literal secrets are never stored: a version recorded
    in file mode holds them masked, and a file written from it needs them filled back in.)"""
    found = await _find(store, args.version)
    if args.output is None:
        sys.stdout.write(found.config)
        return 0
    try:
        # newline="": written byte for byte, no \r\n on Windows.
        await asyncio.to_thread(Path(args.output).write_text, found.config, encoding="utf-8", newline="")
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"version {found.id} written to {args.output}")
    return 0


async def _diff(store: Store, args: argparse.Namespace) -> int:
    old = await _find(store, args.old)
    new = await _find(store, args.new)
    if old.config == new.config:
        # Nothing on stdout, as diff -u prints for equal files; exit 0 either way: a difference is no failure.
        print(f"versions {old.id} and {new.id} are the same", file=sys.stderr)
        return 0
    sys.stdout.write(diff_texts(old.config, new.config, f"version {old.id}", f"version {new.id}"))
    return 0


# --- writing -------------------------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    # Validated before the store is opened: a bad file must neither be saved nor create an empty store.
    try:
        text = read_config_text(args.file)
        parse_text(text, args.file)
        _refuse_literal_secrets(text, args.file)
    except ConfigError as exc:
        return _problems(args.file, exc, "")
    args.text = stored_text(text)  # a password in store.database_url masked
    return with_store(_save_import)(args)


def _refuse_literal_secrets(text: str, source: str) -> None:
    # Import and rollback only save in store mode, where the store is the truth: as the admin API does, refuse
    # to write a secret into the database rather than mask it there and serve the mask.
    problems = secret_problems(text)
    if problems:
        raise ConfigError(source, problems)


async def _save_import(store: Store, args: argparse.Namespace) -> int:
    await _refuse_in_file_mode(store)
    latest = await store.latest_config_version()
    if latest is not None and latest.config == args.text:
        print(f"{args.file} is the same as version {latest.id}, the newest; nothing saved")
        return 0
    comment = args.comment if args.comment is not None else f"imported from {args.file}"
    return await _save(store, args.text, comment, latest, "config.import", {"file": args.file})


async def _rollback(store: Store, args: argparse.Namespace) -> int:
    await _refuse_in_file_mode(store)
    old = await _find(store, args.version)
    source = f"version {old.id}"
    try:
        # Checked here, with this environment: a gateway would refuse a version whose ${ENV} variables are unset
        # and keep its running config, so saving it would only make a newest version that nothing serves.
        parse_text(old.config, source)
    except ConfigError as exc:
        return _problems(source, exc, " (are its ${ENV} variables set here?)")
    try:
        _refuse_literal_secrets(old.config, source)
    except ConfigError as exc:
        return _problems(source, exc, "")
    latest = await store.latest_config_version()
    if latest is not None and latest.config == old.config:
        print(f"version {latest.id}, the newest, already has the text of version {old.id}; nothing saved")
        return 0
    comment = args.comment if args.comment is not None else f"rollback to version {old.id}"
    return await _save(store, old.config, comment, latest, "config.rollback", {"from": old.id})


async def _save(
    store: Store, text: str, comment: str, latest: ConfigVersion | None, action: str, detail: dict[str, object]
) -> int:
    # based_on: if another version was saved since we read the newest (the admin API, another CLI), the store
    # refuses (StaleVersionError, exit 1) instead of silently replacing a change we did not look at.
    saved = await store.add_config_version(
        text, author=AUTHOR, comment=comment, based_on=None if latest is None else latest.id
    )
    await store.audit(actor(), action, f"config:{saved.id}", {**detail, "comment": comment})
    print(f"version {saved.id} saved; {APPLIED}")
    return 0
