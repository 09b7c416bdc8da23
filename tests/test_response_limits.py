"""Non-streamed upstream answers are read under a cap (``max_response_bytes``), and file answers stream through.

A 2 GiB answer once drove the gateway to a 4.2 GB peak. Now an answer whose Content-Length is over the cap is
refused without reading a byte of it, one without a length is cut off once past the cap, and either way its
connection is dropped (never pooled half-read), the instance takes a breaker failure and the request fails over.
Error bodies are capped at 1 MiB (the status is kept). Images and audio answered as files are streamed.

Each fault is played by ``faults.FaultServer`` on loopback, which writes its huge bodies piece by piece for as long
as the gateway reads; the peak-memory test runs ``python -m modelrouter serve`` in a child process.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from modelrouter import parse_config
from modelrouter.config.load import ConfigError
from modelrouter.routing.instance import Instance
from modelrouter.routing.router import RoutingTable

from .bystander import Bystander, two_models
from .faults import FaultServer
from .servers import BackgroundLoop, GatewayServer
from .test_lifecycle import GatewayProcess, write_config

StartGateway = Callable[[dict[str, Any]], GatewayServer]
StartFault = Callable[..., FaultServer]

MIB = 1024 * 1024
CHAT = "/v1/chat/completions"
CAP = 1 * MIB  # the in-process tests' cap: small, so that "over it" is quick to play


@pytest.fixture
def start_fault(bg: BackgroundLoop, servers: list[Any]) -> StartFault:
    def start(name: str = "fault", mode: str = "ok", **attrs: Any) -> FaultServer:
        server = FaultServer(bg, name, mode)
        for key, value in attrs.items():
            setattr(server, key, value)
        servers.append(server.start())
        return server

    return start


# --------------------------------------------------------------------------------------------------- helpers


def post(base_url: str, path: str, body: Any, timeout: float = 10) -> tuple[int, dict[str, str], bytes, int]:
    """POST JSON; (status, headers, the body's first 64 KiB, the body's full length). The rest is read and
    dropped, so that a huge answer does not have to fit in the test process either."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        head = resp.read(64 * 1024)
        size = len(head)
        while piece := resp.read(MIB):
            size += len(piece)
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, head, size
    finally:
        conn.close()


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def error_of(body: bytes) -> dict[str, Any]:
    err = json.loads(body)["error"]
    assert isinstance(err, dict)
    return err


def instance_at(gw: GatewayServer, url: str) -> Instance:
    (found,) = [i for i in gw.gateway.table.all_instances() if i.base_url == url]
    return found


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def open_connections(server: FaultServer) -> int:
    return len(server._writers)


# ------------------------------------------------------------------------------------------------- the config


def test_the_cap_defaults_by_kind_of_service_and_the_nearer_setting_wins() -> None:
    def caps(config: dict[str, Any]) -> dict[str, int]:
        table = RoutingTable(parse_config(config))
        return {i.name: i.max_response_bytes for i in table.all_instances()}

    url = "http://127.0.0.1:9"
    config: dict[str, Any] = {
        "services": {
            "chat": {"instances": [{"name": "c", "base_url": url}]},
            "embedding": {"instances": [{"name": "e", "base_url": url}]},
            "image_generation": {
                "max_response_bytes": 10 * MIB,
                "instances": [{"name": "i", "base_url": url}, {"name": "j", "base_url": url, "max_response_bytes": 5}],
            },
        }
    }
    assert caps(config) == {"c#1": 64 * MIB, "e#1": 256 * MIB, "i#1": 10 * MIB, "j#1": 5}
    with pytest.raises(ConfigError, match="max_response_bytes"):
        parse_config({"services": {"chat": {"max_response_bytes": 0, "instances": []}}})


def test_a_reload_changing_the_cap_keeps_the_instance_and_its_state() -> None:
    def config(cap: int) -> Any:
        instance = {"name": "c", "base_url": "http://127.0.0.1:9", "max_response_bytes": cap}
        return parse_config({"services": {"chat": {"instances": [instance]}}})

    first = RoutingTable(config(MIB))
    (inst,) = first.all_instances()
    inst.breaker.record(False, False)
    (after,) = RoutingTable(config(2 * MIB), first).all_instances()
    assert after is inst
    assert after.max_response_bytes == 2 * MIB
    assert after.breaker.consecutive == 1


