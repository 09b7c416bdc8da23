"""Failover end to end: real loopback backends that fail in scripted ways (``faults.FaultServer``, ``FakeOpenAI``),
the gateway under uvicorn, and the official ``openai`` SDK (no retries of its own) as the client.

What is checked: every kind of backend failure is failed over without the client noticing; the circuit breaker
keeps a failing instance out after ``consecutive_failures``; streams fail over only before their first token;
client errors are not retried; Retry-After is honoured; health checks bring an instance back; an all-unhealthy
pool answers 503 at once (or is tried anyway in panic mode); fallback models, the default response and the
stale cache; the retry deadline; multipart replay; and no in-flight count is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from modelrouter.resilience.breaker import CLOSED, HALF_OPEN, OPEN
from modelrouter.routing.instance import Instance

from .fakes import FakeOpenAI
from .faults import MODES, FaultServer
from .servers import BackgroundLoop, GatewayServer

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]
StartFault = Callable[..., FaultServer]

CHAT = "/v1/chat/completions"
FAST = {"connect": 1, "first_byte": 0.5, "idle": 0.5, "total": 5}
HEALTH = {"interval": 0.2, "unhealthy_after": 1, "healthy_after": 1, "timeout": 0.3}
REQUESTS = 1000
CONCURRENCY = 4  # client threads: failures that cost a timeout overlap, and so may this many in flight

# -------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def start_fault(bg: BackgroundLoop, servers: list[Any]) -> StartFault:
    """start_fault(name, mode="ok", retry_after=30) -> FaultServer; stopped after the test."""

    def start(name: str = "fault", mode: str = "ok", **kwargs: Any) -> FaultServer:
        server = FaultServer(bg, name, mode, **kwargs).start()
        servers.append(server)
        return server

    return start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Iterator[StartGateway]:
    """Like ``start_gateway``; after the test, every instance of every gateway started must be idle."""
    started: list[GatewayServer] = []

    def start(config: dict[str, Any]) -> GatewayServer:
        gw = start_gateway(config)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        assert_idle(gw)


# --------------------------------------------------------------------------------------------------- helpers


def sdk(gw: GatewayServer, timeout: float = 10) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=timeout)


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def ask(client: openai.OpenAI, model: str = "m", text: str = "hi") -> str:
    out = client.chat.completions.create(model=model, messages=user(text))  # type: ignore[arg-type]
    content = out.choices[0].message.content
    assert content is not None
    return content


def stream_text(client: openai.OpenAI, model: str = "m") -> str:
    stream = client.chat.completions.create(model=model, messages=user(), stream=True)  # type: ignore[arg-type]
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def raw_post(base_url: str, path: str, body: Any, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def instance_at(gw: GatewayServer, url: str) -> Instance:
    (found,) = [i for i in gw.gateway.table.all_instances() if i.base_url == url]
    return found


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0, what: str = "condition") -> float:
    """Poll until ``predicate()``; returns the seconds it took. Fails the test after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def assert_idle(gw: GatewayServer) -> None:
    instances = gw.gateway.table.all_instances()
    try:
        wait_for(lambda: all(i.inflight == 0 for i in instances), 2.0, "in-flight counts to drop to 0")
    except pytest.fail.Exception:
        pytest.fail(f"in-flight counts left behind: {[(i.id, i.inflight) for i in instances]}")


def chat_config(*urls: str, model: str = "m", **service: Any) -> dict[str, Any]:
    """One chat model ``model`` served by one instance per URL (listed in order: round-robin tries them in it)."""
    return {
        "services": {"chat": {**service, "instances": [{"name": model, "base_url": url} for url in urls]}},
    }


def record_transitions(inst: Instance) -> list[tuple[float, str, str]]:
    """(monotonic time, old, new) of each breaker transition from now on (chaining any hook already set)."""
    seen: list[tuple[float, str, str]] = []
    previous = inst.breaker.on_change

    def hook(breaker: Any, old: str, new: str) -> None:
        if previous is not None:
            previous(breaker, old, new)
        seen.append((time.monotonic(), old, new))

    inst.breaker.on_change = hook
    return seen


# ------------------------------------------------------------------------------- every fault mode, 1,000 times

FAULT_MODES = [m for m in MODES if m != "ok"]

