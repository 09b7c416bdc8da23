"""Provider presets (config/providers.py): ``provider:`` fills base_url and adapter, ``api_key`` becomes the
adapter's auth header, the instance overrides everything, and a key in the config is a secret like a header."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from modelrouter import ConfigError, parse_config
from modelrouter.config.providers import PROVIDERS
from modelrouter.control.source import secret_problems

from .fakes import FakeOpenAI
from .servers import GatewayServer


def _instance(**fields: object) -> object:
    config = parse_config({"services": {"chat": {"instances": [{"name": "m", **fields}]}}})
    return config.services["chat"].instances[0]


def test_a_hosted_preset_fills_the_url_adapter_and_auth_header() -> None:
    inst = _instance(provider="deepseek", api_key="sk-1")
    assert inst.base_url == "https://api.deepseek.com/v1"  # type: ignore[attr-defined]
    assert inst.adapter == "openai"  # type: ignore[attr-defined]
    assert inst.headers == {"Authorization": "Bearer sk-1"}  # type: ignore[attr-defined]
    claude = _instance(provider="anthropic", api_key="sk-ant")
    assert (claude.base_url, claude.adapter) == ("https://api.anthropic.com", "anthropic")  # type: ignore[attr-defined]
    assert claude.headers == {"x-api-key": "sk-ant"}  # type: ignore[attr-defined]
    azure = _instance(provider="azure", base_url="https://res.openai.azure.com", api_key="k")
    assert azure.adapter == "azure"  # type: ignore[attr-defined]
    assert azure.headers == {"api-key": "k"}  # type: ignore[attr-defined]


def test_the_instance_overrides_its_preset() -> None:
    inst = _instance(
        provider="vllm", base_url="http://10.0.0.7:8000/v1", api_key="k", headers={"authorization": "Basic x"}
    )
    assert inst.base_url == "http://10.0.0.7:8000/v1"  # type: ignore[attr-defined]
    assert inst.headers == {"authorization": "Basic x"}  # type: ignore[attr-defined]  # the instance's own header wins


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"provider": "nonesuch"}, "unknown provider 'nonesuch'; known: anthropic, azure"),
        ({"provider": "azure", "api_key": "k"}, "provider 'azure' needs base_url"),
    ],
)
def test_bad_presets_are_refused_by_path(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"services\.chat\.instances\[0\]") as refused:
        _instance(**fields)
    assert message in str(refused.value)


def test_every_preset_is_a_valid_instance() -> None:
    for name, preset in PROVIDERS.items():
        fields: dict[str, object] = {"provider": name}
        if "base_url" not in preset:
            fields["base_url"] = "https://example.com"
        service = "rerank" if preset["adapter"] == "tei" else "chat"
        config = parse_config({"services": {service: {"instances": [{"name": "m", **fields}]}}})
        assert config.services[service].instances[0].adapter == preset["adapter"], name


def test_an_api_key_in_the_config_is_a_secret() -> None:
    text = "services:\n  chat:\n    instances:\n      - {name: m, provider: groq, api_key: 'gsk-literal'}\n"
    assert any("api_key" in problem for problem in secret_problems(text))
    assert secret_problems(text.replace("gsk-literal", "${GROQ_API_KEY}")) == []


def test_the_key_reaches_the_upstream(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(
        {"services": {"chat": {"instances": [{"name": "m", "provider": "vllm", "base_url": url, "api_key": "tok"}]}}}
    )
    openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.requests[-1].headers["Authorization"] == "Bearer tok"
