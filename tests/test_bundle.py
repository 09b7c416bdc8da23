"""One request, one config: the front door reads the config bundle once, so a reload that lands while a request
waits (here: queued by a leaky-bucket limit) does not route it with a table it was not admitted against."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from modelrouter import create_app, parse_config

from .test_attempts import Script, ScriptedTransport


def _config(host: str) -> dict[str, Any]:
    return {
        "services": {"chat": {"instances": [{"name": "m", "base_url": f"http://{host}.test:80"}]}},
        "limits": [{"scope": "global", "algorithm": "leaky_bucket", "rate": 1, "period": 1, "max_wait": 5}],
        "health_check": {"enabled": False},
    }


async def _post(app: Any) -> int:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers, "client": ("1", 1)}
    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_a_reload_while_a_request_waits_in_admission_does_not_reroute_it() -> None:
    transport = ScriptedTransport({"a": Script(), "b": Script()})
    gateway = create_app(parse_config(_config("a")), transport=transport)  # type: ignore[arg-type]

    async def go() -> None:
        await gateway.startup()
        assert await _post(gateway.front) == 200  # takes the bucket's one request this second
        waiting = asyncio.ensure_future(_post(gateway.front))  # queued by the leaky bucket
        await asyncio.sleep(0.2)
        assert not waiting.done()
        gateway.reload(parse_config(_config("b")))  # the model now lives on another backend
        assert await waiting == 200
        await gateway.shutdown()

    asyncio.run(go())
    # Admitted under the first config, routed under it: the second request went to "a" as well (it went to "b"
    # when the pipeline read the routing table again after admission).
    assert transport.sent == ["a", "a"]
