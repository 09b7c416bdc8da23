"""``modelrouter admin ...``: admin users of the admin API, managed directly in the store."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from typing import TYPE_CHECKING

from ..store.records import MIN_PASSWORD_LENGTH, PASSWORD_ENV, ROLES

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: import it only when a command runs
    from ..store import AdminRecord, Store
from .common import CommandError, Subparsers, actor, store_options, table, when, with_store

__all__ = ["PASSWORD_ENV", "register"]


# --- admin users -------------------------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    options = store_options()
    admin = subparsers.add_parser("admin", parents=[options], help="manage admin users in the store")
    commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    source = f"password from ${PASSWORD_ENV}, else asked twice; with no terminal, generated and printed once"

    create = commands.add_parser("create", parents=[options], help=f"create an admin user ({source})")
    create.add_argument("username")
    create.add_argument("--role", choices=ROLES, default="admin", help="default: admin")
    create.set_defaults(func=with_store(_admin_create), parser=create)

    reset = commands.add_parser(
        "reset-password", parents=[options], help=f"set a new password and log the user out ({source})"
    )
    reset.add_argument("username")
    reset.set_defaults(func=with_store(_admin_reset_password), parser=reset)

    for name, handler, text in (
        ("disable", _admin_disable, "stop an admin user from logging in"),
        ("enable", _admin_enable, "let a disabled admin user log in again"),
    ):
        command = commands.add_parser(name, parents=[options], help=text)
        command.add_argument("username")
        command.set_defaults(func=with_store(handler), parser=command)

    listing = commands.add_parser("list", parents=[options], help="list admin users")
    listing.set_defaults(func=with_store(_admin_list), parser=listing)


def _new_password(username: str) -> tuple[str, bool]:
    """The password to set, and whether it was generated (and so must be shown)."""
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        if not sys.stdin.isatty():
            return secrets.token_urlsafe(18), True
        password = getpass.getpass(f"Password for {username}: ")
        if getpass.getpass("Repeat it: ") != password:
            raise CommandError("the passwords do not match")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CommandError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password, False


def _print_password(username: str, password: str) -> None:
    print(f"password for {username}: {password}")
    print("Store it now: it is shown only this once.")


async def _admin_create(store: Store, args: argparse.Namespace) -> int:
    if await store.get_admin(args.username) is not None:  # before asking for a password in vain
        raise CommandError(f"admin {args.username!r} exists (use `admin reset-password`)")
    password, generated = _new_password(args.username)
    record = await store.create_admin(args.username, password, args.role)
    await store.audit(actor(), "admin.create", f"admin:{record.username}", {"role": record.role})
    print(f"Created admin {record.username!r} (id {record.id}, role {record.role}).")
    if generated:
        _print_password(record.username, password)
    return 0


async def _find_admin(store: Store, username: str) -> AdminRecord:
    record = await store.get_admin(username)
    if record is None:
        raise CommandError(f"no admin named {username!r}")
    return record


async def _admin_reset_password(store: Store, args: argparse.Namespace) -> int:
    await _find_admin(store, args.username)
    password, generated = _new_password(args.username)
    await store.set_password(args.username, password)
    await store.audit(actor(), "admin.reset_password", f"admin:{args.username}")
    print(f"Password of {args.username!r} changed; their sessions are logged out.")
    if generated:
        _print_password(args.username, password)
    return 0


async def _admin_disable(store: Store, args: argparse.Namespace) -> int:
    return await _set_admin_disabled(store, args, disabled=True)


async def _admin_enable(store: Store, args: argparse.Namespace) -> int:
    return await _set_admin_disabled(store, args, disabled=False)


async def _set_admin_disabled(store: Store, args: argparse.Namespace, *, disabled: bool) -> int:
    await _find_admin(store, args.username)
    record = await store.set_admin_disabled(args.username, disabled)
    action = "disabled" if disabled else "enabled"
    await store.audit(actor(), f"admin.{action[:-1]}", f"admin:{record.username}")
    print(f"Admin {record.username!r} {action}.")
    return 0


async def _admin_list(store: Store, args: argparse.Namespace) -> int:
    rows = [
        (str(a.id), a.username, a.role, "yes" if a.disabled else "no", when(a.created_at))
        for a in await store.list_admins()
    ]
    table(("ID", "USERNAME", "ROLE", "DISABLED", "CREATED"), rows)
    return 0
