"""The whole local pack behind the gateway, as `./scripts/run` starts it (`modelrouter local`, the embedded default
config): the API document's example requests sent verbatim, model names included, answer 200 from real models
(images: the 503 that says how to add a backend); the openai SDK's chat and streaming; rerank's ranking; a
speech -> transcription round trip through the gateway."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.servers import free_port
from tests.test_api_document import (
    CHAT,
    CHAT_CURL,
    EMBEDDINGS,
    EMBEDDINGS_CURL,
    IMAGE_EDIT,
    IMAGES,
    MASK,
    PNG,
    RERANK,
    SPEECH,
)

pytestmark = pytest.mark.timeout(300)

PANGRAM = "the quick brown fox jumps over the lazy dog"
# The API document's examples are those of tests/test_api_document.py, sent with the document's headers: the
# bearer key is sent and ignored (the embedded default has auth off, as the document's localhost examples assume).
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer your-api-key"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`modelrouter local` on a free port with every model of the pack; its URL once every model is ready."""
    port = free_port()
    log = tmp_path_factory.mktemp("local") / "local.log"
    data = tmp_path_factory.mktemp("data")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelrouter", "local", "--port", str(port), "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MODELROUTER_ADMIN_PASSWORD": "local-e2e-password"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while "Application startup complete" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`modelrouter local` did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        text = log.read_text(errors="replace")
        assert "not every model is ready" not in text, text
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, log.read_text(errors="replace")


def test_the_api_documents_examples_answer_verbatim(gateway: str) -> None:
    chat = httpx.post(gateway + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=120)
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"].strip()
    for body in (CHAT_CURL, EMBEDDINGS_CURL, EMBEDDINGS):
        path = "/v1/chat/completions" if "messages" in body else "/v1/embeddings"
        answer = httpx.post(gateway + path, headers=HEADERS, json=body, timeout=120)
        assert answer.status_code == 200, (body, answer.text)
    embedding = httpx.post(gateway + "/v1/embeddings", headers=HEADERS, json=EMBEDDINGS, timeout=60).json()
    assert len(embedding["data"][0]["embedding"]) == 384  # e5-small's size: `dimensions` cannot enlarge it
    rerank = httpx.post(gateway + "/v1/rerank", headers=HEADERS, json=RERANK, timeout=60)
    assert rerank.status_code == 200, rerank.text
    results = rerank.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]  # top_n 3 of 3
    assert all("score" in r and "document" in r for r in results)
    speech = httpx.post(gateway + "/v1/audio/speech", headers=HEADERS, json=SPEECH, timeout=120)
    assert speech.status_code == 200, speech.text
    assert speech.headers["content-type"] == "audio/mpeg"
    files = {"file": ("speech.mp3", speech.content, "audio/mpeg")}
    heard = httpx.post(gateway + "/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files, timeout=120)
    assert heard.status_code == 200, heard.text
    assert isinstance(heard.json()["text"], str)
    image = httpx.post(gateway + "/v1/images/generations", headers=HEADERS, json=IMAGES, timeout=30)
    assert image.status_code == 503
    assert "image backend" in image.json()["error"]["message"]
    images = {"image": ("cat.png", PNG, "image/png"), "mask": ("mask.png", MASK, "image/png")}
    edit = httpx.post(gateway + "/v1/images/edits", data=IMAGE_EDIT, files=images, timeout=30)
    assert edit.status_code == 503
    assert "image backend" in edit.json()["error"]["message"]


def _sdk(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key="your-api-key", max_retries=0, timeout=120)


def test_chat_with_the_openai_sdk_json_and_streaming(gateway: str) -> None:
    client = _sdk(gateway)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=20
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="gpt-3.5-turbo",
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    with httpx.stream(
        "POST", gateway + "/v1/chat/completions", json={**CHAT_CURL, "stream": True, "max_tokens": 10}, timeout=60
    ) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_rerank_ranks_the_definition_first(gateway: str) -> None:
    documents = [
        "今天天气很好,适合去公园散步",
        "The stock market closed higher on Friday.",
        "人工智能是计算机科学的一个分支",
        "我喜欢吃苹果和香蕉",
        "A recipe for tomato soup with basil.",
    ]
    body = {"model": "rerank-multilingual-v2.0", "query": "什么是人工智能?", "documents": documents}
    results = httpx.post(gateway + "/v1/rerank", json=body, timeout=60).json()["results"]
    assert results[0]["index"] == 2
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_speech_then_transcription_round_trip_through_the_gateway(gateway: str) -> None:
    client = _sdk(gateway)
    spoken = client.audio.speech.create(model="tts-1", voice="alloy", input=PANGRAM, response_format="wav")
    audio = spoken.read()
    heard = client.audio.transcriptions.create(model="whisper-1", file=("fox.wav", io.BytesIO(audio)))
    assert len(_words(heard.text) & _words(PANGRAM)) >= 6, heard.text
    for fmt, check in (
        ("text", lambda t: len(_words(t) & _words(PANGRAM)) >= 6),
        ("srt", lambda t: re.search(r"^1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", t, re.M) is not None),
        ("vtt", lambda t: t.startswith("WEBVTT") and re.search(r"\d\d:\d\d\.\d{3} --> ", t) is not None),
    ):
        files = {"file": ("fox.wav", audio, "audio/wav")}
        form = {"model": "whisper-1", "response_format": fmt}
        answer = httpx.post(gateway + "/v1/audio/transcriptions", data=form, files=files, timeout=60)
        assert answer.status_code == 200, answer.text
        assert check(answer.text), (fmt, answer.text)
