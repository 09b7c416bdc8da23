"""The local model pack around the gateway: the supervisor (ports, health, restarts, stop), `modelrouter local`,
and the embedded default config - the API document's names routed to the pack, and a clear 503 naming what to
install when a model is not running (docs/local.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from modelrouter.config.load import ConfigError, default_config_text, expand_env, parse_config, parse_yaml
from modelrouter.local.catalog import CATALOG, KINDS, LocalModel
from modelrouter.local.supervisor import Supervisor
from tests.servers import GatewayServer, free_port

EMBEDDING = next(m for m in CATALOG if m.kind == "embedding")


def _wait(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says whether it really runs.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def _embed(url: str) -> list[float]:
    request = urllib.request.Request(
        url + "/v1/embeddings",
        data=orjson.dumps({"model": EMBEDDING.served_id, "input": "要嵌入的文本"}),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return list(orjson.loads(answer.read())["data"][0]["embedding"])


@pytest.fixture
def supervisor() -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def make(*models: LocalModel) -> Supervisor:
        made.append(sup := Supervisor([replace(m, port=free_port()) for m in models], threads=1))
        return sup

    yield make
    for sup in made:
        sup.stop()


@pytest.mark.timeout(90)
def test_a_model_that_dies_is_restarted_and_answers_again(supervisor: Callable[..., Supervisor]) -> None:
    sup = supervisor(EMBEDDING)
    urls = sup.start()
    assert sup.wait_ready(60)
    [child] = sup.children
    url = urls[EMBEDDING.url_variable]
    assert url == child.url
    assert len(_embed(url)) == 384
    first = child.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _wait(lambda: child.state == "ready" and child.pid != first, "the model to be restarted", 60)
    assert child.restarts == 1
    assert len(_embed(url)) == 384  # the same URL: the gateway's config needs no change
    assert not _alive(first)


@pytest.mark.timeout(60)
def test_stop_ends_every_model_and_frees_its_port(supervisor: Callable[..., Supervisor]) -> None:
    sup = supervisor(EMBEDDING)
    sup.start()
    assert sup.wait_ready(60)
    [child] = sup.children
    pid = child.pid
    assert pid is not None
    sup.stop()
    assert child.state == "stopped"
    assert not _alive(pid)
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(child.url + "/health", timeout=2)


def test_a_model_whose_package_is_missing_is_not_started_and_says_what_to_install(
    supervisor: Callable[..., Supervisor],
) -> None:
    ghost = replace(EMBEDDING, kind="ghost", modules=("modelrouter_no_such_package",))
    sup = supervisor(ghost)
    sup.start()
    assert sup.wait_ready(5)  # missing is settled, not waited for
    [child] = sup.children
    assert child.state == "missing"
    assert child.pid is None
    assert "pip install 'modelrouter[local]'" in child.why
    assert "modelrouter_no_such_package" in child.why


def test_a_taken_default_port_moves_the_model_to_a_free_one(supervisor: Callable[..., Supervisor]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        sup = Supervisor([replace(EMBEDDING, port=busy, modules=("modelrouter_no_such_package",))])
        urls = sup.start()
        sup.stop()
    assert urls[EMBEDDING.url_variable] != f"http://127.0.0.1:{busy}"


# --- the embedded default config -------------------------------------------------------------------------------


def _default_document(env: dict[str, str]) -> dict[str, Any]:
    problems: list[str] = []
    document = expand_env(parse_yaml(default_config_text(), "<default>"), env, problems)
    assert problems == []
    assert isinstance(document, dict)
    return document


def _closed_ports_env() -> dict[str, str]:
    """Every local model's URL on a port nothing listens on: a machine without the pack running."""
    return {m.url_variable: f"http://127.0.0.1:{free_port()}" for m in CATALOG} | {
        "OLLAMA_URL": f"http://127.0.0.1:{free_port()}"
    }


