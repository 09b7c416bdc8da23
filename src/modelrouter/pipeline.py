"""One request, from a parsed body to an answer: route -> select instance -> adapt -> send -> adapt back.

The front door (``front/asgi.py``) parses and validates the HTTP request and hands this module a payload; this
module returns a ``Response`` or a ``StreamResponse`` and never touches ASGI. The routing table is read once per
request, so a config swap mid-request cannot mix two configs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .adapters.base import StreamTranslator
from .endpoints import Endpoint
from .errors import (
    GatewayError,
    InvalidRequest,
    UpstreamInvalid,
    UpstreamStatusError,
)
from .front.multipart import Form
from .postprocess import EmbeddingsB64, RerankShape
from .routing.instance import Instance
from .routing.router import RoutingTable
from .upstream.base import Transport, UpstreamRequest, UpstreamResponse

__all__ = ["ClientInfo", "Pipeline", "Response", "StreamResponse"]

_JSON = b"application/json"


@dataclass(slots=True)
class ClientInfo:
    ip: str | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class StreamResponse:
    """A streamed answer. ``aclose`` must be called on every path (the front door does it in ``finally``); it
    releases the upstream connection and the instance's in-flight count exactly once."""

    __slots__ = ("_closed", "_instance", "_resp", "_translator", "headers", "sse", "status")

    def __init__(
        self,
        resp: UpstreamResponse,
        instance: Instance,
        translator: StreamTranslator | None,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._resp = resp
        self._instance = instance
        self._translator = translator
        self._closed = False
        self.status = resp.status
        self.headers = headers
        # SSE streams end with an error event when the upstream fails; binary streams just break off.
        self.sse = translator is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        translator = self._translator
        if translator is None:
            async for chunk in self._resp.iter_chunks():
                yield chunk
            return
        try:
            async for chunk in self._resp.iter_chunks():
                out = translator.feed(chunk)
                if out:
                    yield out
            out = translator.end()
        except (ValueError, KeyError, TypeError) as exc:
            # The upstream sent something its dialect does not allow (bad JSON line, early end).
            raise UpstreamInvalid(f"upstream sent an invalid stream: {exc}") from None
        if out:
            yield out

    def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._resp.close()
            self._instance.release()


class Pipeline:
    def __init__(self, table: RoutingTable, transport: Transport) -> None:
        self.table = table
        self.transport = transport

    def swap(self, table: RoutingTable) -> None:
        """Install a new routing table; requests already running keep the one they started with."""
        self.table = table

    async def forward(
        self, endpoint: Endpoint, payload: dict[str, Any] | Form, client: ClientInfo
    ) -> Response | StreamResponse:
        table = self.table
        model = payload.get("model") if isinstance(payload, dict) else payload.text("model")
        if model is None:
            # Only endpoints where OpenAI makes `model` optional get here (the front door checked the rest).
            model = table.only_model(endpoint.service)
            if model is None:
                raise InvalidRequest("you must provide a model parameter", param="model")
        pool = table.resolve(endpoint.service, model)
        key = None
        if pool.balancer.needs_key:
            key = _hash_key(pool.hash_on, payload, client)
        instance = pool.select(key)
        url = instance.urls.get(endpoint.name)
        if url is None:
            raise InvalidRequest(
                f"The model '{model}' is served by a {instance.adapter.name} backend, which has no "
                f"{endpoint.path} endpoint",
                param="model",
            )

        post: EmbeddingsB64 | RerankShape | None = None
        wants_stream = False
        body: Any
        if isinstance(payload, Form):
            content_type, length, body = payload.encode({"model": instance.upstream_model})
            headers = {**instance.headers, "Content-Type": content_type, "Content-Length": str(length)}
        else:
            if endpoint.name == "embeddings":
                post = EmbeddingsB64.prepare(payload)
            elif endpoint.name == "rerank":
                post = RerankShape.prepare(payload, model)
            wants_stream = endpoint.output == "sse" and payload.get("stream") is True
            body = instance.adapter.request_body(endpoint, payload, instance.upstream_model)
            headers = instance.json_headers
        request = UpstreamRequest("POST", url, headers, body, instance.timeouts)

        instance.acquire()
        try:
            started = time.perf_counter()
            resp = await self.transport.send(request)
            instance.observe_latency(time.perf_counter() - started)
        except GatewayError as exc:
            instance.release()
            exc.message = f"{exc.message} (model '{model}')"
            raise
        except BaseException:
            instance.release()
            raise

        streaming = False
        try:
            if resp.status >= 400:
                raw = await resp.read()
                raise UpstreamStatusError(resp.status, raw, resp.content_type, _passed_headers(resp))
            if endpoint.output == "binary":
                streaming = True
                return StreamResponse(resp, instance, None, resp.header_items())
            if wants_stream and isinstance(payload, dict) and instance.adapter.is_stream(resp.content_type):
                streaming = True
                translator = instance.adapter.stream_translator(endpoint, payload)
                return StreamResponse(resp, instance, translator, [*_SSE_HEADERS, *_passed_headers(resp)])
            raw = await resp.read()
        finally:
            if not streaming:
                resp.close()
                instance.release()

        if isinstance(payload, Form):
            return Response(resp.status, resp.header_items(), raw)
        try:
            translated = instance.adapter.response_body(endpoint, payload, raw)
            if post is not None:
                translated = post.apply(translated if translated is not None else raw)
        except GatewayError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UpstreamInvalid(f"upstream {instance.base_url} sent an invalid answer: {exc}") from None
        if translated is None:
            return Response(resp.status, resp.header_items(), raw)
        return Response(resp.status, [(b"content-type", _JSON)], translated)


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

# Upstream headers that matter to a client even when the body is the gateway's own (errors, SSE): when to retry,
# rate-limit state, and the request id to quote in a bug report.
_PASSED_HEADER_PREFIXES = (b"retry-after", b"x-ratelimit-", b"x-request-id")


def _passed_headers(resp: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in resp.header_items() if k.startswith(_PASSED_HEADER_PREFIXES)]


def _hash_key(hash_on: str, payload: dict[str, Any] | Form, client: ClientInfo) -> str | None:
    if hash_on == "user":
        user = payload.get("user") if isinstance(payload, dict) else payload.text("user")
        if isinstance(user, str) and user:
            return user
    elif hash_on.startswith("header:"):
        value = client.header(hash_on[7:].lower().encode())
        if value:
            return value
    return client.ip
