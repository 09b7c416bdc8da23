"""Configuration: ${ENV} expansion, every problem reported by its path in one error, the CLI, and how instances
become pools and upstream URLs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from modelrouter import ConfigError, load_config, parse_config
from modelrouter.config.load import default_config_text, load_default_config
from modelrouter.config.model import DEFAULT_TIMEOUTS
from modelrouter.routing.router import RoutingTable

from .fakes import FakeOpenAI
from .servers import GatewayServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "modelrouter.yaml"

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]


def problems_of(data: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, **kwargs)
    return exc.value.problems


def chat(*instances: dict[str, Any], **service: Any) -> dict[str, Any]:
    return {"services": {"chat": {**service, "instances": list(instances)}}}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelrouter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def clean_env(*drop: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in drop}


# --- ${ENV} expansion ------------------------------------------------------------------------------------------


def test_env_variables_are_expanded() -> None:
    config = parse_config(
        chat(
            {
                "name": "m",
                "base_url": "http://${HOST}:${PORT}/prefix",
                "headers": {"Authorization": "Bearer ${KEY}", "X-Mixed": "${A}-${B:-b}-literal"},
                "upstream_model": "${UPSTREAM:-default-model}",
            }
        ),
        env={"HOST": "backend.test", "PORT": "9000", "KEY": "s3cret", "A": "a"},
    )
    inst = config.services["chat"].instances[0]
    assert inst.base_url == "http://backend.test:9000/prefix"
    assert inst.headers == {"Authorization": "Bearer s3cret", "X-Mixed": "a-b-literal"}
    assert inst.upstream_model == "default-model"


def test_env_default_is_used_only_when_unset() -> None:
    data = chat({"name": "m", "base_url": "${URL:-http://fallback.test:1}"})
    assert parse_config(data, env={}).services["chat"].instances[0].base_url == "http://fallback.test:1"
    assert parse_config(data, env={"URL": "http://set.test:2"}).services["chat"].instances[0].base_url == (
        "http://set.test:2"
    )
    # An empty default is a default (the value becomes empty, which is not a problem for a header).
    config = parse_config(chat({"name": "m", "base_url": "http://h:1", "headers": {"X": "${NOPE:-}"}}), env={})
    assert config.services["chat"].instances[0].headers == {"X": ""}


def test_env_expansion_feeds_typed_values() -> None:
    config = parse_config({"server": {"port": "${PORT:-8123}", "host": "${HOST:-0.0.0.0}"}}, env={"PORT": "9999"})
    assert config.server.port == 9999
    assert config.server.host == "0.0.0.0"


def test_missing_env_variable_without_default_is_a_problem_with_its_path() -> None:
    problems = problems_of(
        {
            "services": {
                "chat": {
                    "instances": [
                        {"name": "m", "base_url": "http://h:1"},
                        {"name": "m", "base_url": "http://h:2", "headers": {"Authorization": "Bearer ${API_KEY}"}},
                    ]
                }
            },
            "aliases": {"x": "${ALIAS_TARGET}"},
        },
        env={},
    )
    assert "services.chat.instances[1].headers.Authorization: environment variable API_KEY is not set" in problems
    assert "aliases.x: environment variable ALIAS_TARGET is not set" in problems


def test_missing_env_variable_in_a_list_names_the_index() -> None:
    problems = problems_of(chat({"name": "m", "models": ["a", "${SECOND}"], "base_url": "http://h:1"}), env={})
    assert "services.chat.instances[0].models[1]: environment variable SECOND is not set" in problems


def test_load_config_takes_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("services:\n  chat:\n    instances:\n      - {name: m, base_url: '${URL}'}\n")
    assert load_config(path, env={"URL": "http://from-env.test:1"}).services["chat"].instances[0].base_url == (
        "http://from-env.test:1"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert exc.value.source == str(path)
    assert "services.chat.instances[0].base_url: environment variable URL is not set" in exc.value.problems


# --- every problem, by path, in one error ----------------------------------------------------------------------

BAD = {
    "aliases": {"fast": "no-such-model"},
    "services": {
        "chat": {
            "load_balance": "fastest",
            "instancez": [],
            "instances": [
                {"name": "a", "base_url": "http://a.test:1"},
                {"name": "b", "base_url": "not a url"},
            ],
        },
        "audio": {"instances": []},
    },
}


def test_structural_problems_are_reported_together() -> None:
    problems = problems_of(BAD)
    joined = "\n".join(problems)
    assert any(p.startswith("services.chat.instances[1].base_url: not a URL") for p in problems), joined
    assert any(p.startswith("services.chat.instancez: unknown key") for p in problems), joined
    assert any(p.startswith("services.chat.load_balance: must be one of") and "'round_robin'" in p for p in problems)
    assert any(p.startswith("services.audio: unknown name") for p in problems), joined


def test_every_problem_is_reported_in_one_error() -> None:
    """A file with structural *and* cross-field problems lists them all at once, so it can be fixed in one pass
    (docs/configuration.md shows exactly this: a bad base_url, an unknown key and an unknown alias target)."""
    with pytest.raises(ConfigError) as exc:
        parse_config(BAD, source="cfg.yaml")
    message = str(exc.value)
    assert message.startswith("cfg.yaml: ")
    for expected in (
        "services.chat.instances[1].base_url: not a URL",
        "services.chat.instancez: unknown key",
        "services.chat.load_balance: must be one of",
        "services.audio: unknown name",
        "aliases.fast: unknown model 'no-such-model'",
    ):
        assert expected in message, f"{expected!r} missing from:\n{message}"


def test_cross_field_problems_are_reported_together() -> None:
    problems = problems_of(
        {
            "aliases": {"fast": "no-such-model", "m": "m", "e": "emb"},
            "services": {
                "chat": {
                    "models": {"ghost": {"load_balance": "random"}},
                    "instances": [{"name": "m", "base_url": "http://h:1"}],
                },
                "embedding": {"instances": [{"name": "emb", "base_url": "http://h:2"}]},
                "rerank": {"instances": [{"name": "r", "base_url": "http://h:3", "adapter": "ollama"}]},
            },
        }
    )
    assert sorted(problems) == sorted(
        [
            "aliases.fast: unknown model 'no-such-model'",
            "aliases.m: alias hides a model of the same name",
            "services.chat.models.ghost: no instance serves this model (a placeholder needs `unavailable`)",
            "services.rerank.instances[0].adapter: ollama serves only chat and embedding",
        ]
    )


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({"name": "m", "base_url": "ftp://h:1"}, "services.chat.instances[0].base_url: not a URL"),
        ({"name": "m", "base_url": "http://"}, "services.chat.instances[0].base_url: not a URL"),
        ({"name": "m", "base_url": "http://h:99999"}, "services.chat.instances[0].base_url: not a URL (bad port)"),
        ({"name": "m", "base_url": "http://h:1/?q=1"}, "services.chat.instances[0].base_url: not a URL prefix"),
        ({"name": "m", "base_url": "http://host with space"}, "services.chat.instances[0].base_url: not a URL (it "),
        ({"name": "m", "base_url": "http://h:1/v1 "}, "services.chat.instances[0].base_url: not a URL (it "),
        ({"name": "m", "base_url": "http://:8080/v1"}, "services.chat.instances[0].base_url: not a URL"),
        ({"name": "m", "base_url": "http://h:1", "path": "v1/x"}, "services.chat.instances[0].path: must start"),
        ({"name": "m", "base_url": "http://h:1", "weight": 0}, "services.chat.instances[0].weight: "),
        ({"name": "", "base_url": "http://h:1"}, "services.chat.instances[0].name: "),
        ({"name": "m"}, "services.chat.instances[0].base_url: "),
        ({"name": "m", "base_url": "http://h:1", "adapter": "vllm"}, "services.chat.instances[0].adapter: must be"),
        ({"name": "m", "base_url": "http://h:1", "timeouts": {"total": -1}}, "services.chat.instances[0].timeouts"),
        ({"name": "m", "base_url": "http://h:1", "timeout": 5}, "services.chat.instances[0].timeout: unknown key"),
    ],
)
def test_instance_problems_name_their_path(instance: dict[str, Any], expected: str) -> None:
    problems = problems_of(chat(instance))
    assert any(p.startswith(expected) for p in problems), problems


def test_bad_hash_on_and_override_are_reported() -> None:
    problems = problems_of(
        chat({"name": "m", "base_url": "http://h:1"}, hash_on="cookie", models={"m": {"load_balance": "nope"}})
    )
    assert any(p.startswith("services.chat.hash_on: ") for p in problems), problems
    assert any(p.startswith("services.chat.models.m.load_balance: must be one of") for p in problems), problems


def test_root_must_be_a_mapping_and_empty_is_valid() -> None:
    assert problems_of([1, 2]) == ["<root>: must be a mapping"]
    assert parse_config(None).services == {}
    assert parse_config({}).server.port == 8080


def test_load_config_reports_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "missing.yaml")
    assert exc.value.problems[0].startswith("<file>: cannot read")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  chat: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith("line ")
    assert "not valid YAML" in exc.value.problems[0]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # JAiRouter writes its keys in kebab-case.
        (
            chat({"name": "m", "base-url": "http://h:1"}),
            "services.chat.instances[0].base-url: unknown key (did you mean `base_url`?)",
        ),
        (
            chat({"name": "m", "base_url": "http://h:1", "upstream-model": "x"}),
            "services.chat.instances[0].upstream-model: unknown key (did you mean `upstream_model`?)",
        ),
        (
            chat({"name": "m", "base_ulr": "http://h:1"}),
            "services.chat.instances[0].base_ulr: unknown key (did you mean `base_url`?)",
        ),
        (
            chat({"name": "m", "base_url": "http://h:1"}, loadbalance="random"),
            "services.chat.loadbalance: unknown key (did you mean `load_balance`?)",
        ),
        ({"service": {}}, "service: unknown key (did you mean `services`?)"),
        (
            chat({"name": "m", "base_url": "http://h:1", "timeouts": {"conect": 1}}),
            "services.chat.instances[0].timeouts.conect: unknown key (did you mean `connect`?)",
        ),
        (
            {"limits": [{"scope": "ip", "rate": 1, "perod": 60}]},
            "limits[0].perod: unknown key (did you mean `period`?)",
        ),
        ({"services": {"embeddings": {}}}, "services.embeddings: unknown name (did you mean `embedding`?)"),
    ],
)
def test_an_unknown_key_suggests_the_closest_known_one(data: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(data)


def test_an_unknown_key_far_from_any_known_one_gets_no_guess() -> None:
    assert "services.chat.instances[0].colour: unknown key" in problems_of(
        chat({"name": "m", "base_url": "http://h:1", "colour": "red"})
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            chat({"name": "m", "base_url": "http://h:1"}, timeouts={"connect": "10s"}),
            'services.chat.timeouts.connect: give a number of seconds, e.g. 10 (not "10s")',
        ),
        (
            chat({"name": "m", "base_url": "http://h:1", "timeouts": {"total": "500ms"}}),
            'services.chat.instances[0].timeouts.total: give a number of seconds, e.g. 0.5 (not "500ms")',
        ),
        ({"breaker": {"window": "2m"}}, 'breaker.window: give a number of seconds, e.g. 120 (not "2m")'),
        (
            {"store": {"refresh_interval": "soon"}},
            'store.refresh_interval: give a number of seconds, e.g. 10 (not "soon")',
        ),
    ],
)
def test_a_duration_with_a_unit_asks_for_seconds(data: dict[str, Any], expected: str) -> None:
    assert expected in problems_of(data)


def test_a_number_that_is_no_duration_keeps_its_message() -> None:
    [problem] = problems_of(chat({"name": "m", "base_url": "http://h:1", "weight": "2s"}))
    assert problem.startswith("services.chat.instances[0].weight: Input should be a valid number")


def test_a_file_must_route_something_but_a_parsed_config_need_not(tmp_path: Path) -> None:
    """Library users build configs without services (tests, embedding); a file without any is a mistake."""
    assert parse_config({"server": {"port": 1}}).services == {}
    empty, no_services = tmp_path / "empty.yaml", tmp_path / "server-only.yaml"
    empty.write_text("# nothing yet\n")
    no_services.write_text("server: {port: 8081}\nservices: {}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(empty)
    assert exc.value.problems == ["<root>: the file is empty: a config needs at least one service under services:"]
    with pytest.raises(ConfigError) as exc:
        load_config(no_services)
    assert exc.value.problems == ["services: no services: the gateway would route nothing; add at least one"]


# --- the CLI ---------------------------------------------------------------------------------------------------

VALID_YAML = textwrap.dedent(
    """\
    aliases: {gpt-4o: m}
    services:
      chat:
        instances:
          - {name: m, base_url: "http://127.0.0.1:9/v1"}
          - {name: m, base_url: "http://127.0.0.1:10", weight: 2}
      embedding:
        instances:
          - {name: e, base_url: "http://127.0.0.1:11", adapter: ollama}
    """
)

BAD_YAML = textwrap.dedent(
    """\
    services:
      chat:
        load_balance: fastest
        instancez: []
        instances:
          - {name: a, base_url: "http://a.test:1"}
          - {name: b, base_url: "not a url"}
      audio: {}
    """
)

SEMANTIC_BAD_YAML = textwrap.dedent(
    """\
    aliases: {fast: no-such-model}
    services:
      chat:
        models: {ghost: {load_balance: random}}
        instances:
          - {name: m, base_url: "http://h:1", headers: {Authorization: "Bearer ${MODELROUTER_TEST_UNSET_KEY}"}}
      rerank:
        instances:
          - {name: r, base_url: "http://h:2", adapter: ollama}
    """
)


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID_YAML)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok (2 service(s), 3 instance(s), 1 alias(es))"


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    result = run_cli("check-config", str(path))
    assert result.returncode != 0
    assert "ok (" not in result.stdout
    lines = result.stderr.splitlines()
    for expected in (
        f"{path}: services.chat.instances[1].base_url: not a URL",
        f"{path}: services.chat.instancez: unknown key",
        f"{path}: services.chat.load_balance: must be one of",
        f"{path}: services.audio: unknown name",
    ):
        assert any(line.startswith(expected) for line in lines), f"{expected!r} missing from:\n{result.stderr}"
    assert lines[-1] == f"{path}: 4 problem(s)"


def test_check_config_lists_cross_field_and_env_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SEMANTIC_BAD_YAML)
    result = run_cli("check-config", str(path), env=clean_env("MODELROUTER_TEST_UNSET_KEY"))
    assert result.returncode != 0
    for expected in (
        "aliases.fast: unknown model 'no-such-model'",
        "services.chat.models.ghost: no instance serves this model (a placeholder needs `unavailable`)",
        "services.rerank.instances[0].adapter: ollama serves only chat and embedding",
        "services.chat.instances[0].headers.Authorization: environment variable MODELROUTER_TEST_UNSET_KEY is not set",
    ):
        assert f"{path}: {expected}" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "<root>: the file is empty: a config needs at least one service under services:"),
        ("server: {port: 8081}\n", "services: no services: the gateway would route nothing; add at least one"),
        (
            "services:\n  chat:\n    timeouts: {connect: 10s}\n    instances:\n      - {name: m, base-url: 'http://h:1'}\n",
            'services.chat.timeouts.connect: give a number of seconds, e.g. 10 (not "10s")',
        ),
        (
            "services:\n  chat:\n    instances:\n      - {name: m, base_url: 'http://host with space'}\n",
            "services.chat.instances[0].base_url: not a URL (it contains a space)",
        ),
    ],
)
def test_check_config_refuses_what_serve_would_not_serve(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    checked = run_cli("check-config", str(path))
    assert (checked.returncode, checked.stdout) == (1, "")
    assert f"{path}: {expected}\n" in checked.stderr
    served = run_cli("serve", "--config", str(path), "--port", "0", timeout=30)
    assert served.returncode == 2
    assert expected in served.stderr


def test_check_config_hints_at_the_snake_case_key(tmp_path: Path) -> None:
    path = tmp_path / "jairouter.yaml"
    path.write_text("services:\n  chat:\n    instances:\n      - {name: m, base-url: 'http://h:1'}\n")
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert f"{path}: services.chat.instances[0].base-url: unknown key (did you mean `base_url`?)" in result.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0
    assert "cannot read" in result.stderr


def test_example_config_is_valid() -> None:
    if not EXAMPLE.exists():
        pytest.skip("examples/modelrouter.yaml does not exist yet (it is to be added)")
    env = clean_env("OLLAMA_URL", "UPSTREAM_KEY")
    result = run_cli("check-config", str(EXAMPLE), env=env)
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout
    # And it builds a routing table (every instance gets its URLs, every pool its balancer).
    table = RoutingTable(load_config(EXAMPLE, env=env))
    assert table.pools


def test_embedded_default_config_is_valid(tmp_path: Path) -> None:
    config = load_default_config(env={})
    assert config.server.port == 8080
    assert config.services["chat"].instances[1].base_url == "http://127.0.0.1:11434"
    assert config.services["embedding"].instances[0].base_url == "http://127.0.0.1:9101"
    table = RoutingTable(config)
    assert table.resolve("embedding", "text-embedding-3-small").model == "multilingual-e5-small"
    overridden = load_default_config(env={"MODELROUTER_PORT": "9000", "OLLAMA_URL": "http://ollama.test:1"})
    assert overridden.server.port == 9000
    assert overridden.services["chat"].instances[1].base_url == "http://ollama.test:1"
    # The embedded text is what check-config accepts too.
    path = tmp_path / "default.yaml"
    path.write_text(default_config_text())
    result = run_cli("check-config", str(path), env=clean_env("MODELROUTER_HOST", "MODELROUTER_PORT", "OLLAMA_URL"))
    assert result.returncode == 0, result.stderr


def test_serve_with_a_bad_config_exits_listing_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    result = run_cli("serve", "--config", str(path), "--port", "0", timeout=30)
    assert result.returncode != 0
    for expected in (
        "services.chat.instances[1].base_url: not a URL",
        "services.chat.instancez: unknown key",
        "services.chat.load_balance: must be one of",
        "services.audio: unknown name",
    ):
        assert expected in result.stderr, result.stderr


def test_serve_with_a_missing_config_exits(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "nope.yaml"), "--port", "0", timeout=30)
    assert result.returncode != 0
    assert "cannot read" in result.stderr


# --- from instances to pools and URLs --------------------------------------------------------------------------


def table_of(data: dict[str, Any]) -> RoutingTable:
    return RoutingTable(parse_config(data))


@pytest.mark.parametrize("base_url", ["http://h.test:1/v1", "http://h.test:1/v1/"])
def test_base_url_ending_in_v1_does_not_double_it(base_url: str) -> None:
    table = table_of(chat({"name": "m", "base_url": base_url}))
    urls = table.pools[("chat", "m")].instances[0].urls
    assert urls == {
        "chat": "http://h.test:1/v1/chat/completions",
        "completions": "http://h.test:1/v1/completions",
    }


def test_base_url_prefix_is_kept() -> None:
    table = table_of(
        {
            "services": {
                "chat": {"instances": [{"name": "m", "base_url": "http://h.test:1/openai/v1"}]},
                "embedding": {"instances": [{"name": "e", "base_url": "http://h.test:1/proxy"}]},
                "stt": {"instances": [{"name": "w", "base_url": "http://h.test:1/v1"}]},
            }
        }
    )
    assert table.pools[("chat", "m")].instances[0].urls["chat"] == "http://h.test:1/openai/v1/chat/completions"
    assert table.pools[("embedding", "e")].instances[0].urls["embeddings"] == "http://h.test:1/proxy/v1/embeddings"
    assert table.pools[("stt", "w")].instances[0].urls == {
        "transcriptions": "http://h.test:1/v1/audio/transcriptions",
        "translations": "http://h.test:1/v1/audio/translations",
    }


def test_base_url_ending_in_v1_reaches_the_upstream(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(chat({"name": "m", "base_url": url + "/v1"}))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True)
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "hello from a"
    assert fake.last.path == "/v1/chat/completions"


def test_instance_path_overrides_the_main_endpoint_only() -> None:
    table = table_of(
        {
            "services": {
                "chat": {"instances": [{"name": "m", "base_url": "http://h.test:1/v1", "path": "/custom/chat"}]},
                "rerank": {"instances": [{"name": "r", "base_url": "http://h.test:2", "path": "/rerank"}]},
            }
        }
    )
    chat_urls = table.pools[("chat", "m")].instances[0].urls
    # Taken literally: base_url + path, with no /v1 folding.
    assert chat_urls["chat"] == "http://h.test:1/v1/custom/chat"
    assert chat_urls["completions"] == "http://h.test:1/v1/completions"
    assert table.pools[("rerank", "r")].instances[0].urls == {"rerank": "http://h.test:2/rerank"}


def test_instance_path_reaches_the_upstream(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    fake, url = start_upstream("a", rerank_style="tei")
    gw = start_gateway({"services": {"rerank": {"instances": [{"name": "r", "base_url": url, "path": "/rerank"}]}}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    resp = client.post("/rerank", body={"model": "r", "query": "cat", "documents": ["a dog", "a cat"]}, cast_to=object)
    assert fake.last.path == "/rerank"
    assert [r["index"] for r in resp["results"]] == [1, 0]  # type: ignore[index]


def test_instances_sharing_a_name_form_one_pool() -> None:
    table = table_of(
        chat(
            {"name": "m", "base_url": "http://h.test:1"},
            {"name": "other", "base_url": "http://h.test:1"},
            {"name": "m", "base_url": "http://h.test:2", "weight": 3},
        )
    )
    pool = table.pools[("chat", "m")]
    assert [i.base_url for i in pool.instances] == ["http://h.test:1", "http://h.test:2"]
    assert [i.weight for i in pool.instances] == [1, 3]
    assert [i.base_url for i in table.pools[("chat", "other")].instances] == ["http://h.test:1"]
    assert len(table.all_instances()) == 3


def test_instances_sharing_a_name_share_the_traffic(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    _a, url_a = start_upstream("a")
    _b, url_b = start_upstream("b")
    gw = start_gateway(chat({"name": "m", "base_url": url_a}, {"name": "m", "base_url": url_b}))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True)
    answers = [
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
        for _ in range(4)
    ]
    assert answers == ["hello from a", "hello from b"] * 2


def test_instance_models_are_further_names() -> None:
    table = table_of(
        {
            "aliases": {"alias-x": "x"},
            "services": {"chat": {"instances": [{"name": "m", "models": ["x", "y", "m"], "base_url": "http://h:1"}]}},
        }
    )
    inst = table.pools[("chat", "m")].instances[0]
    assert table.pools[("chat", "x")].instances == (inst,)
    assert table.pools[("chat", "y")].instances == (inst,)
    assert set(table.pools) == {("chat", "m"), ("chat", "x"), ("chat", "y")}
    assert table.resolve("chat", "alias-x") is table.pools[("chat", "x")]
    assert len(table.all_instances()) == 1
    assert inst.upstream_model == "m"  # whatever name it was asked by


def test_instance_models_are_served_and_listed(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(chat({"name": "m", "models": ["x", "y"], "base_url": url}))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True)
    for name in ("m", "x", "y"):
        out = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "hello from a"
        assert fake.last.json["model"] == "m"
    assert {m.id for m in client.models.list()} == {"m", "x", "y"}


def test_upstream_model_defaults_to_the_name() -> None:
    table = table_of(
        chat(
            {"name": "plain", "base_url": "http://h:1"},
            {"name": "renamed", "base_url": "http://h:1", "upstream_model": "org/Model-7B"},
        )
    )
    assert table.pools[("chat", "plain")].instances[0].upstream_model == "plain"
    assert table.pools[("chat", "renamed")].instances[0].upstream_model == "org/Model-7B"


def test_timeouts_merge_instance_over_service_over_defaults() -> None:
    table = table_of(
        chat(
            {"name": "a", "base_url": "http://h:1", "timeouts": {"first_byte": 7}},
            {"name": "b", "base_url": "http://h:1"},
            timeouts={"total": 99, "idle": 11},
        )
    )
    a = table.pools[("chat", "a")].instances[0].timeouts
    b = table.pools[("chat", "b")].instances[0].timeouts
    assert (a.connect, a.first_byte, a.idle, a.total) == (DEFAULT_TIMEOUTS["chat"].connect, 7, 11, 99)
    assert (b.connect, b.first_byte, b.idle, b.total) == (
        DEFAULT_TIMEOUTS["chat"].connect,
        DEFAULT_TIMEOUTS["chat"].first_byte,
        11,
        99,
    )


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    data = yaml.safe_load(VALID_YAML)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path, env={}) == parse_config(data, env={})


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"backend": "redis"}, "state: state.backend redis needs exactly one of url or sentinel"),
        (
            {"backend": "redis", "url": "redis://a:6379", "sentinel": {"master": "m", "nodes": ["b:26379"]}},
            "state: state.backend redis needs exactly one of url or sentinel",
        ),
        (
            {"backend": "redis", "url": "http://a:6379"},
            "state.url: must start with redis://, rediss:// (TLS) or unix://",
        ),
        ({"backend": "redis", "sentinel": {"master": "m", "nodes": ["b"]}}, "state.sentinel.nodes: must be host:port"),
        ({"backend": "etcd"}, "state.backend"),
        ({"on_error": "ignore"}, "state.on_error"),
        ({"timeout_ms": 0}, "state.timeout_ms"),
    ],
)
def test_bad_state_sections_are_refused_by_path(state: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"state": state})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_a_redis_state_section_reads_as_written() -> None:
    config = parse_config({"state": {"backend": "redis", "url": "rediss://r.example:6380/2", "on_error": "deny"}})
    assert (config.state.backend, config.state.url, config.state.on_error) == (
        "redis",
        "rediss://r.example:6380/2",
        "deny",
    )
    assert (config.state.timeout_ms, config.state.prefix) == (50, "mr:")
    assert parse_config({}).state.backend == "memory"