def test_the_default_config_routes_the_api_documents_names_to_the_pack() -> None:
    config = parse_config(_default_document({}))
    expected = {
        "gpt-3.5-turbo": ("chat", "chat"),
        "gpt-4o-mini": ("chat", "chat"),
        "text-embedding-ada-002": ("embedding", "embedding"),
        "text-embedding-3-small": ("embedding", "embedding"),
        "rerank-multilingual-v2.0": ("rerank", "rerank"),
        "tts-1": ("tts", "speech"),
        "tts-1-hd": ("tts", "speech"),
        "whisper-1": ("stt", "transcription"),
    }
    urls = {m.kind: f"http://127.0.0.1:{m.port}" for m in CATALOG}
    for name, (service, kind) in expected.items():
        target = config.aliases[name]
        [instance] = [i for i in config.services[service].instances if target in i.served_names]  # type: ignore[index]
        assert instance.base_url == urls[kind], name
    assert set(KINDS) == set(urls)
    # dall-e-3 and dall-e-2 are placeholders with a hint, not pictures from nowhere
    assert config.services["image_generation"].instances == []
    assert "image backend" in (config.services["image_generation"].models["dall-e-3"].unavailable or "")


def test_a_model_declared_without_instances_needs_its_unavailable_message() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"services": {"image_generation": {"models": {"dall-e-3": {}}}}})
    assert "services.image_generation.models.dall-e-3: no instance serves this model" in str(caught.value)
    placeholder = {"image_generation": {"models": {"dall-e-3": {"unavailable": "x"}}}}
    config = parse_config({"aliases": {"pic": "dall-e-3"}, "services": placeholder})
    assert config.aliases == {"pic": "dall-e-3"}  # a placeholder may be aliased


def test_without_the_pack_each_model_answers_503_naming_the_extra(
    start_gateway: Callable[..., GatewayServer],
) -> None:
    gw = start_gateway(_default_document(_closed_ports_env()))
    asks = [
        ("/v1/chat/completions", {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "你好!"}]}),
        ("/v1/embeddings", {"model": "text-embedding-ada-002", "input": "要嵌入的文本"}),
        ("/v1/rerank", {"model": "rerank-multilingual-v2.0", "query": "q", "documents": ["a", "b"]}),
        ("/v1/audio/speech", {"model": "tts-1", "input": "hello", "voice": "alloy"}),
    ]
    for path, body in asks:
        answer = httpx.post(gw.url + path, json=body, timeout=10)
        assert answer.status_code == 503, (path, answer.text)
        error = answer.json()["error"]
        assert error["type"] == "overloaded_error"
        assert "pip install 'modelrouter[local]'" in error["message"]
        assert "modelrouter local" in error["message"]
        assert "127.0.0.1" not in error["message"]  # clients never learn the topology
    wav = {"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
    answer = httpx.post(gw.url + "/v1/audio/transcriptions", data={"model": "whisper-1"}, files=wav, timeout=10)
    assert answer.status_code == 503
    assert "modelrouter[local]" in answer.json()["error"]["message"]


def test_images_answer_503_saying_how_to_add_an_image_backend(start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(_default_document(_closed_ports_env()))
    answer = httpx.post(gw.url + "/v1/images/generations", json={"model": "dall-e-3", "prompt": "一只猫"}, timeout=10)
    assert answer.status_code == 503
    assert "image backend" in answer.json()["error"]["message"]
    edit = httpx.post(
        gw.url + "/v1/images/edits",
        data={"model": "dall-e-2", "prompt": "p"},
        files={"image": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")},
        timeout=10,
    )
    assert edit.status_code == 503
    assert "image backend" in edit.json()["error"]["message"]
    listed = {m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=10).json()["data"]}
    assert "gpt-3.5-turbo" in listed
    assert "dall-e-3" not in listed
    assert "dall-e-2" not in listed


# --- `modelrouter local` ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_modelrouter_local_serves_the_gateway_over_the_models_and_stops_them_with_it(tmp_path: Any) -> None:
    port = free_port()
    env = {**os.environ, "MODELROUTER_LOCAL_EMBEDDING_URL": "ignored: the command publishes its own"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelrouter",
            "local",
            "--models",
            "embedding",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is None and False

        _wait(answers, "the gateway", 90)
        body = {"model": "text-embedding-ada-002", "input": "要嵌入的文本", "dimensions": 1536}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"][0]["embedding"]) == 384
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 1  # the one model asked for
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert "local embedding ready" in output
    assert not _alive(int(children[0]))
