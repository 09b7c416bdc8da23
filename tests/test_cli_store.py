"""``modelrouter keys ...`` and ``modelrouter admin ...`` run as real processes against a temporary data dir,
while the test holds its own Store open on the same file, as a running gateway would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from modelrouter.access.keys import hash_secret
from modelrouter.config.model import ApiKeyConfig, StoreConfig
from modelrouter.store import Store

T = TypeVar("T")
SECRET_LINE = re.compile(r"^secret: (mr-\S+)$", re.MULTILINE)


def cli(
    *args: str,
    data_dir: Path | None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run modelrouter with ``args`` (plus ``--data-dir``), no terminal on stdin."""
    environ = {k: v for k, v in os.environ.items() if k != "MODELROUTER_ADMIN_PASSWORD"}
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "modelrouter", *args, *where],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        timeout=60,
        cwd=cwd,
    )


def ok(*args: str, data_dir: Path | None, **kwargs: Any) -> str:
    result = cli(*args, data_dir=data_dir, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


def with_store(data_dir: Path, use: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        async with await Store.open(StoreConfig(data_dir=str(data_dir))) as store:
            return await use(store)

    return asyncio.run(main())


def secret_in(output: str) -> str:
    [secret] = SECRET_LINE.findall(output)
    return str(secret)


async def _nothing(store: Store) -> None:
    return None


def make_store(data_dir: Path) -> Path:
    """A store as `modelrouter serve` or `store init` leaves it."""
    with_store(data_dir, _nothing)
    return data_dir


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_store(tmp_path / "data")


def test_create_prints_the_secret_once_and_list_never(data_dir: Path) -> None:
    out = ok(
        "keys", "create", "ci-bot", "--models", "gpt-4o, llama3", "--services", "chat,embedding",
        "--expires-in-days", "30", "--rpm", "60", "--tpm", "10000", "--max-concurrent", "4",
        "--daily-tokens", "100000", "--monthly-tokens", "2000000", data_dir=data_dir,
    )  # fmt: skip
    secret = secret_in(out)
    assert "Store it now" in out
    assert out.count(secret) == 1

    record = with_store(data_dir, lambda s: s.get_key(1))
    assert record is not None
    assert (record.name, record.hash, record.prefix) == ("ci-bot", hash_secret(secret), secret[:12])
    assert record.models == ("gpt-4o", "llama3")
    assert record.services == ("chat", "embedding")
    q = record.quotas
    assert (q.requests_per_minute, q.tokens_per_minute, q.max_concurrent) == (60, 10000, 4)
    assert (q.daily_tokens, q.monthly_tokens) == (100000, 2000000)
    assert record.expires_at is not None
    assert record.expires_at - record.created_at == pytest.approx(30 * 86400, abs=5)

    listing = ok("keys", "list", data_dir=data_dir)
    assert listing.splitlines()[0].split() == ["ID", "NAME", "PREFIX", "STATUS", "EXPIRES", "REVOKED"]
    assert "ci-bot" in listing
    assert record.prefix in listing
    as_json = ok("keys", "list", "--json", data_dir=data_dir)
    for shown in (listing, as_json):
        assert secret[12:] not in shown
        assert record.hash not in shown
    [item] = json.loads(as_json)
    assert "hash" not in item
    assert (item["id"], item["prefix"], item["active"]) == (1, record.prefix, True)


def test_create_json_and_a_running_store_sees_it(data_dir: Path) -> None:
    async def scenario(store: Store) -> None:
        before = await store.keys_version()
        # The CLI is a separate process writing to the file this store (the "gateway") has open.
        out = await asyncio.to_thread(ok, "keys", "create", "bob", "--json", data_dir=data_dir)
        created = json.loads(out)
        assert created["secret"].startswith("mr-")
        assert "hash" not in created
        assert await store.keys_version() == before + 1
        record = await store.get_key_by_hash(hash_secret(created["secret"]))
        assert record is not None
        assert record.id == created["id"]

    with_store(data_dir, scenario)


def test_disable_enable_revoke(data_dir: Path) -> None:
    ok("keys", "create", "a", data_dir=data_dir)
    assert "disabled" in ok("keys", "disable", "1", data_dir=data_dir)
    assert "1   a" in ok("keys", "list", data_dir=data_dir)
    assert json.loads(ok("keys", "list", "--json", data_dir=data_dir))[0]["enabled"] is False
    ok("keys", "enable", "1", data_dir=data_dir)
    assert json.loads(ok("keys", "list", "--json", data_dir=data_dir))[0]["active"] is True

    assert "revoked" in ok("keys", "revoke", "1", data_dir=data_dir)
    [item] = json.loads(ok("keys", "list", "--json", data_dir=data_dir))
    assert item["revoked_at"] is not None
    assert item["active"] is False
    assert "UTC" in ok("keys", "list", data_dir=data_dir).splitlines()[1].split("  ")[-1]

    again = cli("keys", "enable", "1", data_dir=data_dir)
    assert again.returncode == 1
    assert "revoked" in again.stderr


def test_rotate_prints_a_new_secret(data_dir: Path) -> None:
    old = secret_in(ok("keys", "create", "svc", "--models", "m", data_dir=data_dir))
    out = ok("keys", "rotate", "1", data_dir=data_dir)
    new = secret_in(out)
    assert new != old
    assert "Store it now" in out
    record = with_store(data_dir, lambda s: s.get_key(1))
    assert record is not None
    assert (record.hash, record.models) == (hash_secret(new), ("m",))
    assert new[12:] not in ok("keys", "list", data_dir=data_dir)


def test_keys_by_prefix_and_unknown_keys(data_dir: Path) -> None:
    secret = secret_in(ok("keys", "create", "a", data_dir=data_dir))
    ok("keys", "disable", secret[:12], data_dir=data_dir)
    assert json.loads(ok("keys", "list", "--json", data_dir=data_dir))[0]["enabled"] is False
    for command in ("disable", "enable", "revoke", "rotate", "delete"):
        result = cli("keys", command, "42", data_dir=data_dir)
        assert result.returncode == 1, command
        assert "no key with id, prefix or name '42'" in result.stderr
    assert "deleted" in ok("keys", "delete", "1", data_dir=data_dir)
    assert json.loads(ok("keys", "list", "--json", data_dir=data_dir)) == []


def test_hash_for_the_config_file(data_dir: Path) -> None:
    secret = "mr-0123456789abcdefghijklmnopqrstuvwxyzABCD"
    from_arg = ok("keys", "hash", secret, data_dir=None).strip()
    from_stdin = ok("keys", "hash", data_dir=None, stdin=secret + "\n").strip()
    assert from_arg == from_stdin == f"sha256:{hash_secret(secret)}"
    ApiKeyConfig(name="declared", hash=from_arg)  # the config file accepts it as it is printed
    assert cli("keys", "hash", data_dir=None, stdin="").returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "x", "--services", "chat,video"),
        ("keys", "create", "x", "--rpm", "0"),
        ("keys", "create", "x", "--max-concurrent", "many"),
        ("keys", "create"),
        ("keys",),
        ("keys", "list", "--config", "modelrouter.yaml"),  # with --data-dir from cli(): one or the other
        ("admin", "create", "root", "--role", "owner"),
    ],
)
def test_bad_usage_exits_2(data_dir: Path, args: tuple[str, ...]) -> None:
    result = cli(*args, data_dir=data_dir)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr


