"""Every error the gateway makes, one per status (the 400s of parameter checks are in test_parameters.py): the API
document's error object, with its `type` from the document's table, an OpenAI-style `code`, the `param` it is
about, and the openai SDK's exception class."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from modelrouter.errors import ERROR_TYPES

from .fakes import FakeOpenAI
from .servers import GatewayServer, free_port
from .test_chat import CHAT, assert_error_shape, raw_request, user

KEY = "mr-errors-key-0123456789abcdefghijklmnop"
StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[..., GatewayServer]


def _error(body: bytes) -> dict[str, Any]:
    err = assert_error_shape(body)
    assert err["type"] in ERROR_TYPES, err
    return err


def _gateway(start_gateway: StartGateway, url: str, **extra: Any) -> GatewayServer:
    chat = {"instances": [{"name": "m", "base_url": url}], **extra.pop("chat", {})}
    return start_gateway({"services": {"chat": chat}, **extra})


def _sdk(gw: GatewayServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


@pytest.mark.parametrize(
    ("status", "method", "path", "body", "headers", "code"),
    [
        (400, "POST", CHAT, b"{not json", {"Content-Type": "application/json"}, None),
        (404, "POST", "/v1/nope", {"model": "m"}, {}, "unknown_url"),
        (405, "GET", CHAT, None, {}, "method_not_allowed"),
        (413, "POST", CHAT, b"x" * 2048, {"Content-Type": "application/json"}, "request_too_large"),
        (415, "POST", CHAT, b"model=m", {"Content-Type": "text/plain"}, "unsupported_media_type"),
    ],
    ids=["bad-json", "unknown-url", "wrong-method", "too-large", "wrong-media-type"],
)
def test_request_errors_have_the_document_type_and_code(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    status: int,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    code: str | None,
) -> None:
    fake, url = start_upstream("a")
    gw = _gateway(start_gateway, url, server={"max_body_bytes": 1024})
    resp = raw_request(gw.url, method, path, body, headers)
    assert resp.status == status, resp.body
    err = _error(resp.body)
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert err["code"] == code
    assert fake.requests == []


def test_unknown_model_is_not_found_error(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    _, url = start_upstream("a")
    gw = _gateway(start_gateway, url)
    with pytest.raises(openai.NotFoundError) as info:
        _sdk(gw).chat.completions.create(model="no-such-model", messages=user())
    err = _error(info.value.response.content)
    assert (err["type"], err["code"], err["param"]) == ("not_found_error", "model_not_found", "model")


def test_auth_errors_are_authentication_and_permission_errors(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, url = start_upstream("a")
    keys = [{"name": "k", "key": KEY, "models": ["other"]}]
    gw = _gateway(start_gateway, url, auth={"enabled": True, "keys": keys})
    with pytest.raises(openai.AuthenticationError) as missing:
        _sdk(gw, key="mr-wrong").chat.completions.create(model="m", messages=user())
    err = _error(missing.value.response.content)
    assert (err["type"], err["code"]) == ("authentication_error", "invalid_api_key")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        _sdk(gw).chat.completions.create(model="m", messages=user())
    err = _error(denied.value.response.content)
    assert (err["type"], err["code"], err["param"]) == ("permission_error", "model_not_allowed", "model")


def test_rate_limit_and_quota_are_rate_limit_errors(start_upstream: StartUpstream, start_gateway: StartGateway) -> None:
    _, url = start_upstream("a")
    keys = [{"name": "k", "key": KEY, "quotas": {"daily_requests": 1}}]
    gw = _gateway(start_gateway, url, auth={"enabled": True, "keys": keys})
    _sdk(gw).chat.completions.create(model="m", messages=user())
    with pytest.raises(openai.RateLimitError) as quota:
        _sdk(gw).chat.completions.create(model="m", messages=user())
    err = _error(quota.value.response.content)
    assert (err["type"], err["code"]) == ("rate_limit_error", "insufficient_quota")

    _, url2 = start_upstream("b")
    limited = _gateway(start_gateway, url2, limits=[{"scope": "global", "rate": 1, "period": 60}])
    _sdk(limited).chat.completions.create(model="m", messages=user())
    with pytest.raises(openai.RateLimitError) as rate:
        _sdk(limited).chat.completions.create(model="m", messages=user())
    err = _error(rate.value.response.content)
    assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limit_exceeded")


def test_no_usable_instance_is_overloaded_error(start_gateway: StartGateway) -> None:
    gw = _gateway(start_gateway, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(openai.InternalServerError) as info:
        _sdk(gw).chat.completions.create(model="m", messages=user())
    assert info.value.status_code == 503
    err = _error(info.value.response.content)
    assert (err["type"], err["code"]) == ("overloaded_error", "upstream_unreachable")
    # Once the breaker opened, "no usable instance" is the same kind of 503.
    gw.gateway.table.all_instances()[0].healthy = False
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m", "messages": user()})
    assert resp.status == 503
    err = _error(resp.body)
    assert (err["type"], err["code"]) == ("overloaded_error", "service_unavailable")


def test_upstream_timeout_and_invalid_answer_are_api_errors(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake, url = start_upstream("a")
    fake.delay = 1.0
    gw = _gateway(start_gateway, url, chat={"timeouts": {"first_byte": 0.2}, "retry": {"attempts": 1}})
    with pytest.raises(openai.APIStatusError) as timeout:
        _sdk(gw).chat.completions.create(model="m", messages=user())
    assert timeout.value.status_code == 504
    err = _error(timeout.value.response.content)
    assert (err["type"], err["code"]) == ("api_error", "upstream_timeout")


def test_an_internal_fault_is_api_error_and_reveals_nothing(
    start_upstream: StartUpstream, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = start_upstream("a")
    gw = _gateway(start_gateway, url)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("secret detail at /srv/modelrouter")

    monkeypatch.setattr(gw.gateway.pipeline, "forward", broken)
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m", "messages": user()})
    assert resp.status == 500
    err = _error(resp.body)
    assert (err["type"], err["code"]) == ("api_error", "internal_error")
    assert b"secret" not in resp.body
    assert b"Traceback" not in resp.body


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "api_error"),
    ],
)
def test_upstream_errors_not_in_openai_shape_get_the_document_type_by_status(
    start_upstream: StartUpstream, start_gateway: StartGateway, status: int, type_: str
) -> None:
    fake, url = start_upstream("a")
    fake.fail(CHAT, status, {"detail": "something went wrong"})
    gw = _gateway(start_gateway, url, chat={"retry": {"attempts": 1}})
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m", "messages": user()})
    assert resp.status == status
    err = _error(resp.body)
    assert err["type"] == type_
    assert err["message"] == "something went wrong"


def test_upstream_errors_in_openai_shape_pass_unchanged(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake, url = start_upstream("a")
    original = {"error": {"message": "maintenance", "type": "server_error", "param": None, "code": "maintenance"}}
    fake.fail(CHAT, 500, original)
    gw = _gateway(start_gateway, url, chat={"retry": {"attempts": 1}})
    resp = raw_request(gw.url, "POST", CHAT, {"model": "m", "messages": user()})
    assert resp.status == 500
    assert json.loads(resp.body) == original


def test_unknown_model_lists_the_names_this_endpoint_serves(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, url = start_upstream("a")
    chat = [{"name": f"chat-{i:02d}", "base_url": url} for i in range(25)]
    gw = start_gateway(
        {
            "aliases": {"gpt-3.5-turbo": "chat-00", "text-embedding-ada-002": "emb"},
            "services": {"chat": {"instances": chat}, "embedding": {"instances": [{"name": "emb", "base_url": url}]}},
        }
    )
    with pytest.raises(openai.NotFoundError) as info:
        _sdk(gw).chat.completions.create(model="gpt-4", messages=user())
    message = _error(info.value.response.content)["message"]
    assert message.startswith("The model 'gpt-4' does not exist; models for this endpoint: chat-00, chat-01, ")
    assert "chat-19" in message
    assert "chat-20" not in message
    assert "and 6 more (GET /v1/models lists them)" in message  # 25 models and one alias
    assert "emb" not in message  # another endpoint's models are not offered for chat
    # A model of another service says where it is served.
    with pytest.raises(openai.NotFoundError) as elsewhere:
        _sdk(gw).chat.completions.create(model="text-embedding-ada-002", messages=user())
    assert "not available for this endpoint (it serves: embedding)" in elsewhere.value.message


def test_unknown_model_lists_only_what_a_restricted_key_may_use(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, url = start_upstream("a")
    keys = [{"name": "k", "key": KEY, "models": ["public"]}]
    instances = [{"name": "public", "base_url": url}, {"name": "secret-model", "base_url": url}]
    gw = start_gateway({"auth": {"enabled": True, "keys": keys}, "services": {"chat": {"instances": instances}}})
    with pytest.raises(openai.NotFoundError) as info:
        _sdk(gw).chat.completions.create(model="nope", messages=user())
    message = _error(info.value.response.content)["message"]
    assert "models for this endpoint: public" in message
    assert "secret-model" not in message
