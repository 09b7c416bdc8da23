from __future__ import annotations

import openai


def test_chat_roundtrip_with_sdk(one_of_each) -> None:
    fake, gw = one_of_each
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True)
    out = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "hello from a"
    assert fake.last.json["model"] == "up-chat"
    chunks = list(
        client.chat.completions.create(model="m-chat", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 "


async def test_the_gateway_itself_is_an_asgi_app_for_library_users() -> None:
    """``modelrouter serve`` hands uvicorn the front door; a library user may mount the Gateway object instead."""
    from typing import Any

    from modelrouter import create_app, parse_config

    gateway = create_app(parse_config({"services": {"chat": {"instances": [{"name": "m", "base_url": "http://h:1"}]}}}))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [], "client": ("127.0.0.1", 1)}
    await gateway(scope, receive, send)
    assert sent[0]["status"] == 200
    assert b'"id":"m"' in sent[1]["body"]
    assert gateway.front.bundle.table is gateway.table