# What a client sees when the only instance fails this way: this checks that the fault server does what it says
# (a reset comes after the headers, a stall after them too, garbage is not taken for HTTP...).
ALONE = {
    "refuse": (503, "connection refused"),
    "reset_mid_body": (502, "broke off its answer"),
    "hang": (504, "no answer in time"),
    "status_500": (500, "the backend is broken"),
    "status_429": (429, "slow down"),
    "stall_first_token": (504, "timed out sending its answer"),
    "garbage": (502, "the backend failed"),
}


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_a_lone_failing_instance_gives_the_client_the_matching_error(
    mode: str, start_fault: StartFault, gateway: StartGateway
) -> None:
    bad = start_fault("bad", mode)
    gw = gateway(chat_config(bad.url, timeouts=FAST))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        ask(sdk(gw))
    status, message = ALONE[mode]
    assert info.value.status_code == status
    assert message in info.value.message
    assert time.monotonic() - started < 2
    # One instance, tried once: the retry loop does not send the same request to it again.
    assert bad.api_requests() == (0 if mode == "refuse" else 1)


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_every_request_succeeds_while_one_of_two_instances_fails(
    mode: str, start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    bad = start_fault("bad", mode)
    good, good_url = start_upstream("good")
    gw = gateway(chat_config(bad.url, good_url, timeouts=FAST))
    inst = instance_at(gw, bad.url)
    transitions = record_transitions(inst)
    client = sdk(gw)

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(lambda _: ask(client), range(REQUESTS)))
    elapsed = time.monotonic() - started

    assert answers == ["hello from good"] * REQUESTS
    assert len(good.requests) == REQUESTS
    config = inst.breaker.config
    probes = config.half_open_probes if elapsed >= config.open_for else 0
    reached = bad.api_requests()
    if mode == "status_429":
        # Retry-After: 30 keeps the instance out after its first answer; the breaker saw one failure only.
        assert inst.cooldown_until > time.monotonic() + 20
        assert inst.breaker.state == CLOSED
        assert reached <= CONCURRENCY
        return
    assert inst.breaker.state in (OPEN, HALF_OPEN), inst.breaker
    assert inst.breaker.trips >= 1
    opened_at = next(t for t, _, new in transitions if new == OPEN)
    # Before the trip: at most `consecutive_failures` failures, plus what other client threads had in flight.
    assert reached <= config.consecutive_failures + CONCURRENCY - 1 + probes, (reached, elapsed)
    # After it: only requests already on their way when it opened, and the half-open probes.
    late = bad.hits_since(opened_at)
    assert len(late) <= CONCURRENCY - 1 + probes, (late, elapsed)
    if mode == "refuse":
        assert reached == 0
        assert inst.breaker.consecutive == config.consecutive_failures


# ------------------------------------------------------------------------------------------------- streaming


