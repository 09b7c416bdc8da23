"""The benchmark's "bare" target: the thinnest reverse proxy this stack can build.

It exists as a same-run reference for what uvicorn + raw ASGI + aiohttp can do on this machine. The
gateway is built from the same parts, so its figures are quoted against this ceiling, measured in the
same run, interleaved with it and on the same pinned core: on a noisy shared machine a req/s figure, or a
comparison with a baseline from another run, says little; a ratio to a baseline measured alongside says more.

No routing, validation, auth, metrics or error mapping: the request body goes to the same path on the
upstream through one shared ``aiohttp.ClientSession``; the whole answer comes back with its status,
content type and length, or - when the request says ``"stream": true`` - its body chunks are passed on
as they arrive, as ``text/event-stream``. Deliberately untuned (default GC and ``ClientSession``
settings): the gateway's own GC and session tuning can put it above this baseline at high concurrency.

bench/bench.py runs it as ``python -m uvicorn bare_proxy:app --loop uvloop --http httptools --no-access-log
--no-proxy-headers --no-server-header --log-level warning`` from ``bench/``, upstream in ``BARE_PROXY_UPSTREAM``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAM = os.environ["BARE_PROXY_UPSTREAM"].rstrip("/")
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')  # a regex, not a JSON parse: this is the floor of cost
_session: aiohttp.ClientSession | None = None


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http" or _session is None:
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    in_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    headers = {"Content-Type": in_type.decode("latin-1")} if in_type else {}
    async with _session.request(scope["method"], UPSTREAM + scope["path"], data=body, headers=headers) as resp:
        if _STREAM_TRUE.search(body):
            start_headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": resp.status, "headers": start_headers})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await resp.read()
        out_type = resp.headers.get("Content-Type", "application/octet-stream").encode()
        start_headers = [(b"content-type", out_type), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": resp.status, "headers": start_headers})
    await send({"type": "http.response.body", "body": data})