def test_store_from_config_file(tmp_path: Path) -> None:
    config = tmp_path / "modelrouter.yaml"
    config.write_text(f"store:\n  data_dir: {tmp_path / 'elsewhere'}\n")  # only store: locating it needs no services
    ok("store", "init", "--config", str(config), data_dir=None)
    ok("keys", "create", "a", "--config", str(config), data_dir=None)
    assert (tmp_path / "elsewhere" / "modelrouter.db").is_file()
    assert "a" in ok("keys", "list", "--config", str(config), data_dir=None)
    broken = tmp_path / "broken.yaml"
    broken.write_text("store:\n  data_dri: x\n")
    result = cli("keys", "list", "--config", str(broken), data_dir=None)
    assert result.returncode == 1
    assert "store.data_dri: unknown key" in result.stderr


def test_admin_create_with_password_from_env(data_dir: Path) -> None:
    env = {"MODELROUTER_ADMIN_PASSWORD": "correct horse battery"}
    out = ok("admin", "create", "root", data_dir=data_dir, env=env)
    assert "correct horse" not in out
    ok("admin", "create", "ops", "--role", "operator", data_dir=data_dir, env=env)
    admin = with_store(data_dir, lambda s: s.verify_admin("root", "correct horse battery"))
    assert admin is not None
    assert admin.role == "admin"

    listing = ok("admin", "list", data_dir=data_dir).splitlines()
    assert listing[0].split() == ["ID", "USERNAME", "ROLE", "DISABLED", "CREATED"]
    assert [line.split()[1:3] for line in listing[1:]] == [["root", "admin"], ["ops", "operator"]]

    again = cli("admin", "create", "root", data_dir=data_dir, env=env)
    assert again.returncode == 1
    assert "exists" in again.stderr
    short = cli("admin", "create", "x", data_dir=data_dir, env={"MODELROUTER_ADMIN_PASSWORD": "short"})
    assert short.returncode == 1
    assert "at least 8" in short.stderr


