"""``modelrouter config ...`` run as real processes against a temporary SQLite store; and end to end, a gateway in
store mode that picks up what the CLI imports and rolls back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from modelrouter.config.model import StoreConfig
from modelrouter.store import Store

from .servers import free_port
from .test_cli_store import cli, make_store, ok, store_file, store_line, with_store
from .test_lifecycle import GatewayProcess, wait_until

UNSET_VAR = "MODELROUTER_TEST_CLI_CONFIG_TOKEN"  # set only where a test passes it

# Comments, flow style and odd quoting: a YAML round trip would change them, so "exact text" is tested for real.
FIRST = """\
# the first config
health_check: {enabled: false}
aliases:
  gpt-4o: m-a   # the default model
services:
  chat:
    instances:
      - {name: m-a, base_url: 'http://127.0.0.1:9'}
"""
SECOND = FIRST.replace("      - {name: m-a", "      - {name: m-b, base_url: 'http://127.0.0.1:9'}\n      - {name: m-a")
INVALID = """\
services:
  chat:
    instances:
      - {name: x, base_url: not-a-url, wieght: 2}
"""
STORE_MODE_NOTE = "a gateway running with --config-source store applies it within a second"
STORE_MODE = ("--config-source", "store")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_store(tmp_path / "data")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def newest(data_dir: Path) -> int | None:
    async def read(store: Store) -> int | None:
        return await store.latest_config_version_id()

    return with_store(data_dir, read)


def test_import_list_show_diff_rollback_export(tmp_path: Path, data_dir: Path) -> None:
    first = write(tmp_path / "first.yaml", FIRST)
    out = ok("config", "import", str(first), data_dir=data_dir)
    assert out == f"version 1 saved; {STORE_MODE_NOTE}; a gateway in file mode keeps serving its file\n"
    assert ok("config", "show", data_dir=data_dir) == FIRST
    assert ok("config", "show", "1", data_dir=data_dir) == FIRST

    # The same text again is not a new version.
    again = ok("config", "import", str(first), data_dir=data_dir)
    assert "same as version 1" in again
    assert "nothing saved" in again
    assert newest(data_dir) == 1

    second = write(tmp_path / "second.yaml", SECOND)
    assert "version 2 saved" in ok("config", "import", str(second), "--comment", "add m-b", data_dir=data_dir)
    listing = ok("config", "versions", data_dir=data_dir).splitlines()
    assert listing[0].split() == ["ID", "TIME", "AUTHOR", "COMMENT"]
    assert listing[1].split()[0:3:2] == ["2*", "cli"]  # newest first, marked
    assert listing[1].endswith("add m-b")
    assert listing[2].split()[0:3:2] == ["1", "cli"]
    assert listing[2].endswith(f"imported from {first}")
    assert listing[1].split()[1].endswith("Z")  # UTC, ISO 8601
    assert listing[-1].startswith("* newest")
    assert len(ok("config", "versions", "--limit", "1", data_dir=data_dir).splitlines()) == 3

    diff = ok("config", "diff", "1", data_dir=data_dir)  # B: the newest
    assert diff.startswith("--- version 1\n+++ version 2\n")
    assert "\n+      - {name: m-b, base_url: 'http://127.0.0.1:9'}\n" in diff
    assert not [line for line in diff.splitlines()[2:] if line.startswith("-")]
    assert ok("config", "diff", "2", "1", data_dir=data_dir).startswith("--- version 2\n+++ version 1\n")
    same = cli("config", "diff", "2", "2", data_dir=data_dir)
    assert (same.returncode, same.stdout, same.stderr) == (
        0,
        "",
        store_line(data_dir) + "versions 2 and 2 are the same\n",
    )

    out = ok("config", "rollback", "1", data_dir=data_dir)
    assert out.startswith("version 3 saved; ")
    assert STORE_MODE_NOTE in out
    assert ok("config", "show", "3", data_dir=data_dir) == FIRST
    assert ok("config", "versions", data_dir=data_dir).splitlines()[1].split()[0:3:2] == ["3*", "cli"]
    assert "rollback to version 1" in ok("config", "versions", data_dir=data_dir).splitlines()[1]
    assert cli("config", "diff", "1", data_dir=data_dir).stderr.endswith("\nversions 1 and 3 are the same\n")

    backup = tmp_path / "backup.yaml"
    assert ok("config", "export", "-o", str(backup), data_dir=data_dir) == f"version 3 written to {backup}\n"
    assert backup.read_text(encoding="utf-8") == FIRST
    assert ok("config", "export", "2", data_dir=data_dir) == SECOND

    # Each change is also in the audit log, by the CLI.
    entries = with_store(data_dir, lambda s: s.list_audit())
    assert [(e.action, e.target) for e in entries] == [
        ("config.rollback", "config:3"),
        ("config.import", "config:2"),
        ("config.import", "config:1"),
    ]
    assert all(e.actor.startswith("cli") for e in entries)


def test_invalid_import_lists_problems_and_saves_nothing(tmp_path: Path, data_dir: Path) -> None:
    bad = write(tmp_path / "bad.yaml", INVALID)
    nowhere = tmp_path / "nowhere"
    result = cli("config", "import", str(bad), data_dir=nowhere)
    assert result.returncode == 1
    assert result.stdout == ""
    problems = result.stderr.splitlines()
    assert f"{bad}: services.chat.instances[0].base_url: not a URL" in result.stderr
    assert f"{bad}: services.chat.instances[0].wieght: unknown key (did you mean `weight`?)" in problems
    assert problems[-1] == f"{bad}: 2 problem(s); nothing saved"
    assert not nowhere.exists()  # validated before the store is opened: not even an empty one is made

    ok("config", "import", str(write(tmp_path / "good.yaml", FIRST)), data_dir=data_dir)
    for text in (INVALID, "services: [\n"):
        assert cli("config", "import", str(write(bad, text)), data_dir=data_dir).returncode == 1
    assert "not valid YAML" in cli("config", "import", str(bad), data_dir=data_dir).stderr
    missing = cli("config", "import", str(tmp_path / "missing.yaml"), data_dir=data_dir)
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
    assert newest(data_dir) == 1


def test_rollback_validates_with_this_environment(tmp_path: Path, data_dir: Path) -> None:
    header = "headers: {X-Key: '${" + UNSET_VAR + "}'}"
    with_secret = FIRST.replace("'http://127.0.0.1:9'}", f"'http://127.0.0.1:9', {header}}}")
    ok("config", "import", str(write(tmp_path / "a.yaml", with_secret)), data_dir=data_dir, env={UNSET_VAR: "s3"})
    assert ok("config", "show", data_dir=data_dir) == with_secret  # kept as a reference: the secret is not stored
    ok("config", "import", str(write(tmp_path / "b.yaml", SECOND)), data_dir=data_dir)

    result = cli("config", "rollback", "1", data_dir=data_dir)
    assert result.returncode == 1
    assert (
        f"version 1: services.chat.instances[0].headers.X-Key: environment variable {UNSET_VAR} is not set"
        in result.stderr
    )
    assert "nothing saved" in result.stderr
    assert newest(data_dir) == 2

    out = ok("config", "rollback", "1", "--comment", "back to the token", data_dir=data_dir, env={UNSET_VAR: "s3"})
    assert out.startswith("version 3 saved")
    assert ok("config", "versions", data_dir=data_dir).splitlines()[1].endswith("back to the token")
    # Rolling back to the text the newest already has makes no new version.
    assert "nothing saved" in ok("config", "rollback", "3", data_dir=data_dir, env={UNSET_VAR: "s3"})
    assert newest(data_dir) == 3


def test_missing_versions(tmp_path: Path, data_dir: Path) -> None:
    empty = cli("config", "show", data_dir=data_dir)
    assert (empty.returncode, empty.stderr) == (
        1,
        store_line(data_dir) + "modelrouter: no config versions in the store yet\n",
    )
    none = cli("config", "versions", data_dir=data_dir)
    assert (none.returncode, none.stdout) == (0, "")

    ok("config", "import", str(write(tmp_path / "a.yaml", FIRST)), data_dir=data_dir)
    for args in (("show", "7"), ("export", "7"), ("diff", "7"), ("diff", "1", "7"), ("rollback", "7")):
        result = cli("config", *args, data_dir=data_dir)
        assert (result.returncode, result.stdout) == (1, ""), args
        assert result.stderr == store_line(data_dir) + "modelrouter: no version 7\n", args
    unwritable = cli("config", "export", "-o", str(tmp_path / "no" / "such" / "dir.yaml"), data_dir=data_dir)
    assert unwritable.returncode == 1
    assert "cannot write" in unwritable.stderr
    assert newest(data_dir) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("config",),
        ("config", "show", "latest"),
        ("config", "show", "0"),
        ("config", "show", "1", "2"),
        ("config", "diff"),
        ("config", "rollback"),
        ("config", "import"),
        ("config", "versions", "--limit", "0"),
        ("config", "export", "-o"),
        ("config", "versions", "--config", "modelrouter.yaml"),  # with --data-dir from cli(): one or the other
    ],
)
def test_bad_usage_exits_2(data_dir: Path, args: tuple[str, ...]) -> None:
    result = cli(*args, data_dir=data_dir)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr


def test_config_locates_the_store_and_file_is_what_is_imported(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    where = write(tmp_path / "modelrouter.yaml", f"store:\n  data_dir: {elsewhere}\n")
    first = write(tmp_path / "first.yaml", FIRST)
    ok("store", "init", "--config", str(where), data_dir=None)
    ok("config", "import", str(first), "--config", str(where), data_dir=None)
    assert newest(elsewhere) == 1
    assert ok("config", "--config", str(where), "show", data_dir=None) == FIRST  # the imported file, not --config's
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------------------------------------- end to end


class ServeProcess(GatewayProcess):
    """``modelrouter serve --config FILE --data-dir DIR [OPTION ...]`` in a child process."""

    def __init__(self, config_path: Path, log_path: Path, data_dir: Path, *options: str) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "modelrouter", "serve", "--config", str(config_path), *options]
        command += ["--data-dir", str(data_dir), "--host", "127.0.0.1"]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )


@pytest.fixture
def store_mode_gateway(tmp_path: Path, data_dir: Path) -> Iterator[ServeProcess]:
    gw = ServeProcess(write(tmp_path / "seed.yaml", FIRST), tmp_path / "gateway.log", data_dir, *STORE_MODE)
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.kill()


def test_a_store_mode_gateway_applies_import_and_rollback(
    tmp_path: Path, data_dir: Path, store_mode_gateway: ServeProcess
) -> None:
    gw = store_mode_gateway
    assert gw.models() == {"m-a", "gpt-4o"}
    versions = ok("config", "versions", data_dir=data_dir).splitlines()
    assert versions[1].split()[0:3:2] == ["1*", "seed"]  # the file seeded the empty store

    out = ok("config", "import", str(write(tmp_path / "second.yaml", SECOND)), data_dir=data_dir)
    assert out.startswith("version 2 saved")
    wait_until(lambda: gw.models() == {"m-a", "m-b", "gpt-4o"}, "the imported version to be served")

    assert ok("config", "rollback", "1", data_dir=data_dir).startswith("version 3 saved")
    wait_until(lambda: gw.models() == {"m-a", "gpt-4o"}, "the rollback to be served")
    assert "version 3 serving (rollback to version 1, by cli)" in gw.log()
    assert gw.proc.poll() is None


def test_import_into_a_missing_store_is_refused(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    result = cli("config", "import", str(write(tmp_path / "a.yaml", FIRST)), data_dir=nowhere)
    assert (result.returncode, result.stdout) == (1, "")
    assert f"no store at {(nowhere / 'modelrouter.db').resolve()}" in result.stderr
    assert not nowhere.exists()


def test_rollback_and_import_are_refused_while_the_store_is_served_in_file_mode(tmp_path: Path, data_dir: Path) -> None:
    """In file mode the gateway serves its file: a version saved by the CLI would be marked newest and never served.
    Once a gateway serves the same store in store mode, the rollback is saved and served."""
    path = write(tmp_path / "gateway.yaml", FIRST)
    both = {"m-a", "m-b", "gpt-4o"}
    gw = ServeProcess(path, tmp_path / "file-mode.log", data_dir)  # file mode: the default
    try:
        gw.wait_ready()
        write(path, SECOND)  # the gateway reloads its file and records it: version 2
        wait_until(lambda: gw.models() == both, "the changed file to be served")
        wait_until(lambda: newest(data_dir) == 2, "the reloaded file to be recorded")
        other = write(tmp_path / "other.yaml", FIRST.replace("m-a", "m-c"))
        for args in (("rollback", "1"), ("import", str(other))):
            result = cli("config", *args, data_dir=data_dir)
            assert (result.returncode, result.stdout) == (1, ""), args
            assert "modelrouter: file mode: " in result.stderr, args
            assert "edit the file (or write version N to it with `modelrouter config export N -o FILE`)" in (
                result.stderr
            ), args
        assert newest(data_dir) == 2  # the newest version is the one served
        assert gw.models() == both
    finally:
        gw.kill()

    gw = ServeProcess(path, tmp_path / "store-mode.log", data_dir, *STORE_MODE)
    try:
        gw.wait_ready()
        assert ok("config", "rollback", "1", data_dir=data_dir).startswith("version 3 saved")
        wait_until(lambda: gw.models() == {"m-a", "gpt-4o"}, "the rollback to be served")
    finally:
        gw.kill()


def test_the_mode_a_gateway_last_started_in_decides(store_config: StoreConfig, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: the mode is noted at each start (the last one wins), and rollback follows it."""
    where = store_file(tmp_path, store_config)

    async def start(mode: Literal["file", "store"]) -> None:  # what ConfigControl.start does first
        async with await Store.open(store_config) as store:
            if await store.latest_config_version_id() is None:
                await store.add_config_version(FIRST, author="file", comment="seed")
                await store.add_config_version(SECOND, author="file", comment="edit")
            await store.record_config_mode(mode)

    for mode in ("store", "file"):
        asyncio.run(start(mode))
    refused = cli("config", "rollback", "1", "--config", str(where), data_dir=None)
    assert refused.returncode == 1
    assert "file mode: " in refused.stderr
    asyncio.run(start("store"))
    assert ok("config", "rollback", "1", "--config", str(where), data_dir=None).startswith("version 3 saved")