# ------------------------------------------------------------------------------------------ over the cap: 502


@pytest.mark.parametrize("mode", ["huge_length", "huge_chunked"])
def test_an_answer_over_the_cap_is_a_502_its_connection_dropped_and_a_breaker_failure(
    start_fault: StartFault, start_gateway: StartGateway, mode: str
) -> None:
    """A 256 MiB answer (Content-Length saying so, or chunked without a length) at a 1 MiB cap: refused at once,
    or cut off just past the cap; the upstream is not read on, and another client's requests stay fast."""
    huge = start_fault("m", mode, huge_bytes=256 * MIB)
    ok = start_fault("ok")
    gw = start_gateway(two_models(huge.url, ok.url, max_response_bytes=CAP))
    with Bystander(gw.url, "ok") as others:
        for _ in range(3):
            started = time.monotonic()
            status, _, body, _ = post(gw.url, CHAT, chat("m"), timeout=30)
            assert status == 502, body[:200]
            assert time.monotonic() - started < 5
            err = error_of(body)
            assert (err["type"], err["code"]) == ("api_error", "upstream_response_too_large")
            assert str(CAP) in err["message"]
            # Dropped, not pooled: the upstream sees its connection closed and stops writing.
            wait_for(lambda: open_connections(huge) == 0, "the cut-off connection to be closed")
        time.sleep(0.3)  # the bystander keeps going for a little after the last fault
    others.assert_served()
    # Three answers of 256 MiB each: what was written is what socket buffers and the cap took, not the answers.
    assert huge.huge_sent < 3 * (CAP + 16 * MIB), huge.huge_sent
    assert huge.api_requests() == 3
    assert instance_at(gw, huge.url).breaker.consecutive == 3


def test_an_answer_over_the_cap_fails_over_to_another_instance(
    start_fault: StartFault, start_gateway: StartGateway
) -> None:
    huge = start_fault("big", "huge_chunked", huge_bytes=16 * MIB)
    good = start_fault("good")
    config = {
        "breaker": {"consecutive_failures": 100},  # keep it in the rotation: each request tries it first or second
        "services": {
            "chat": {
                "max_response_bytes": CAP,
                "instances": [{"name": "m", "base_url": huge.url}, {"name": "m", "base_url": good.url}],
            }
        },
    }
    gw = start_gateway(config)
    for _ in range(4):
        status, _, body, _ = post(gw.url, CHAT, chat("m"), timeout=30)
        assert status == 200, body[:200]
        assert json.loads(body)["choices"][0]["message"]["content"] == "hello from good"
    assert huge.api_requests() >= 1
    assert instance_at(gw, huge.url).breaker.consecutive == huge.api_requests()


def test_answers_up_to_the_cap_pass_whole(start_fault: StartFault, start_gateway: StartGateway) -> None:
    """Guard, not a regression: at exactly the cap, with or without a length, the answer is passed on."""
    server = start_fault("m", "huge_length", huge_bytes=CAP)
    gw = start_gateway(
        {"services": {"chat": {"max_response_bytes": CAP, "instances": [{"name": "m", "base_url": server.url}]}}}
    )
    for mode in ("huge_length", "huge_chunked"):
        server.set_mode(mode)
        status, _, _, size = post(gw.url, CHAT, chat("m"))
        assert (status, size) == (200, CAP)


def test_an_error_body_over_1_mib_is_dropped_and_the_status_kept(
    start_fault: StartFault, start_gateway: StartGateway
) -> None:
    """Error bodies are capped much smaller (they only become an error message): the client gets the upstream's
    status, a short message, and the upstream is cut off rather than read to its end."""
    huge = start_fault("m", "huge_error", huge_bytes=256 * MIB)
    ok = start_fault("ok")
    gw = start_gateway(two_models(huge.url, ok.url, retry={"attempts": 1}))
    with Bystander(gw.url, "ok") as others:
        started = time.monotonic()
        status, _, body, size = post(gw.url, CHAT, chat("m"), timeout=30)
        assert time.monotonic() - started < 5
        time.sleep(0.3)
    others.assert_served()
    assert status == 500
    assert size < 1024
    assert "over 1 MiB" in error_of(body)["message"]
    wait_for(lambda: open_connections(huge) == 0, "the cut-off connection to be closed")
    assert huge.huge_sent < MIB + 16 * MIB