def test_admin_password_generated_without_a_terminal(data_dir: Path) -> None:
    out = ok("admin", "create", "root", data_dir=data_dir)
    [password] = re.findall(r"^password for root: (\S+)$", out, re.MULTILINE)
    assert "Store it now" in out
    assert with_store(data_dir, lambda s: s.verify_admin("root", password)) is not None


def test_admin_reset_password(data_dir: Path) -> None:
    ok("admin", "create", "root", data_dir=data_dir, env={"MODELROUTER_ADMIN_PASSWORD": "old password"})
    ok("admin", "reset-password", "root", data_dir=data_dir, env={"MODELROUTER_ADMIN_PASSWORD": "new password"})
    assert with_store(data_dir, lambda s: s.verify_admin("root", "old password")) is None
    assert with_store(data_dir, lambda s: s.verify_admin("root", "new password")) is not None
    missing = cli("admin", "reset-password", "nobody", data_dir=data_dir)
    assert missing.returncode == 1
    assert "no admin named 'nobody'" in missing.stderr


def test_cli_changes_are_audited(data_dir: Path) -> None:
    ok("keys", "create", "a", data_dir=data_dir)
    ok("keys", "revoke", "1", data_dir=data_dir)
    ok("admin", "create", "root", data_dir=data_dir, env={"MODELROUTER_ADMIN_PASSWORD": "password1"})
    entries = with_store(data_dir, lambda s: s.list_audit())
    assert [(e.action, e.target) for e in entries] == [
        ("admin.create", "admin:root"),
        ("key.revoke", "key:1"),
        ("key.create", "key:1"),
    ]
    assert all(e.actor.startswith("cli") for e in entries)


# --- which store: shown, and never created by accident -------------------------------------------------------


def store_line(data_dir: Path) -> str:
    """What every store command prints first on stderr for a SQLite store in ``data_dir``."""
    return f"store: {(data_dir / 'modelrouter.db').resolve()}\n"


def store_file(tmp_path: Path, config: StoreConfig) -> Path:
    """A config file that locates ``config``'s store, with nothing else in it."""
    path = tmp_path / "where.yaml"
    where = {"database_url": config.database_url} if config.database_url else {"data_dir": config.data_dir}
    path.write_text(json.dumps({"store": where}), encoding="utf-8")  # JSON is YAML
    return path


