"""Client API keys on the data plane, through the official openai SDK."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

import httpx2
import openai
import pytest

from modelrouter.http.client import client_ip

from .fakes import FakeOpenAI
from .servers import GatewayServer

KEY = "mr-test-key-0123456789abcdefghijklmnop"
OTHER = "mr-other-key-0123456789abcdefghijklmno"


def _gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[[dict[str, Any]], GatewayServer],
    keys: list[dict[str, Any]],
) -> tuple[FakeOpenAI, GatewayServer]:
    fake, url = start_upstream("a")
    gw = start_gateway(
        {
            "auth": {"enabled": True, "keys": keys},
            "services": {
                "chat": {"instances": [{"name": "m", "base_url": url}, {"name": "secret-model", "base_url": url}]},
                "embedding": {"instances": [{"name": "e", "base_url": url}]},
            },
        }
    )
    return fake, gw


def _chat(gw: GatewayServer, key: str, model: str = "m") -> str | None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    return (
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
    )


def test_valid_key_works_and_is_not_forwarded(start_upstream, start_gateway) -> None:
    fake, gw = _gateway(start_upstream, start_gateway, [{"name": "team", "key": KEY}])
    assert _chat(gw, KEY) == "hello from a"
    # The gateway's key is the gateway's business: it never reaches the backend.
    assert "Authorization" not in fake.last.headers
    assert KEY not in str(fake.last.headers)


def test_bad_and_missing_keys_are_401(start_upstream, start_gateway) -> None:
    fake, gw = _gateway(start_upstream, start_gateway, [{"name": "team", "key": KEY}])
    with pytest.raises(openai.AuthenticationError) as bad:
        _chat(gw, OTHER)
    err = bad.value.body
    assert isinstance(err, dict)
    assert err["type"] == "authentication_error"
    assert err["code"] == "invalid_api_key"
    assert OTHER not in err["message"]  # only a recognisable fragment is echoed
    missing = httpx2.post(gw.url + "/v1/chat/completions", json={"model": "m", "messages": []}, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert fake.requests == []


def test_x_api_key_header_is_accepted(start_upstream, start_gateway) -> None:
    _, gw = _gateway(start_upstream, start_gateway, [{"name": "team", "key": KEY}])
    resp = httpx2.post(
        gw.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"X-API-Key": KEY},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text


def test_model_and_service_restrictions_are_403(start_upstream, start_gateway) -> None:
    _, gw = _gateway(
        start_upstream, start_gateway, [{"name": "team", "key": KEY, "models": ["m"], "services": ["chat"]}]
    )
    assert _chat(gw, KEY) == "hello from a"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        _chat(gw, KEY, model="secret-model")
    assert denied.value.body["type"] == "permission_error"  # type: ignore[index]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.embeddings.create(model="e", input="x")


def test_disabled_expired_and_hashed_keys(start_upstream, start_gateway) -> None:
    digest = "sha256:" + hashlib.sha256(OTHER.encode()).hexdigest()
    expired = "mr-expired-key-0123456789abcdefghijklm"
    disabled = "mr-disabled-key-0123456789abcdefghijkl"
    _, gw = _gateway(
        start_upstream,
        start_gateway,
        [
            {"name": "hashed", "hash": digest},
            {"name": "old", "key": expired, "expires_at": time.time() - 1},
            {"name": "off", "key": disabled, "enabled": False},
        ],
    )
    assert _chat(gw, OTHER) == "hello from a"
    for key in (expired, disabled):
        with pytest.raises(openai.AuthenticationError):
            _chat(gw, key)


def test_keys_change_on_reload(start_upstream, start_gateway) -> None:
    _, gw = _gateway(start_upstream, start_gateway, [{"name": "team", "key": KEY}])
    assert _chat(gw, KEY)
    config = {
        "health_check": {"enabled": False},
        "auth": {"enabled": True, "keys": [{"name": "other", "key": OTHER}]},
        "services": {
            "chat": {"instances": [{"name": "m", "base_url": gw.gateway.config.services["chat"].instances[0].base_url}]}
        },
    }
    gw.reload(config)
    with pytest.raises(openai.AuthenticationError):
        _chat(gw, KEY)
    assert _chat(gw, OTHER)
    config["auth"] = {"enabled": False}
    gw.reload(config)
    assert _chat(gw, "anything")


def test_auth_off_keeps_the_gateway_open(start_upstream, start_gateway) -> None:
    _, url = start_upstream("a")
    gw = start_gateway({"services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}})
    assert _chat(gw, "not-a-key") == "hello from a"


def test_client_ip_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = (ip_network("10.0.0.0/8"), ip_network("127.0.0.1/32"))
    xff = [(b"x-forwarded-for", b"203.0.113.9, 10.1.2.3")]
    assert client_ip("127.0.0.1", xff, trusted) == "203.0.113.9"
    # An untrusted peer cannot claim another address.
    assert client_ip("198.51.100.7", xff, trusted) == "198.51.100.7"
    # Forged entries left of the first untrusted hop are ignored.
    forged = [(b"x-forwarded-for", b"1.2.3.4, 203.0.113.9, 10.1.2.3")]
    assert client_ip("10.0.0.1", forged, trusted) == "203.0.113.9"
    assert client_ip("10.0.0.1", [], trusted) == "10.0.0.1"


def test_model_listing_needs_a_key_and_shows_only_allowed_models(start_upstream, start_gateway) -> None:
    _, gw = _gateway(
        start_upstream, start_gateway, [{"name": "all", "key": KEY}, {"name": "one", "key": OTHER, "models": ["m"]}]
    )
    assert httpx2.get(gw.url + "/v1/models", timeout=5).status_code == 401
    everything = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    assert {m.id for m in everything.models.list()} == {"m", "secret-model", "e"}
    restricted = openai.OpenAI(base_url=gw.url + "/v1", api_key=OTHER, max_retries=0)
    assert [m.id for m in restricted.models.list()] == ["m"]
    assert restricted.models.retrieve("m").id == "m"
    with pytest.raises(openai.NotFoundError):
        restricted.models.retrieve("secret-model")


def test_a_remembered_key_still_expires_and_is_forgotten_on_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelrouter.access.auth import AuthenticationFailed, KeyRing, Principal
    from modelrouter.access.keys import hash_secret

    now = [1000.0]
    monkeypatch.setattr("modelrouter.access.auth.time.time", lambda: now[0])
    principal = Principal(id="k1", name="soon", hash=hash_secret(KEY), expires_at=1010.0)
    ring = KeyRing([principal])
    bearer = b"Bearer " + KEY.encode()
    assert ring.authenticate_headers(bearer, None) is principal
    assert ring.authenticate_headers(bearer, None) is principal  # remembered
    now[0] = 1010.0
    with pytest.raises(AuthenticationFailed, match="expired"):
        ring.authenticate_headers(bearer, None)
    now[0] = 1000.0
    assert ring.authenticate_headers(bearer, None) is principal
    ring.replace([])  # revoked: the remembered header must not let it in
    with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
        ring.authenticate_headers(bearer, None)
    with pytest.raises(AuthenticationFailed, match="didn't provide"):
        ring.authenticate_headers(b"Basic abc", None)
