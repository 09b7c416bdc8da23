"""GET /admin/api/endpoints: what the public API serves now - each endpoint's path and body kind, the model names it
takes (models, then aliases, as a client may send them), and whether client keys are required - for any admin
role, following a reload, and never for a client key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from modelrouter.endpoints import ENDPOINTS

from .console_browser import PASSWORD, wait
from .fakes import FakeOpenAI
from .servers import GatewayServer


def _token(gw: GatewayServer, username: str) -> dict[str, str]:
    login = httpx2.post(gw.url + "/admin/api/login", json={"username": username, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


def test_each_endpoint_with_its_models_and_whether_keys_are_required(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Path,
) -> None:
    _, url = start_upstream("a")
    config: dict[str, Any] = {
        "auth": {"enabled": True},
        "store": {"data_dir": str(tmp_path / "data"), "refresh_interval": 0.25},
        "aliases": {"smart": "qwen"},
        "services": {
            "chat": {"instances": [{"name": "qwen", "base_url": url}, {"name": "llama", "base_url": url}]},
            "embedding": {"instances": [{"name": "bge", "base_url": url, "models": ["bge-m3"]}]},
            "stt": {"instances": [{"name": "whisper", "base_url": url}]},
        },
    }
    gw = start_gateway(config)
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("watcher", PASSWORD, "viewer"))
    reply = httpx2.get(gw.url + "/admin/api/endpoints", headers=_token(gw, "watcher"), timeout=10)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["object"] == "list"
    assert answer["client_keys_required"] is True
    assert answer["key_refresh_s"] == 0.25
    assert [e["endpoint"] for e in answer["data"]] == [e.name for e in ENDPOINTS]
    by_name = {e["endpoint"]: e for e in answer["data"]}
    assert by_name["chat"] == {
        "endpoint": "chat",
        "service": "chat",
        "path": "/v1/chat/completions",
        "body": "json",
        "dialect": "openai",
        "models": ["qwen", "llama", "smart"],
    }
    assert by_name["messages"]["models"] == ["qwen", "llama", "smart"]  # Anthropic's door to the same service
    assert by_name["embeddings"]["models"] == ["bge", "bge-m3"]
    assert by_name["transcriptions"]["body"] == "multipart"
    assert by_name["translations"]["models"] == ["whisper"]
    assert by_name["rerank"]["models"] == []

    # Every name it lists is one GET /v1/models lists too (it says which endpoint; /v1/models does not).
    _, secret = gw.bg.run(store.create_key("k"))
    auth = {"Authorization": f"Bearer {secret}"}
    models = wait(lambda: httpx2.get(gw.url + "/v1/models", headers=auth, timeout=10).json().get("data"), "the key")
    listed = {m["id"] for m in models}
    assert {name for e in answer["data"] for name in e["models"]} <= listed

    gw.reload(
        {**config, "aliases": {}, "auth": {"enabled": False}, "services": {"rerank": config["services"]["embedding"]}}
    )
    after = httpx2.get(gw.url + "/admin/api/endpoints", headers=_token(gw, "watcher"), timeout=10).json()
    assert after["client_keys_required"] is False
    assert {e["endpoint"]: e["models"] for e in after["data"]}["rerank"] == ["bge", "bge-m3"]
    assert {e["endpoint"]: e["models"] for e in after["data"]}["chat"] == []


def test_without_an_admin_token_it_is_refused(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, url = start_upstream("a")
    gw = start_gateway(
        {"auth": {"enabled": True}, "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}}
    )
    store = gw.gateway.store
    assert store is not None
    _, secret = gw.bg.run(store.create_key("k"))
    for headers in ({}, {"Authorization": f"Bearer {secret}"}):
        reply = httpx2.get(gw.url + "/admin/api/endpoints", headers=headers, timeout=10)
        assert reply.status_code == 401
        assert reply.json()["error"]["type"] == "authentication_error"
    assert httpx2.post(gw.url + "/admin/api/endpoints", timeout=10).status_code == 405
