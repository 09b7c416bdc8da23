"""Secrets never written plainly into the store's config versions: store mode refuses a literal secret (admin
API, ``config import``/``rollback``, the seed at start), file mode records the file with it masked. With real
stores: SQLite and PostgreSQL, their raw rows searched for the secret."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from modelrouter.config.load import ConfigError
from modelrouter.config.model import Config, StoreConfig
from modelrouter.control.source import (
    MASK,
    ConfigControl,
    Mode,
    dump_document,
    masked,
    parse_text,
    secret_problems,
    stored_text,
)
from modelrouter.store import Store
from modelrouter.store.schema import metadata

from .fakes import FakeOpenAI
from .servers import GatewayServer
from .test_cli_config import FIRST, newest, write
from .test_cli_store import cli, ok, with_store
from .test_control_plane import Admin

LITERAL = "Bearer sk-upstream-literal-0001"
ENV_VAR = "MODELROUTER_TEST_UPSTREAM_KEY"


def _instance(url: str, authorization: str) -> dict[str, Any]:
    return {"name": "m", "base_url": url, "headers": {"Authorization": authorization, "anthropic-version": "2023-06"}}


def _config(url: str, authorization: str, store_config: StoreConfig) -> dict[str, Any]:
    return {
        "services": {"chat": {"instances": [_instance(url, authorization)]}},
        "store": store_config.model_dump(exclude_defaults=True),
    }


def _raw_rows(store_config: StoreConfig) -> str:
    """Every row of every table, as text: where a secret would show if it were stored anywhere."""

    async def read(store: Store) -> str:
        async with store._engine.connect() as conn:
            return repr([(await conn.execute(table.select())).all() for table in metadata.sorted_tables])

    async def main() -> str:
        async with await Store.open(store_config) as store:
            return await read(store)

    return asyncio.run(main())


def _texts(store_config: StoreConfig) -> list[str]:
    async def main() -> list[str]:
        async with await Store.open(store_config) as store:
            return [v.config for v in await store.list_config_versions(100)]

    return asyncio.run(main())


# --- the rule ---------------------------------------------------------------------------------------------------


def _headers(**headers: str) -> str:
    return dump_document(
        {"services": {"chat": {"instances": [{"name": "m", "base_url": "http://a", "headers": headers}]}}}
    )


@pytest.mark.parametrize(
    "name", ["Authorization", "proxy-authorization", "X-API-Key", "api-key", "x-goog-api-key", "X-Auth-Token", "Cookie"]
)
def test_credential_headers_written_literally_are_problems(name: str) -> None:
    [problem] = secret_problems(_headers(**{name: "s3cr3t"}))
    assert problem.startswith(f"services.chat.instances[0].headers.{name}: a literal secret: give it as a ${{ENV}}")
    assert problem.endswith("the store keeps config versions in the database")


@pytest.mark.parametrize(
    "headers",
    [
        {"anthropic-version": "2023-06-01", "OpenAI-Beta": "assistants=v2"},  # not credentials by name: plain config
        {"Authorization": "${KEY}", "X-API-Key": "${KEY}"},
        {"Authorization": "Bearer ${KEY}", "Proxy-Authorization": "Basic ${PROXY_AUTH}"},
        {"Authorization": ""},
    ],
)
def test_references_and_plain_headers_are_no_problem(headers: dict[str, str]) -> None:
    text = _headers(**headers)
    assert secret_problems(text) == []
    assert stored_text(text) == text  # stored exactly as written


def test_a_default_client_keys_and_the_database_url() -> None:
    doc = {
        "services": {
            "chat": {"instances": [{"name": "m", "base_url": "http://a", "headers": {"X-Key": "${K:-sk-1}"}}]}
        },
        "auth": {"keys": [{"name": "a", "key": "mr-literal-client-key-0"}, {"name": "b", "key": "${TEAM_KEY}"}]},
        "store": {"database_url": "postgresql://app:hunter2@db/modelrouter"},
    }
    problems = secret_problems(dump_document(doc))
    # A default is a literal; a client key may be a hash instead; the database URL is masked, not refused.
    assert [p.split(": ")[0] for p in problems] == ["services.chat.instances[0].headers.X-Key", "auth.keys[0].key"]
    assert "the default of a ${VAR:-default} is stored" in problems[0]
    assert "or as hash: 'sha256:...' (printed by `modelrouter keys hash`)" in problems[1]
    stored = stored_text(dump_document(doc))
    assert "sk-1" not in stored
    assert "mr-literal-client-key-0" not in stored
    assert "hunter2" not in stored
    assert f"postgresql://app:{MASK}@db/modelrouter" in stored
    assert "${TEAM_KEY}" in stored


def test_a_redis_password_is_a_secret_and_a_reference_is_not() -> None:
    literal = {"state": {"backend": "redis", "url": "redis://:hunter2@10.0.0.5:6379/0"}}
    (problem,) = secret_problems(dump_document(literal))
    assert problem.startswith("state.url: a literal secret")
    assert "redis://:${REDIS_PASSWORD}@10.0.0.5:6379/0" in problem
    assert "hunter2" not in problem
    assert masked(literal)["state"]["url"] == f"redis://:{MASK}@10.0.0.5:6379/0"
    assert "hunter2" not in stored_text(dump_document(literal))
    for url in ("redis://:${REDIS_PASSWORD}@10.0.0.5:6379/0", "redis://10.0.0.5:6379/0", "unix:///run/redis.sock"):
        assert secret_problems(dump_document({"state": {"backend": "redis", "url": url}})) == [], url


def test_masking_keeps_the_text_as_written() -> None:
    text = FIRST.replace("'http://127.0.0.1:9'}", f"'http://127.0.0.1:9', headers: {{Authorization: {LITERAL}}}}}")
    text += "store:\n  database_url: postgresql://app:hunter2@db/x  # the password\n"
    stored = stored_text(text)
    # Only the secrets changed: comments, flow style and quoting as written.
    assert stored == text.replace(LITERAL, f'"{MASK}"').replace(
        "postgresql://app:hunter2@db/x", f'"postgresql://app:{MASK}@db/x"'
    )
    # A bare ******** would be a YAML alias: the mask is quoted, and the stored text still validates.
    assert parse_text(stored).services["chat"].instances[0].headers["Authorization"] == MASK


def test_masking_through_an_alias_falls_back_to_a_dump() -> None:
    text = (
        "x-auth: &auth sk-aliased-literal\n"
        "services: {chat: {instances: [{name: m, base_url: 'http://a', headers: {Authorization: *auth}}]}}\n"
    )
    stored = stored_text(text)
    assert "*auth" not in stored
    assert stored.splitlines()[-1].strip() == f"Authorization: '{MASK}'"


# --- store mode: refused ----------------------------------------------------------------------------------------


def test_store_mode_admin_edit_with_a_literal_secret_is_refused(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    store_config: StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, "sk-from-the-environment")
    fake, url = start_upstream("a")
    gw = start_gateway(_config(url, f"Bearer ${{{ENV_VAR}}}", store_config), config_source="store")
    admin = Admin(gw)
    refused = admin.call("PUT", "/services/chat/instances/m", json={"version": 1, "instance": _instance(url, LITERAL)})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_config")
    assert error["param"] == "services.chat.instances[0].headers.Authorization"
    assert "give it as a ${ENV} reference" in error["message"]
    assert LITERAL not in error["message"]  # the refusal does not repeat the secret
    assert admin.version() == 1
    assert LITERAL not in _raw_rows(store_config)
    assert "sk-upstream-literal" not in _raw_rows(store_config)

    reference = f"Bearer ${{{ENV_VAR}}}"
    changed = {**_instance(url, reference), "weight": 2}
    accepted = admin.call("PUT", "/services/chat/instances/m", json={"version": 1, "instance": changed})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["version"] == 2
    newest_text = _texts(store_config)[0]
    assert f"Authorization: Bearer ${{{ENV_VAR}}}" in newest_text
    assert "anthropic-version: 2023-06" in newest_text  # not a credential: stored as written
    assert "sk-from-the-environment" not in _raw_rows(store_config)
    # Applied, and served with the environment's value.
    assert gw.gateway.config.services["chat"].instances[0].weight == 2
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert fake.requests[-1].headers["Authorization"] == "Bearer sk-from-the-environment"


class _Gateway:
    """What a control needs of the gateway: its config, and the swap to a new one."""

    def __init__(self, text: str) -> None:
        self.config: Config = parse_text(text)

    def refusals(self, config: Config) -> list[str]:
        return []

    def reload(self, config: Config) -> None:
        self.config = config


def _start(
    store_config: StoreConfig, mode: Mode, text: str, *, import_text: bool = False
) -> tuple[ConfigControl, _Gateway]:
    gateway = _Gateway(text)
    control = ConfigControl(gateway, mode, text, "gateway.yaml", import_text=import_text)

    async def main() -> None:
        async with await Store.open(store_config) as store:
            await control.start(store)

    asyncio.run(main())
    return control, gateway


async def _mode(store_config: StoreConfig) -> str | None:
    async with await Store.open(store_config) as store:
        return await store.config_mode()


def test_store_mode_refuses_to_seed_or_import_a_literal_secret(
    store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "sk-from-the-environment")
    text = _headers(Authorization=LITERAL)
    with pytest.raises(ConfigError, match=r"(?s)gateway.yaml: 1 problem.*headers\.Authorization: a literal secret"):
        _start(store_config, "store", text)
    assert _texts(store_config) == []
    assert "sk-upstream-literal" not in _raw_rows(store_config)
    assert asyncio.run(_mode(store_config)) is None  # the store is left as it was

    _start(store_config, "store", _headers(Authorization="${" + ENV_VAR + "}"))
    with pytest.raises(ConfigError, match="a literal secret"):
        _start(store_config, "store", text, import_text=True)
    assert len(_texts(store_config)) == 1
    # Without --import the file is not stored, and is not refused: the store's version serves.
    control, _ = _start(store_config, "store", text)
    assert control.version == 1


# --- file mode: masked ------------------------------------------------------------------------------------------


def test_file_mode_records_literal_secrets_masked(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    store_config: StoreConfig,
) -> None:
    fake, url = start_upstream("a")
    config = _config(url, LITERAL, store_config)
    gw = start_gateway(config, config_source="file")
    control = gw.gateway.control
    assert control is not None
    assert control.version == 1
    # The file serves as written: the literal goes upstream.
    assert gw.gateway.config.services["chat"].instances[0].headers["Authorization"] == LITERAL
    [text] = _texts(store_config)
    assert f'Authorization: "{MASK}"' in text or f"Authorization: '{MASK}'" in text
    assert "anthropic-version" in text

    # The same file loaded again is no new version; a changed one is, masked too.
    again = dump_document({**config, "health_check": {"enabled": False}})
    gw.bg.run(control.file_loaded(again))
    assert control.version == 1
    changed = {**config, "health_check": {"enabled": False}, "aliases": {"gpt-4o": "m"}}
    gw.reload(changed)
    gw.bg.run(control.file_loaded(dump_document(changed)))
    assert control.version == 2
    texts = _texts(store_config)
    assert len(texts) == 2
    assert all(MASK in t for t in texts)
    assert "sk-upstream-literal" not in _raw_rows(store_config)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert fake.requests[-1].headers["Authorization"] == LITERAL


def test_store_mode_does_not_serve_a_version_masked_in_file_mode(
    store_config: StoreConfig, caplog: pytest.LogCaptureFixture
) -> None:
    text = _headers(Authorization=LITERAL)
    _start(store_config, "file", text)
    assert MASK in _texts(store_config)[0]
    with caplog.at_level(logging.ERROR, "modelrouter.config"):
        control, gateway = _start(store_config, "store", text)
    # The running config (the file's) stays: ******** must not go upstream as the credential.
    assert gateway.config.services["chat"].instances[0].headers["Authorization"] == LITERAL
    assert control.version == 1
    assert "recorded in file mode with its literal secrets masked" in caplog.text


# --- the CLI ----------------------------------------------------------------------------------------------------


def test_config_import_and_rollback_refuse_literal_secrets(tmp_path: Path, data_dir: Path) -> None:
    literal = FIRST.replace("'http://127.0.0.1:9'}", "'http://127.0.0.1:9', headers: {X-API-Key: sk-cli-literal}}")
    path = write(tmp_path / "literal.yaml", literal)
    result = cli("config", "import", str(path), data_dir=data_dir)
    assert (result.returncode, result.stdout) == (1, "")
    assert f"{path}: services.chat.instances[0].headers.X-API-Key: a literal secret: give it as" in result.stderr
    assert f"{path}: 1 problem(s); nothing saved" in result.stderr
    assert newest(data_dir) is None

    reference = literal.replace("sk-cli-literal", "'${" + ENV_VAR + "}'")
    ok("config", "import", str(write(tmp_path / "ref.yaml", reference)), data_dir=data_dir, env={ENV_VAR: "sk-x"})
    assert ok("config", "show", data_dir=data_dir) == reference

    # A version stored before secrets were refused is not copied by a rollback either.
    async def legacy(store: Store) -> None:
        await store.add_config_version(literal, author="old", comment="legacy", based_on=1)
        await store.add_config_version(reference, author="old", comment="back", based_on=2)

    with_store(data_dir, legacy)
    refused = cli("config", "rollback", "2", data_dir=data_dir, env={ENV_VAR: "sk-x"})
    assert refused.returncode == 1
    assert "version 2: services.chat.instances[0].headers.X-API-Key: a literal secret" in refused.stderr
    assert newest(data_dir) == 3


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    from .test_cli_store import make_store

    return make_store(tmp_path / "data")


def test_store_mode_refuses_a_version_the_gateway_may_not_serve(tmp_path: Path) -> None:
    """What ``Gateway.refusals`` names (a worker of several on the memory backend, and a version with limits) is
    refused before anything is stored, in the error vocabulary of an invalid config."""
    from modelrouter.control.source import InvalidConfig

    class Worker(_Gateway):
        def refusals(self, config: Config) -> list[str]:
            return ["--workers N would count these in each worker separately"] if config.limits else []

    text = "services:\n  chat:\n    instances:\n      - {name: m, base_url: 'http://127.0.0.1:9'}\n"
    store_config = StoreConfig(data_dir=str(tmp_path))

    async def main() -> None:
        gateway = Worker(text)
        control = ConfigControl(gateway, "store", text, "gateway.yaml")
        async with await Store.open(store_config) as store:
            await control.start(store)
            doc = {**control.document(), "limits": [{"scope": "global", "rate": 10, "period": 60}]}
            with pytest.raises(InvalidConfig) as refused:
                await control.change(doc, author="admin", comment="limits", based_on=1)
            assert "each worker separately" in str(refused.value.problems)
            assert [v.id for v in await store.list_config_versions()] == [1]  # nothing stored

    asyncio.run(main())
