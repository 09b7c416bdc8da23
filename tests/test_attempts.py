"""Every way an upstream attempt can end leaves the instance as it found it: in-flight back to 0 and exactly one
breaker verdict (success, failure, or none when abandoned - a half-open probe's slot then given back).

Driven in process with a scripted ``Transport`` (the way httpx tests with ``MockTransport``): each instance's
answer is a script - an error before headers, a status, a body, a stream that breaks, a wait that never ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from modelrouter import parse_config
from modelrouter.config.model import BreakerConfig
from modelrouter.dataplane.bundle import Bundle
from modelrouter.dataplane.context import ClientInfo
from modelrouter.dataplane.pipeline import Pipeline
from modelrouter.dataplane.responses import Response, StreamResponse
from modelrouter.endpoints import ENDPOINTS_BY_PATH
from modelrouter.errors import GatewayError, UpstreamConnectError, UpstreamTimeout
from modelrouter.observability.meter import Meter
from modelrouter.resilience.breaker import HALF_OPEN, Cause, CircuitBreaker
from modelrouter.routing.instance import Instance
from modelrouter.upstream.base import UpstreamRequest

CHAT = ENDPOINTS_BY_PATH["/v1/chat/completions"]
ANSWER = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


class CountingBreaker(CircuitBreaker):
    """A breaker that also keeps the verdicts it was given, in order."""

    __slots__ = ("verdicts",)

    def __init__(self, config: BreakerConfig) -> None:
        super().__init__(config)
        self.verdicts: list[str] = []

    def record(self, ok: bool, probe: bool, cause: Cause = None) -> None:
        self.verdicts.append("success" if ok else "failure")
        super().record(ok, probe, cause)

    def release_probe(self) -> None:
        self.verdicts.append("released")
        super().release_probe()


@dataclass
class Script:
    """What one instance does with a request. ``fail``: raised by send (before headers); ``hang``: send never
    returns; otherwise a response with ``status``, ``body`` (or ``chunks`` for a stream, with ``break_with``
    raised after them); ``read_hangs``: reading the body never ends."""

    status: int = 200
    body: bytes = ANSWER
    content_type: str = "application/json"
    chunks: list[bytes] | None = None
    break_with: GatewayError | None = None
    fail: GatewayError | None = None
    hang: bool = False
    read_hangs: bool = False
    closed: int = 0


@dataclass
class ScriptedResponse:
    script: Script

    @property
    def status(self) -> int:
        return self.script.status

    @property
    def content_type(self) -> str | None:
        return self.script.content_type

    def header_items(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", self.script.content_type.encode())]

    async def read(self, limit: int) -> bytes:
        if self.script.read_hangs:
            await asyncio.Event().wait()
        return self.script.body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.script.chunks or []:
            await asyncio.sleep(0)
            yield chunk
        if self.script.break_with is not None:
            raise self.script.break_with

    def first_event(self) -> None:
        pass

    def close(self) -> None:
        self.script.closed += 1


@dataclass
class ScriptedTransport:
    scripts: dict[str, Script]  # by the instance's base URL host part
    sent: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set when a request was sent

    async def send(self, request: UpstreamRequest) -> ScriptedResponse:
        name = request.url.split("//", 1)[1].split(".", 1)[0]
        self.sent.append(name)
        self.arrived.set()
        script = self.scripts[name]
        if script.hang:
            await asyncio.Event().wait()
        if script.fail is not None:
            raise script.fail
        return ScriptedResponse(script)

    async def aclose(self) -> None:
        pass


def _setup(*names: str, **service: Any) -> tuple[Pipeline, Bundle, dict[str, Instance]]:
    instances = [{"name": "m", "base_url": f"http://{name}.test:80"} for name in names]
    config = parse_config(
        {
            "services": {"chat": {"load_balance": "round_robin", "instances": instances, **service}},
            "health_check": {"enabled": False},
        }
    )
    bundle = Bundle.plain(config)
    by_name = {}
    for instance in bundle.table.all_instances():
        instance.breaker = CountingBreaker(instance.breaker.config)
        by_name[instance.base_url.split("//", 1)[1].split(".", 1)[0]] = instance
    return Pipeline(ScriptedTransport({})), bundle, by_name


def _chat(stream: bool = False) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": stream}


def _forward(pipeline: Pipeline, bundle: Bundle, payload: dict[str, Any]) -> Response | StreamResponse:
    return asyncio.run(pipeline.forward(bundle, CHAT, payload, ClientInfo("127.0.0.1", meter=Meter())))


def _run(pipeline: Pipeline, scripts: dict[str, Script]) -> None:
    pipeline.transport = ScriptedTransport(scripts)


def _settled(*instances: Instance) -> None:
    for instance in instances:
        assert instance.inflight == 0, instance


def _verdicts(instance: Instance) -> list[str]:
    breaker = instance.breaker
    assert isinstance(breaker, CountingBreaker)
    return breaker.verdicts


@pytest.mark.parametrize(
    "broken",
    [
        Script(fail=UpstreamConnectError("refused")),
        Script(fail=UpstreamTimeout("no headers")),
        Script(status=502, body=b"bad gateway", content_type="text/plain"),
        Script(body=b"<html>not json</html>"),
        Script(body=b'{"id":"c","choices":[{"message":'),  # cut short
    ],
    ids=["connect error", "timeout before headers", "502", "a 200 that is not json", "a truncated answer"],
)
def test_a_failed_attempt_fails_over_with_one_failure_and_nothing_held(broken: Script) -> None:
    pipeline, bundle, inst = _setup("a", "b")
    _run(pipeline, {"a": broken, "b": Script()})
    result = _forward(pipeline, bundle, _chat())
    assert isinstance(result, Response)
    assert result.status == 200
    assert pipeline.transport.sent == ["a", "b"]  # type: ignore[attr-defined]
    assert _verdicts(inst["a"]) == ["failure"]
    assert _verdicts(inst["b"]) == ["success"]
    _settled(inst["a"], inst["b"])
    if broken.fail is None:
        assert broken.closed >= 1  # the upstream response was given back


def test_a_client_error_status_is_no_failure_of_the_backend_and_is_not_retried() -> None:
    pipeline, bundle, inst = _setup("a", "b")
    _run(pipeline, {"a": Script(status=400, body=b'{"error":{"message":"bad"}}'), "b": Script()})
    with pytest.raises(GatewayError) as caught:
        _forward(pipeline, bundle, _chat())
    assert caught.value.status == 400
    assert _verdicts(inst["a"]) == ["success"]  # a client's 4xx says nothing against the backend
    assert _verdicts(inst["b"]) == []
    _settled(inst["a"], inst["b"])


async def _consume(stream: StreamResponse, limit: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    try:
        async for chunk in stream.chunks():
            out.append(chunk)
            if limit is not None and len(out) >= limit:
                break
    finally:
        stream.aclose()
    return out


def _stream(pipeline: Pipeline, bundle: Bundle, limit: int | None = None) -> tuple[list[bytes], BaseException | None]:
    async def go() -> tuple[list[bytes], BaseException | None]:
        result = await pipeline.forward(bundle, CHAT, _chat(stream=True), ClientInfo("127.0.0.1", meter=Meter()))
        assert isinstance(result, StreamResponse)
        try:
            return await _consume(result, limit), None
        except GatewayError as exc:
            return [], exc

    return asyncio.run(go())


def test_a_stream_that_ends_is_one_success() -> None:
    pipeline, bundle, inst = _setup("a")
    _run(pipeline, {"a": Script(content_type="text/event-stream", chunks=[EVENT, EVENT, b"data: [DONE]\n\n"])})
    chunks, error = _stream(pipeline, bundle)
    assert error is None
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
    assert _verdicts(inst["a"]) == ["success"]
    _settled(inst["a"])


def test_a_stream_broken_midway_is_one_failure_not_a_success_and_a_failure() -> None:
    pipeline, bundle, inst = _setup("a")
    script = Script(content_type="text/event-stream", chunks=[EVENT, EVENT], break_with=UpstreamTimeout("idle"))
    _run(pipeline, {"a": script})
    _, error = _stream(pipeline, bundle)
    assert isinstance(error, UpstreamTimeout)
    assert _verdicts(inst["a"]) == ["failure"]
    assert script.closed == 1
    _settled(inst["a"])


def test_a_stream_that_breaks_before_its_first_output_fails_over() -> None:
    pipeline, bundle, inst = _setup("a", "b")
    broken = Script(content_type="text/event-stream", chunks=[], break_with=UpstreamTimeout("no first token"))
    _run(pipeline, {"a": broken, "b": Script(content_type="text/event-stream", chunks=[EVENT, b"data: [DONE]\n\n"])})
    chunks, error = _stream(pipeline, bundle)
    assert error is None
    assert chunks
    assert _verdicts(inst["a"]) == ["failure"]
    assert _verdicts(inst["b"]) == ["success"]
    _settled(inst["a"], inst["b"])


def test_a_client_gone_mid_stream_leaves_one_success() -> None:
    """The backend answered; the client stopped reading after the first chunk: no failure of the backend."""
    pipeline, bundle, inst = _setup("a")
    _run(pipeline, {"a": Script(content_type="text/event-stream", chunks=[EVENT] * 5 + [b"data: [DONE]\n\n"])})
    chunks, error = _stream(pipeline, bundle, limit=1)
    assert error is None
    assert len(chunks) == 1
    assert _verdicts(inst["a"]) == ["success"]
    _settled(inst["a"])


@pytest.mark.parametrize("where", ["before headers", "reading the answer"])
def test_a_cancelled_attempt_is_abandoned_with_no_verdict(where: str) -> None:
    pipeline, bundle, inst = _setup("a")
    script = Script(hang=where == "before headers", read_hangs=where == "reading the answer")
    _run(pipeline, {"a": script})

    async def go() -> None:
        task = asyncio.ensure_future(pipeline.forward(bundle, CHAT, _chat(), ClientInfo("127.0.0.1", meter=Meter())))
        await pipeline.transport.arrived.wait()  # type: ignore[attr-defined]
        for _ in range(5):
            await asyncio.sleep(0)
        assert inst["a"].inflight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert _verdicts(inst["a"]) == []
    _settled(inst["a"])


def _half_open(instance: Instance) -> None:
    breaker = instance.breaker
    breaker.state = HALF_OPEN
    breaker.probes = 0
    breaker.probe_successes = 0


def test_a_cancelled_probe_gives_its_slot_back() -> None:
    pipeline, bundle, inst = _setup("a", breaker={"consecutive_failures": 1, "close_after": 1})
    _half_open(inst["a"])
    _run(pipeline, {"a": Script(hang=True)})

    async def go() -> None:
        task = asyncio.ensure_future(pipeline.forward(bundle, CHAT, _chat(), ClientInfo("127.0.0.1")))
        await pipeline.transport.arrived.wait()  # type: ignore[attr-defined]
        assert inst["a"].breaker.probes == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert _verdicts(inst["a"]) == ["released"]
    assert inst["a"].breaker.probes == 0
    assert inst["a"].breaker.state == HALF_OPEN
    _settled(inst["a"])


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_a_probe_decides_the_breaker_with_its_one_verdict(outcome: str) -> None:
    pipeline, bundle, inst = _setup("a", breaker={"consecutive_failures": 1, "close_after": 1})
    _half_open(inst["a"])
    script = Script() if outcome == "success" else Script(status=503, body=b"busy", content_type="text/plain")
    _run(pipeline, {"a": script})
    try:
        _forward(pipeline, bundle, _chat())
    except GatewayError:
        assert outcome == "failure"
    assert _verdicts(inst["a"]) == [outcome]
    assert inst["a"].breaker.state == ("closed" if outcome == "success" else "open")
    assert inst["a"].breaker.probes == 0
    _settled(inst["a"])


def test_every_failed_instance_is_settled_when_all_fail() -> None:
    pipeline, bundle, inst = _setup("a", "b", "c", retry={"attempts": 3})
    fail: Callable[[], Script] = lambda: Script(fail=UpstreamConnectError("refused"))  # noqa: E731
    _run(pipeline, {"a": fail(), "b": fail(), "c": fail()})
    with pytest.raises(UpstreamConnectError):
        _forward(pipeline, bundle, _chat())
    for name in "abc":
        assert _verdicts(inst[name]) == ["failure"]
    _settled(*inst.values())