# ------------------------------------------------------------------------------------- file answers: streamed


def _image_services(url: str, cap: int) -> dict[str, Any]:
    instance = {"name": "img", "base_url": url}
    return {
        "services": {
            "image_generation": {"max_response_bytes": cap, "instances": [instance]},
            "image_edit": {"max_response_bytes": cap, "instances": [instance]},
        }
    }


@pytest.mark.parametrize("endpoint", ["generations", "edits"])
def test_an_image_answered_as_a_file_streams_through_past_the_cap(
    start_fault: StartFault, start_gateway: StartGateway, endpoint: str
) -> None:
    """A server answering the picture itself (image/png) rather than JSON: streamed like speech, so neither
    held whole nor bounded by the cap (chunked to the client, every byte passed)."""
    size = 4 * MIB
    server = start_fault("img", "huge_chunked", huge_bytes=size, huge_type="image/png")
    gw = start_gateway(_image_services(server.url, CAP))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=10)
    if endpoint == "generations":
        raw = client.images.with_raw_response.generate(model="img", prompt="a cat")
    else:
        raw = client.images.with_raw_response.edit(
            model="img", prompt="a cat", image=("a.png", b"\x89PNG", "image/png")
        )
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "image/png"
    assert raw.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in raw.headers
    assert len(raw.content) == size


# ---------------------------------------------------------------------------------------------- peak memory


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/PID/status")


def test_huge_answers_keep_the_gateways_peak_memory_bounded(start_fault: StartFault, tmp_path: Path) -> None:
    """A real `modelrouter serve` process with the default caps: 1 GiB chat answers (with and without a length)
    and a 512 MiB image file answer leave its peak RSS within 100 MiB of idle, and another client served."""
    huge = start_fault("m", "huge_length", huge_bytes=1024 * MIB)
    ok = start_fault("ok")
    image = start_fault("img", "huge_chunked", huge_bytes=512 * MIB, huge_type="image/png")
    config = {
        "health_check": {"enabled": False},
        "server": {"watch_config": False},
        "store": {"data_dir": str(tmp_path / "data")},
        **two_models(huge.url, ok.url),
    }
    config["services"]["image_generation"] = {"instances": [{"name": "img", "base_url": image.url}]}
    path = tmp_path / "config.yaml"
    write_config(path, config)
    gw = GatewayProcess(path, tmp_path / "gateway.log")
    try:
        gw.wait_ready()
        assert post(gw.url, CHAT, chat("ok"))[0] == 200  # warm: the first request's imports and pools
        # Idle is the resident size now, not the peak so far: start-up (imports, the store's migrations) peaks
        # some 60 MiB higher than the process then needs, which would hide most of a 64 MiB buffer.
        idle = _vm_kib(gw.proc.pid, "VmRSS")
        with Bystander(gw.url, "ok") as others:
            for mode in ("huge_length", "huge_chunked"):
                huge.set_mode(mode)
                for _ in range(2):
                    started = time.monotonic()
                    status, _, body, _ = post(gw.url, CHAT, chat("m"), timeout=60)
                    assert status == 502, body[:200]
                    assert time.monotonic() - started < 10
                    assert error_of(body)["code"] == "upstream_response_too_large"
            started = time.monotonic()
            status, headers, _, size = post(gw.url, "/v1/images/generations", {"model": "img", "prompt": "x"}, 60)
            assert time.monotonic() - started < 30
            assert (status, headers["content-type"], size) == (200, "image/png", 512 * MIB)
        others.assert_served(worst=5.0)
        peak = _vm_kib(gw.proc.pid, "VmHWM")
        assert (peak - idle) / 1024 < 100, f"peak RSS grew {(peak - idle) / 1024:.0f} MiB over idle ({idle} KiB)"
    finally:
        gw.kill()
