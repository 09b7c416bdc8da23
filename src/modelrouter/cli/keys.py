"""``modelrouter keys ...``: client keys, managed directly in the store whether the gateway runs or not (a running
gateway notices key changes within ``store.refresh_interval``)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import TYPE_CHECKING

from ..access.keys import HASH_PREFIX, hash_secret
from ..config.model import SERVICE_NAMES, KeyQuotas

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: import it only when a command runs
    from ..store import KeyRecord, Store
from .common import CommandError, Subparsers, actor, positive, store_options, table, when, with_store

__all__ = ["register"]


# --- keys ----------------------------------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    options = store_options()
    keys = subparsers.add_parser("keys", parents=[options], help="manage client API keys in the store")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", parents=[options], help="create a key; prints its secret once")
    create.add_argument("name")
    create.add_argument("--models", type=_names, default=(), metavar="M1,M2", help="allowed models (default: all)")
    create.add_argument(
        "--services", type=_services, default=(), metavar="S1,S2", help=f"allowed services: {', '.join(SERVICE_NAMES)}"
    )
    create.add_argument("--expires-in-days", type=positive(float), metavar="N")
    create.add_argument("--rpm", type=positive(float), metavar="N", help="requests per minute")
    create.add_argument("--tpm", type=positive(float), metavar="N", help="tokens per minute")
    create.add_argument("--max-concurrent", type=positive(int), metavar="N", help="requests in flight at once")
    create.add_argument("--daily-requests", type=positive(int), metavar="N")
    create.add_argument("--daily-tokens", type=positive(int), metavar="N")
    create.add_argument("--monthly-requests", type=positive(int), metavar="N")
    create.add_argument("--monthly-tokens", type=positive(int), metavar="N")
    create.add_argument("--json", action="store_true", help="print the result as JSON")
    create.set_defaults(func=with_store(_keys_create), parser=create)

    listing = commands.add_parser("list", parents=[options], help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    listing.set_defaults(func=with_store(_keys_list), parser=listing)

    for name, handler, text in (
        ("disable", _keys_disable, "stop a key from authenticating (can be enabled again)"),
        ("enable", _keys_enable, "let a disabled key authenticate again"),
        ("revoke", _keys_revoke, "revoke a key for good"),
        ("rotate", _keys_rotate, "give a key a new secret (printed once); the old one stops working"),
        ("delete", _keys_delete, "remove a key from the store"),
    ):
        command = commands.add_parser(name, parents=[options], help=text)
        command.add_argument("key", metavar="KEY", help="the key's id, prefix or name, as shown by `keys list`")
        command.set_defaults(func=with_store(handler), parser=command)

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
    await store.audit(actor(), "key.create", f"key:{record.id}", {"name": record.name, "prefix": record.prefix})
    if args.json:
        print(json.dumps({**record.public_view(time.time()), "secret": secret}))
        return 0
    print(f"Created key {record.id} {record.name!r} (prefix {record.prefix}, expires {when(record.expires_at)}).")
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
        (str(r.id), r.name, r.prefix, _status(r, now), when(r.expires_at), when(r.revoked_at, "-")) for r in records
    ]
    table(("ID", "NAME", "PREFIX", "STATUS", "EXPIRES", "REVOKED"), rows)
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
    await store.audit(actor(), f"key.{action[:-1]}", f"key:{record.id}", {"name": record.name})
    print(f"Key {record.id} {record.name!r} {action}.")
    return 0


async def _keys_revoke(store: Store, args: argparse.Namespace) -> int:
    record = await store.revoke_key((await _find_key(store, args)).id)
    await store.audit(actor(), "key.revoke", f"key:{record.id}", {"name": record.name})
    print(f"Key {record.id} {record.name!r} revoked.")
    return 0


async def _keys_rotate(store: Store, args: argparse.Namespace) -> int:
    record = await _find_key(store, args)
    secret = await store.rotate_key(record.id)
    await store.audit(actor(), "key.rotate", f"key:{record.id}", {"name": record.name})
    print(f"Key {record.id} {record.name!r} has a new secret; the old one no longer works.")
    _print_secret(secret)
    return 0


async def _keys_delete(store: Store, args: argparse.Namespace) -> int:
    record = await _find_key(store, args)
    await store.delete_key(record.id)
    await store.audit(actor(), "key.delete", f"key:{record.id}", {"name": record.name, "prefix": record.prefix})
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