def test_a_stream_stalling_before_its_first_token_fails_over(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    stalled = start_fault("stalled", "stall_first_token")
    _good, good_url = start_upstream("good")
    gw = gateway(chat_config(stalled.url, good_url, timeouts=FAST))
    client = sdk(gw)

    texts = [stream_text(client) for _ in range(3)]
    assert texts == ["tok0 tok1 tok2 "] * 3
    assert stalled.requests["stall_first_token"] >= 1, "round-robin starts with the first instance"

    # On the wire: a complete SSE stream from the other instance, ending in [DONE].
    before = stalled.requests["stall_first_token"]
    for _ in range(2):  # round-robin: one of two requests goes to the stalled instance first
        status, headers, body = raw_post(gw.url, CHAT, {"model": "m", "messages": user(), "stream": True})
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert body.endswith(b"data: [DONE]\n\n")
        assert b"tok2" in body
        assert b'"error"' not in body
    assert stalled.requests["stall_first_token"] > before


def test_a_stream_breaking_after_its_first_byte_is_not_retried(
    start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    breaking, breaking_url = start_upstream("breaking")
    breaking.break_stream_after = 2  # role event and one token, then the connection drops
    other, other_url = start_upstream("other")
    gw = gateway(chat_config(breaking_url, other_url, timeouts=FAST))

    stream = sdk(gw).chat.completions.create(model="m", messages=user(), stream=True)  # type: ignore[arg-type]
    got: list[str] = []

    def read_all() -> None:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as info:
        read_all()
    assert "".join(got) == "tok0 "
    assert "broke off" in info.value.message
    assert len(breaking.requests) == 1
    assert other.requests == [], "a stream that reached the client must not be replayed elsewhere"
    assert instance_at(gw, breaking_url).breaker.consecutive == 1, "the break counts against the instance"


def test_a_non_streaming_answer_reset_mid_body_fails_over(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    # Headers and half the body arrive; until the body is complete nothing reached the client.
    bad = start_fault("bad", "reset_mid_body")
    _good, good_url = start_upstream("good")
    gw = gateway(chat_config(bad.url, good_url, timeouts=FAST))
    assert ask(sdk(gw)) == "hello from good"
    assert bad.requests["reset_mid_body"] == 1
    assert instance_at(gw, bad.url).breaker.consecutive == 1


# ------------------------------------------------------------------------------------ what is (not) retried


def test_a_client_error_from_upstream_is_not_retried(start_upstream: StartUpstream, gateway: StartGateway) -> None:
    first, first_url = start_upstream("first")
    first.fail(CHAT, 400, {"error": {"message": "bad messages", "type": "invalid_request_error", "param": None}})
    second, second_url = start_upstream("second")
    gw = gateway(chat_config(first_url, second_url))
    with pytest.raises(openai.BadRequestError) as info:
        ask(sdk(gw))
    assert info.value.status_code == 400
    assert "bad messages" in info.value.message
    assert len(first.requests) == 1
    assert second.requests == []
    breaker = instance_at(gw, first_url).breaker
    assert (breaker.state, breaker.consecutive) == (CLOSED, 0), "a client's own error says nothing of the backend"


def test_retry_after_keeps_requests_away_for_that_long(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    limited = start_fault("limited", "status_429", retry_after=1)
    _good, good_url = start_upstream("good")
    gw = gateway(chat_config(limited.url, good_url))
    inst = instance_at(gw, limited.url)
    client = sdk(gw)

    sent = time.monotonic()
    assert ask(client) == "hello from good"
    assert limited.requests["status_429"] == 1
    assert sent + 0.9 < inst.cooldown_until <= time.monotonic() + 1.0
    limited.set_mode("ok")
    while time.monotonic() < inst.cooldown_until - 0.1:
        assert ask(client) == "hello from good"
    assert limited.requests["ok"] == 0, "the instance was used during its Retry-After"
    time.sleep(max(inst.cooldown_until - time.monotonic(), 0) + 0.05)
    answers = {ask(client) for _ in range(4)}
    assert answers == {"hello from good", "hello from limited"}


def test_retry_after_is_capped_by_max_retry_after(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    limited = start_fault("limited", "status_429", retry_after=3600)
    _good, good_url = start_upstream("good")
    gw = gateway(chat_config(limited.url, good_url, retry={"max_retry_after": 7}))
    ask(sdk(gw))
    left = instance_at(gw, limited.url).cooldown_until - time.monotonic()
    assert 6 < left <= 7


def test_a_lone_rate_limited_instance_passes_429_and_retry_after_to_the_client(
    start_fault: StartFault, gateway: StartGateway
) -> None:
    limited = start_fault("limited", "status_429", retry_after=7)
    gw = gateway(chat_config(limited.url))
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk(gw))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body == {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    assert limited.requests["status_429"] == 1


# ------------------------------------------------------------------------------------- health and recovery


def test_a_recovered_instance_is_back_within_about_one_health_interval(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    flaky = start_fault("flaky")
    flaky.set_mode("status_500", probe_mode="ok")  # probes pass, requests fail: only the breaker can see it
    _good, good_url = start_upstream("good")
    gw = gateway(
        {
            "health_check": HEALTH,
            **chat_config(flaky.url, good_url, timeouts=FAST, breaker={"consecutive_failures": 2, "open_for": 30}),
        }
    )
    inst = instance_at(gw, flaky.url)
    client = sdk(gw)

    for _ in range(10):
        assert ask(client) == "hello from good"
    assert inst.breaker.trips >= 1
    flaky.set_mode("refuse")  # now the whole backend is down: the health checks see it too
    wait_for(lambda: not inst.healthy, what="the instance to be marked unhealthy")
    for _ in range(10):
        assert ask(client) == "hello from good"

    flaky.set_mode("ok")
    started = time.monotonic()
    while flaky.requests["ok"] == 0:
        assert time.monotonic() - started < 2, f"not back in rotation after 2 s: {inst!r}"
        assert ask(client) in ("hello from good", "hello from flaky")
    back_after = time.monotonic() - started
    # The breaker was open for up to 30 s more: only a good health probe (breaker.health_ok) lets it try again.
    assert back_after < 1.0, back_after

    def closed_after_one_more_request() -> bool:
        assert ask(client) in ("hello from good", "hello from flaky")
        return inst.breaker.state == CLOSED

    wait_for(closed_after_one_more_request, what="the breaker to close")
    assert inst.healthy


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_an_all_unhealthy_pool_answers_503_at_once(mode: str, start_fault: StartFault, gateway: StartGateway) -> None:
    a, b = start_fault("a", mode), start_fault("b", mode)
    gw = gateway({"health_check": HEALTH, **chat_config(a.url, b.url, timeouts={"first_byte": 5})})
    instances = gw.gateway.table.all_instances()
    wait_for(lambda: not any(i.healthy for i in instances), what="both instances to be marked unhealthy")
    client = sdk(gw)
    for _ in range(10):
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            ask(client)
        assert time.monotonic() - started < 0.5
        assert info.value.status_code == 503
        assert info.value.code == "service_unavailable"  # not "upstream_unreachable": nothing was tried
    assert a.api_requests() == b.api_requests() == 0


@pytest.mark.parametrize("panic", [False, True])
def test_panic_mode_tries_an_all_unhealthy_pool_anyway(
    panic: bool, start_fault: StartFault, gateway: StartGateway
) -> None:
    # Health probes fail but requests would succeed: the health check is wrong, and panic mode shows it.
    a, b = start_fault("a"), start_fault("b")
    a.set_mode("ok", probe_mode="status_500")
    b.set_mode("ok", probe_mode="status_500")
    gw = gateway({"health_check": HEALTH, **chat_config(a.url, b.url, panic_mode=panic)})
    instances = gw.gateway.table.all_instances()
    wait_for(lambda: not any(i.healthy for i in instances), what="both instances to be marked unhealthy")
    client = sdk(gw)
    if not panic:
        with pytest.raises(openai.APIStatusError) as info:
            ask(client)
        assert info.value.status_code == 503
        assert a.api_requests() == b.api_requests() == 0
        return
    answers = {ask(client) for _ in range(4)}
    assert answers == {"hello from a", "hello from b"}


def test_panic_mode_with_refusing_instances_reports_the_connect_failure(
    start_fault: StartFault, gateway: StartGateway
) -> None:
    a, b = start_fault("a", "refuse"), start_fault("b", "refuse")
    gw = gateway({"health_check": HEALTH, **chat_config(a.url, b.url, panic_mode=True)})
    instances = gw.gateway.table.all_instances()
    wait_for(lambda: not any(i.healthy for i in instances), what="both instances to be marked unhealthy")
    with pytest.raises(openai.APIStatusError) as info:
        ask(sdk(gw))
    assert info.value.status_code == 503
    assert info.value.code == "upstream_unreachable"  # it did try to connect


# -------------------------------------------------------------------------------------- when all else fails


def test_fallback_model_answers_when_every_instance_fails(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    broken, down = start_fault("broken", "status_500"), start_fault("down", "refuse")
    backup, backup_url = start_upstream("backup")
    gw = gateway(
        {
            "services": {
                "chat": {
                    "timeouts": FAST,
                    "models": {"A": {"fallbacks": ["B"]}},
                    "instances": [
                        {"name": "A", "base_url": broken.url},
                        {"name": "A", "base_url": down.url},
                        {"name": "B", "base_url": backup_url, "upstream_model": "up-b"},
                    ],
                }
            }
        }
    )
    client = sdk(gw)
    out = client.chat.completions.create(model="A", messages=user())  # type: ignore[arg-type]
    assert out.choices[0].message.content == "hello from backup"
    assert backup.last.json["model"] == "up-b"
    assert broken.requests["status_500"] == 1


def test_fallback_chain_error_is_the_last_failure_when_the_fallback_fails_too(
    start_fault: StartFault, gateway: StartGateway
) -> None:
    first, second = start_fault("first", "status_500"), start_fault("second", "status_500")
    gw = gateway(
        {
            "services": {
                "chat": {
                    "models": {"A": {"fallbacks": ["B"]}},
                    "instances": [{"name": "A", "base_url": first.url}, {"name": "B", "base_url": second.url}],
                }
            }
        }
    )
    with pytest.raises(openai.InternalServerError):
        ask(sdk(gw), model="A")
    assert first.requests["status_500"] == second.requests["status_500"] == 1


DEFAULT_BODY = {
    "id": "chatcmpl-default",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "We are busy, try again later."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
}


def test_default_response_when_everything_fails(start_fault: StartFault, gateway: StartGateway) -> None:
    a, b = start_fault("a", "refuse"), start_fault("b", "status_500")
    gw = gateway(
        chat_config(
            a.url,
            b.url,
            default_response={"status": 200, "body": DEFAULT_BODY, "headers": {"X-Served-By": "default"}},
        )
    )
    assert ask(sdk(gw)) == "We are busy, try again later."
    status, headers, body = raw_post(gw.url, CHAT, {"model": "m", "messages": user()})
    assert status == 200
    assert headers["x-served-by"] == "default"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == DEFAULT_BODY
    # A stream cannot be answered by a static JSON body: the client gets the error.
    with pytest.raises(openai.APIStatusError) as info:
        stream_text(sdk(gw))
    assert info.value.status_code >= 500


def test_default_response_with_an_error_status(start_fault: StartFault, gateway: StartGateway) -> None:
    down = start_fault("down", "refuse")
    body = {"error": {"message": "maintenance", "type": "server_error", "param": None, "code": "maintenance"}}
    gw = gateway(
        chat_config(down.url, default_response={"status": 503, "body": body, "headers": {"Retry-After": "60"}})
    )
    status, headers, raw = raw_post(gw.url, CHAT, {"model": "m", "messages": user()})
    assert (status, headers["retry-after"], json.loads(raw)) == (503, "60", body)


@pytest.mark.parametrize("enabled", [True, False])
def test_stale_cache_serves_a_known_answer_only_when_every_instance_fails(
    enabled: bool, start_fault: StartFault, gateway: StartGateway
) -> None:
    backend = start_fault("backend")
    service: dict[str, Any] = {"stale_cache": {"enabled": True}} if enabled else {}
    gw = gateway(chat_config(backend.url, **service))
    client = sdk(gw)
    first = client.chat.completions.create(model="m", messages=user("cached?"))  # type: ignore[arg-type]
    assert first.choices[0].message.content == "hello from backend"

    backend.set_mode("refuse")
    if enabled:
        again = client.chat.completions.create(model="m", messages=user("cached?"))  # type: ignore[arg-type]
        assert again.model_dump() == first.model_dump()
    else:
        with pytest.raises(openai.APIStatusError) as info:
            ask(client, text="cached?")
        assert info.value.status_code in (502, 503)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, text="never asked before")
    assert info.value.status_code in (502, 503)

    # While a backend is up, the cache is not used: a fresh answer is fetched.
    backend.set_mode("ok")
    assert backend.requests["ok"] == 1
    assert ask(client, text="cached?") == "hello from backend"
    assert backend.requests["ok"] == 2


def test_stale_cache_comes_before_the_default_response(start_fault: StartFault, gateway: StartGateway) -> None:
    backend = start_fault("backend")
    gw = gateway(
        chat_config(backend.url, stale_cache={"enabled": True}, default_response={"status": 200, "body": DEFAULT_BODY})
    )
    client = sdk(gw)
    assert ask(client, text="known") == "hello from backend"
    backend.set_mode("status_500")
    assert ask(client, text="known") == "hello from backend"
    assert ask(client, text="unknown") == "We are busy, try again later."
    assert backend.requests["status_500"] == 2


def test_retry_attempts_bound_the_tries_per_model(start_fault: StartFault, gateway: StartGateway) -> None:
    bad = [start_fault(name, "status_500") for name in "abc"]
    gw = gateway(chat_config(*(b.url for b in bad), retry={"attempts": 2}))
    with pytest.raises(openai.InternalServerError):
        ask(sdk(gw))
    assert sum(b.api_requests() for b in bad) == 2


# ---------------------------------------------------------------------------------------------- the deadline


@pytest.mark.parametrize(("first_byte", "tries"), [(0.6, 2), (10, 1)])
def test_retry_deadline_bounds_the_time_across_all_attempts(
    first_byte: float, tries: int, start_fault: StartFault, gateway: StartGateway
) -> None:
    a, b = start_fault("a", "hang"), start_fault("b", "hang")
    gw = gateway(chat_config(a.url, b.url, timeouts={"first_byte": first_byte, "total": 30}, retry={"deadline": 1}))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        ask(sdk(gw))
    elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert 0.9 <= elapsed < 1.4, elapsed
    assert a.api_requests() + b.api_requests() == tries


# ------------------------------------------------------------------------------------------------ multipart


@pytest.mark.parametrize("size", [4 * 1024, 3 * 1024 * 1024], ids=["in-memory", "spooled"])
def test_multipart_upload_is_replayed_byte_for_byte_on_the_next_instance(
    size: int, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    failing, failing_url = start_upstream("failing")
    failing.fail("/v1/audio/transcriptions", 500, {"error": {"message": "GPU fell off", "type": "server_error"}})
    working, working_url = start_upstream("working")
    gw = gateway(
        {
            "services": {
                "stt": {
                    "instances": [
                        {"name": "whisper", "base_url": failing_url, "upstream_model": "whisper-1"},
                        {"name": "whisper", "base_url": working_url, "upstream_model": "whisper-1"},
                    ]
                }
            }
        }
    )
    audio = (bytes(range(256)) * (size // 256 + 1))[:size] + b"\r\n--not-a-boundary\r\n"
    out = sdk(gw).audio.transcriptions.create(
        model="whisper", file=("meeting.wav", audio, "audio/wav"), language="en", temperature=0.2
    )
    assert out.text == "transcript of meeting.wav by whisper-1"
    assert len(failing.requests) == len(working.requests) == 1
    expected = {
        "filename": "meeting.wav",
        "content_type": "audio/wav",
        "size": len(audio),
        "sha256": hashlib.sha256(audio).hexdigest(),
    }
    assert failing.last.files["file"] == working.last.files["file"] == expected
    assert failing.last.fields == working.last.fields
    assert working.last.fields["language"] == "en"


# -------------------------------------------------------------------------- half-open probes that go wrong


def test_a_stalled_stream_probe_frees_its_half_open_slot(
    start_fault: StartFault, start_upstream: StartUpstream, gateway: StartGateway
) -> None:
    """A half-open probe that is a stream stalling before its first token must count as a failed probe.

    Today ``StreamResponse._produce`` records the failure with ``probe=False`` and ``_attempt`` never records
    the probe's outcome, so ``breaker.probes`` stays taken: the breaker is stuck half-open and the instance is
    never used again, even after it recovers.
    """
    stalled = start_fault("stalled", "stall_first_token")
    _good, good_url = start_upstream("good")
    breaker_cfg = {"consecutive_failures": 1, "open_for": 0.3, "close_after": 1}
    gw = gateway(chat_config(stalled.url, good_url, timeouts=FAST, breaker=breaker_cfg))
    inst = instance_at(gw, stalled.url)
    client = sdk(gw)

    assert stream_text(client) == "tok0 tok1 tok2 "  # the first instance stalls: failed over, breaker trips
    assert inst.breaker.state == OPEN
    time.sleep(0.35)
    for _ in range(3):  # round-robin: the half-open instance gets one of these as its probe
        assert stream_text(client) == "tok0 tok1 tok2 "
        if stalled.requests["stall_first_token"] == 2:
            break
    assert stalled.requests["stall_first_token"] == 2, "the half-open instance got no probe"
    assert inst.breaker.probes == 0, f"the failed probe still holds its slot: {inst.breaker!r}"
    assert inst.breaker.state == OPEN
    assert inst.breaker.trips == 2

    stalled.set_mode("ok")

    def used_after_one_more_request() -> bool:
        assert stream_text(client) == "tok0 tok1 tok2 "
        return stalled.requests["ok"] > 0

    wait_for(used_after_one_more_request, 3, "the recovered instance to be used")


def test_a_probe_abandoned_by_its_client_is_no_success(start_fault: StartFault, gateway: StartGateway) -> None:
    """A half-open probe whose client went away (the request was cancelled) has no verdict on the backend.

    Today ``_attempt`` handles that cancellation with ``breaker.record(True, probe)``, which counts a probe
    success: ``close_after`` abandoned probes close the breaker of a backend that never answered.
    """
    solo = start_fault("solo", "status_500")
    gw = gateway(
        chat_config(
            solo.url,
            timeouts={"first_byte": 30},
            breaker={"consecutive_failures": 1, "open_for": 0.2, "close_after": 2},
        )
    )
    inst = instance_at(gw, solo.url)
    with pytest.raises(openai.InternalServerError):
        ask(sdk(gw))
    assert inst.breaker.state == OPEN
    solo.set_mode("hang")
    impatient = sdk(gw, timeout=0.3)
    for n in range(1, 3):
        time.sleep(0.25)
        with pytest.raises(openai.APITimeoutError):
            ask(impatient)
        wait_for(lambda: inst.inflight == 0, what="the abandoned probe to be cancelled")
        assert solo.requests["hang"] == n
        assert inst.breaker.probes == 0
    assert inst.breaker.probe_successes == 0, f"abandoned probes counted as successes: {inst.breaker!r}"
    assert inst.breaker.state != CLOSED, "the breaker closed although the backend never answered"
