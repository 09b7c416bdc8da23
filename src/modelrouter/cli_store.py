"""``modelrouter store init``, ``modelrouter keys ...`` and ``modelrouter admin ...``: create the store, and manage
client keys and admin users directly in it, whether the gateway is running or not (a running gateway notices key
changes within ``store.refresh_interval``).

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
import json
import os
import secrets
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from .config.load import ConfigError, load_config
from .config.model import SERVICE_NAMES, KeyQuotas, StoreConfig
from .keys import HASH_PREFIX, hash_secret

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: import it only when a command runs
    from .store import AdminRecord, KeyRecord, Store

__all__ = ["PASSWORD_ENV", "register"]

PASSWORD_ENV = "MODELROUTER_ADMIN_PASSWORD"
MIN_PASSWORD_LENGTH = 8
ROLES = ("admin", "operator", "viewer")  # as store.ROLES; repeated so that building the parser stays light

# argparse has no public name for the object add_subparsers() returns.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandError(Exception):
    """Ends a command with exit code 1 and this message."""


def register(subparsers: Subparsers) -> None:
    """Add the ``store``, ``keys`` and ``admin`` commands to modelrouter's parser."""
    _register_store(subparsers)
    _register_keys(subparsers)
    _register_admin(subparsers)


# --- where the store is ------------------------------------------------------------------------------------


def _store_options() -> argparse.ArgumentParser:
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


def _store_config(args: argparse.Namespace) -> StoreConfig:
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


def _run(args: argparse.Namespace, main: Callable[[StoreConfig], Coroutine[Any, Any, int]]) -> int:
    """Say which store, then run ``main`` on its config; expected failures become exit code 1 and a message."""
    from .store import NoStoreError, Store, StoreError

    try:
        config = _store_config(args)
        print(f"store: {Store.location(config)}", file=sys.stderr)
        return asyncio.run(main(config))
    except NoStoreError as exc:
        print(f"modelrouter: {exc}\n{_how_to_create(args)}", file=sys.stderr)
        return 1
    except (CommandError, StoreError, ValueError) as exc:
        print(f"modelrouter: {exc}", file=sys.stderr)
        return 1


def _how_to_create(args: argparse.Namespace) -> str:
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


def _with_store(command: StoreCommand) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with the store open; a store that does not exist is refused, not created."""

    def run(args: argparse.Namespace) -> int:
        from .store import Store

        async def main(config: StoreConfig) -> int:
            store = await Store.open(config, create=False)
            try:
                return await command(store, args)
            finally:
                await store.close()

        return _run(args, main)

    return run


def _actor() -> str:
    """Who the audit log says did it."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in the environment or the password database
        return "cli"


# --- store ---------------------------------------------------------------------------------------------------


def _register_store(subparsers: Subparsers) -> None:
    options = _store_options()
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
    from .store import NoStoreError, Store

    async def main(config: StoreConfig) -> int:
        try:
            store = await Store.open(config, create=False)  # an older schema is brought up to date
            message = f"The store at {store.where} exists already; its schema is up to date."
        except NoStoreError:
            store = await Store.open(config)
            message = f"Created the store at {store.where}."
        await store.close()
        print(message)
        return 0

    return _run(args, main)


# --- keys ----------------------------------------------------------------------------------------------------