READ_AND_WRITE_COMMANDS = [
    ("keys", "list"),
    ("keys", "create", "ci-bot"),
    ("keys", "revoke", "ci-bot"),
    ("admin", "list"),
    ("admin", "create", "root"),
    ("config", "versions"),
    ("config", "rollback", "1"),
]


def test_store_commands_from_another_directory_refuse_instead_of_creating_a_store(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    expected = elsewhere / "data" / "modelrouter.db"
    for args in READ_AND_WRITE_COMMANDS:
        result = cli(*args, data_dir=None, cwd=elsewhere, env={"MODELROUTER_ADMIN_PASSWORD": "password1"})
        assert (result.returncode, result.stdout) == (1, ""), (args, result.stderr)
        lines = result.stderr.splitlines()
        assert lines[0] == f"store: {expected}", args
        assert f"no store at {expected}" in result.stderr, args
        assert "modelrouter store init" in result.stderr, args  # how to make one ...
        assert "--data-dir" in result.stderr, args  # ... or how to point at the right one
    assert list(elsewhere.iterdir()) == []  # not even ./data


def test_store_init_creates_the_store_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = cli("store", "init", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    assert created.stderr == store_line(data_dir)
    assert created.stdout == f"Created the store at {(data_dir / 'modelrouter.db').resolve()}.\n"
    again = ok("store", "init", data_dir=data_dir)
    assert "exists already" in again
    assert with_store(data_dir, lambda s: s.list_keys()) == []
    # Now the commands work on it; their tables on stdout, where the store is on stderr.
    ok("keys", "create", "a", data_dir=data_dir)
    listed = cli("keys", "list", "--json", data_dir=data_dir)
    assert result_ok(listed).startswith("[")
    assert [item["name"] for item in json.loads(listed.stdout)] == ["a"]
    assert listed.stderr == store_line(data_dir)


def result_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_database_without_the_schema_is_refused_and_left_alone(store_config: StoreConfig, tmp_path: Path) -> None:
    """PostgreSQL: "exists" means reachable and migrated. Read commands never create the schema, and the
    password in the URL is never printed."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    password = "pw-never-printed"
    if store_config.database_url:  # the test server trusts local users: any password is accepted
        url = sa.make_url(store_config.database_url).set(password=password)
        store_config = StoreConfig(database_url=url.render_as_string(hide_password=False))
    where = store_file(tmp_path, store_config)
    for args in READ_AND_WRITE_COMMANDS:
        result = cli(*args, "--config", str(where), data_dir=None, env={"MODELROUTER_ADMIN_PASSWORD": "password1"})
        assert (result.returncode, result.stdout) == (1, ""), (args, result.stderr)
        assert result.stderr.startswith("store: "), args
        assert f"modelrouter store init --config {where}" in result.stderr, args
        assert password not in result.stderr, args

    async def tables(url: str) -> list[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        finally:
            await engine.dispose()

    if store_config.database_url:
        assert asyncio.run(tables(store_config.database_url)) == []  # not even the schema's version table
    else:
        assert not Path(store_config.data_dir).exists()  # not even the directory

    created = cli("store", "init", "--config", str(where), data_dir=None)
    assert created.returncode == 0, created.stderr
    assert password not in created.stdout + created.stderr
    if store_config.database_url:
        assert created.stderr.startswith("store: postgresql")
        assert ":***@127.0.0.1" in created.stderr
    assert json.loads(ok("keys", "list", "--json", "--config", str(where), data_dir=None)) == []


# --- keys by name ----------------------------------------------------------------------------------------------


def key_rows(data_dir: Path) -> dict[str, list[str]]:
    """`keys list` as {name: [id, name, prefix, status, ...]}."""
    return {row.split()[1]: row.split() for row in ok("keys", "list", data_dir=data_dir).splitlines()[1:]}


def test_keys_by_name(data_dir: Path) -> None:
    ok("keys", "create", "ci-bot", data_dir=data_dir)
    ok("keys", "create", "other", data_dir=data_dir)
    assert "Key 1 'ci-bot' disabled." in ok("keys", "disable", "ci-bot", data_dir=data_dir)
    assert [row[3] for row in key_rows(data_dir).values()] == ["disabled", "active"]
    ok("keys", "enable", "ci-bot", data_dir=data_dir)
    new = secret_in(ok("keys", "rotate", "ci-bot", data_dir=data_dir))
    record = with_store(data_dir, lambda s: s.get_key(1))
    assert record is not None
    assert record.hash == hash_secret(new)
    assert "Key 1 'ci-bot' revoked." in ok("keys", "revoke", "ci-bot", data_dir=data_dir)
    assert "Key 1 'ci-bot' deleted." in ok("keys", "delete", "ci-bot", data_dir=data_dir)
    assert list(key_rows(data_dir)) == ["other"]


def test_a_name_two_keys_share_is_refused_listing_their_ids(data_dir: Path) -> None:
    async def twins(store: Store) -> None:  # as an older modelrouter allowed: written past the store's check
        import sqlalchemy as sa

        from modelrouter.store.schema import api_keys

        await store.create_key("twin")
        await store.create_key("twin-2")
        async with store._write() as conn:
            await conn.execute(sa.update(api_keys).where(api_keys.c.name == "twin-2").values(name="twin"))

    with_store(data_dir, twins)
    for command in ("disable", "revoke", "rotate", "delete"):
        result = cli("keys", command, "twin", data_dir=data_dir)
        assert result.returncode == 1, command
        assert "2 keys are named 'twin' (ids 1, 2)" in result.stderr, command
    assert [row[3] for row in key_rows(data_dir).values()] == ["active"]  # both keys untouched (one name shown)
    assert len(json.loads(ok("keys", "list", "--json", data_dir=data_dir))) == 2


def test_create_refuses_a_name_in_use(data_dir: Path) -> None:
    ok("keys", "create", "ci-bot", data_dir=data_dir)
    again = cli("keys", "create", "ci-bot", data_dir=data_dir)
    assert (again.returncode, again.stdout) == (1, "")
    assert "a key named 'ci-bot' exists already (id 1)" in again.stderr
    digits = cli("keys", "create", "42", data_dir=data_dir)  # it would read as an id
    assert digits.returncode == 1
    assert "only digits" in digits.stderr
    assert [item["name"] for item in json.loads(ok("keys", "list", "--json", data_dir=data_dir))] == ["ci-bot"]


def test_list_shows_each_keys_status(data_dir: Path) -> None:
    for name in ("live", "paused", "gone"):
        ok("keys", "create", name, data_dir=data_dir)
    ok("keys", "disable", "paused", data_dir=data_dir)
    ok("keys", "revoke", "gone", data_dir=data_dir)

    async def expired(store: Store) -> None:
        await store.create_key("old", expires_at=1.0)

    with_store(data_dir, expired)
    rows = key_rows(data_dir)
    assert {name: row[3] for name, row in rows.items()} == {
        "live": "active",
        "paused": "disabled",
        "gone": "revoked",
        "old": "expired",
    }
    assert rows["gone"][-1] == "UTC"  # when it was revoked


@pytest.mark.parametrize("url", ["nonsense:pw-never-printed", "postgresql://u:pw-never-printed@host:99x/db"])
def test_a_malformed_database_url_is_refused_without_its_password(tmp_path: Path, url: str) -> None:
    where = store_file(tmp_path, StoreConfig(database_url=url))
    result = cli("keys", "list", "--config", str(where), data_dir=None)
    assert (result.returncode, result.stdout) == (1, "")
    assert "store.database_url is not a database URL" in result.stderr
    assert "pw-never-printed" not in result.stderr