def _register_keys(subparsers: Subparsers) -> None:
    options = _store_options()
    keys = subparsers.add_parser("keys", parents=[options], help="manage client API keys in the store")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", parents=[options], help="create a key; prints its secret once")
    create.add_argument("name")
    create.add_argument("--models", type=_names, default=(), metavar="M1,M2", help="allowed models (default: all)")
    create.add_argument(
        "--services", type=_services, default=(), metavar="S1,S2", help=f"allowed services: {', '.join(SERVICE_NAMES)}"
    )
    create.add_argument("--expires-in-days", type=_positive(float), metavar="N")
    create.add_argument("--rpm", type=_positive(float), metavar="N", help="requests per minute")
    create.add_argument("--tpm", type=_positive(float), metavar="N", help="tokens per minute")
    create.add_argument("--max-concurrent", type=_positive(int), metavar="N", help="requests in flight at once")
    create.add_argument("--daily-requests", type=_positive(int), metavar="N")
    create.add_argument("--daily-tokens", type=_positive(int), metavar="N")
    create.add_argument("--monthly-requests", type=_positive(int), metavar="N")
    create.add_argument("--monthly-tokens", type=_positive(int), metavar="N")
    create.add_argument("--json", action="store_true", help="print the result as JSON")
    create.set_defaults(func=_with_store(_keys_create), parser=create)

    listing = commands.add_parser("list", parents=[options], help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    listing.set_defaults(func=_with_store(_keys_list), parser=listing)

    for name, handler, text in (
        ("disable", _keys_disable, "stop a key from authenticating (can be enabled again)"),
        ("enable", _keys_enable, "let a disabled key authenticate again"),
        ("revoke", _keys_revoke, "revoke a key for good"),
        ("rotate", _keys_rotate, "give a key a new secret (printed once); the old one stops working"),
        ("delete", _keys_delete, "remove a key from the store"),
    ):
        command = commands.add_parser(name, parents=[options], help=text)
        command.add_argument("key", metavar="KEY", help="the key's id, prefix or name, as shown by `keys list`")
        command.set_defaults(func=_with_store(handler), parser=command)

    hash_ = commands.add_parser("hash", help="print sha256:<hex> of a secret, to declare the key in a config file")
    hash_.add_argument("secret", nargs="?", default="-", help="the secret; '-' or omitted: read it from stdin")
    hash_.set_defaults(func=_keys_hash, parser=hash_)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _services(text: str) -> tuple[str, ...]:
    names = _names(text)
    if unknown := [n for n in names if n not in SERVICE_NAMES]:
        raise argparse.ArgumentTypeError(f"unknown service(s) {', '.join(unknown)} (known: {', '.join(SERVICE_NAMES)})")
    return names


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
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


async def _keys_create(store: Store, args: argparse.Namespace) -> int:
    quotas = KeyQuotas(
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        max_concurrent=args.max_concurrent,
        daily_requests=args.daily_requests,
        daily_tokens=args.daily_tokens,
        monthly_requests=args.monthly_requests,
        monthly_tokens=args.monthly_tokens,
    )
    expires_at = None if args.expires_in_days is None else time.time() + args.expires_in_days * 86400
    if expires_at is not None and expires_at > 253402300799:  # 9999-12-31, the last time the store can hold
        raise CommandError("--expires-in-days reaches past the year 9999; leave it out for a key that never expires")
    record, secret = await store.create_key(
        args.name, models=args.models, services=args.services, expires_at=expires_at, quotas=quotas
    )
    await store.audit(_actor(), "key.create", f"key:{record.id}", {"name": record.name, "prefix": record.prefix})
    if args.json:
        print(json.dumps({**record.public_view(time.time()), "secret": secret}))
        return 0
    print(f"Created key {record.id} {record.name!r} (prefix {record.prefix}, expires {_when(record.expires_at)}).")
    _print_secret(secret)
    return 0


def _print_secret(secret: str) -> None:
    print(f"secret: {secret}")
    print("Store it now: it is shown only this once. modelrouter keeps only its hash.")


async def _keys_list(store: Store, args: argparse.Namespace) -> int:
    records = await store.list_keys()
    if args.json:
        print(json.dumps([r.public_view(time.time()) for r in records]))
        return 0
    now = time.time()
    rows = [
        (str(r.id), r.name, r.prefix, _status(r, now), _when(r.expires_at), _when(r.revoked_at, "-")) for r in records
    ]
    _table(("ID", "NAME", "PREFIX", "STATUS", "EXPIRES", "REVOKED"), rows)
    return 0


def _status(record: KeyRecord, now: float) -> str:
    """One word, the strongest first: a revoked key stays enabled in the store, but it never authenticates."""
    if record.revoked:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active" if record.enabled else "disabled"


async def _find_key(store: Store, args: argparse.Namespace) -> KeyRecord:
    """By id, else prefix, else name: an id always means its key. Two keys matching is refused - acting on the
    wrong one would be worse than asking for the id."""
    text: str = args.key
    if text.isdigit() and (record := await store.get_key(int(text))) is not None:
        return record
    records = await store.list_keys()
    for matches, what in (
        ([r for r in records if r.prefix == text], "have the prefix"),
        ([r for r in records if r.name == text], "are named"),
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            ids = ", ".join(str(r.id) for r in matches)
            raise CommandError(f"{len(matches)} keys {what} {text!r} (ids {ids}): give the id")
    raise CommandError(f"no key with id, prefix or name {text!r}")


async def _keys_disable(store: Store, args: argparse.Namespace) -> int:
    return await _set_enabled(store, args, enabled=False)


async def _keys_enable(store: Store, args: argparse.Namespace) -> int:
    return await _set_enabled(store, args, enabled=True)


async def _set_enabled(store: Store, args: argparse.Namespace, *, enabled: bool) -> int:
    record = await store.set_key_enabled((await _find_key(store, args)).id, enabled)
    action = "enabled" if enabled else "disabled"
    await store.audit(_actor(), f"key.{action[:-1]}", f"key:{record.id}", {"name": record.name})
    print(f"Key {record.id} {record.name!r} {action}.")
    return 0


async def _keys_revoke(store: Store, args: argparse.Namespace) -> int:
    record = await store.revoke_key((await _find_key(store, args)).id)
    await store.audit(_actor(), "key.revoke", f"key:{record.id}", {"name": record.name})
    print(f"Key {record.id} {record.name!r} revoked.")
    return 0


async def _keys_rotate(store: Store, args: argparse.Namespace) -> int:
    record = await _find_key(store, args)
    secret = await store.rotate_key(record.id)
    await store.audit(_actor(), "key.rotate", f"key:{record.id}", {"name": record.name})
    print(f"Key {record.id} {record.name!r} has a new secret; the old one no longer works.")
    _print_secret(secret)
    return 0


async def _keys_delete(store: Store, args: argparse.Namespace) -> int:
    record = await _find_key(store, args)
    await store.delete_key(record.id)
    await store.audit(_actor(), "key.delete", f"key:{record.id}", {"name": record.name, "prefix": record.prefix})
    print(f"Key {record.id} {record.name!r} deleted.")
    return 0


def _keys_hash(args: argparse.Namespace) -> int:
    secret: str = args.secret
    if secret == "-":
        # Reading it keeps the secret out of shell history and the process list.
        secret = getpass.getpass("Secret: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not secret:
        print("modelrouter: no secret given", file=sys.stderr)
        return 1
    print(HASH_PREFIX + hash_secret(secret))
    return 0


# --- admin users -------------------------------------------------------------------------------------------


def _register_admin(subparsers: Subparsers) -> None:
    options = _store_options()
    admin = subparsers.add_parser("admin", parents=[options], help="manage admin users in the store")
    commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    source = f"password from ${PASSWORD_ENV}, else asked twice; with no terminal, generated and printed once"

    create = commands.add_parser("create", parents=[options], help=f"create an admin user ({source})")
    create.add_argument("username")
    create.add_argument("--role", choices=ROLES, default="admin", help="default: admin")
    create.set_defaults(func=_with_store(_admin_create), parser=create)

    reset = commands.add_parser(
        "reset-password", parents=[options], help=f"set a new password and log the user out ({source})"
    )
    reset.add_argument("username")
    reset.set_defaults(func=_with_store(_admin_reset_password), parser=reset)

    for name, handler, text in (
        ("disable", _admin_disable, "stop an admin user from logging in"),
        ("enable", _admin_enable, "let a disabled admin user log in again"),
    ):
        command = commands.add_parser(name, parents=[options], help=text)
        command.add_argument("username")
        command.set_defaults(func=_with_store(handler), parser=command)

    listing = commands.add_parser("list", parents=[options], help="list admin users")
    listing.set_defaults(func=_with_store(_admin_list), parser=listing)


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
    await store.audit(_actor(), "admin.create", f"admin:{record.username}", {"role": record.role})
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
    await store.audit(_actor(), "admin.reset_password", f"admin:{args.username}")
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
    await store.audit(_actor(), f"admin.{action[:-1]}", f"admin:{record.username}")
    print(f"Admin {record.username!r} {action}.")
    return 0


async def _admin_list(store: Store, args: argparse.Namespace) -> int:
    rows = [
        (str(a.id), a.username, a.role, "yes" if a.disabled else "no", _when(a.created_at))
        for a in await store.list_admins()
    ]
    _table(("ID", "USERNAME", "ROLE", "DISABLED", "CREATED"), rows)
    return 0


# --- output --------------------------------------------------------------------------------------------------


def _when(ts: float | None, never: str = "never") -> str:
    return never if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
