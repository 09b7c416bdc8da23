"""The console's playground in a real headless Chromium against a real gateway, store and loopback FakeOpenAI
upstream: with client keys on and a key created in the page, a chat streams (its first tokens are in the page while
the upstream still holds the stream open, the rest and the usage after it lets go), a stream is stopped (the
upstream sees the client go), a chat not streamed, embeddings (the dimensions the upstream made), rerank (the ranked
list in the gateway's order and scores), an unknown model (the gateway's error type, code and message); with keys
off and no key: speech (an <audio> playing a Blob of the upstream's bytes), a transcription of an uploaded file,
images generated and edited (shown). Each request's curl, run in a shell with the real key, gets the same answer. A
viewer pastes a key and may not create one. The browser logs no error, except the one 404 the error test asks for."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import shutil
import struct
import subprocess
import wave
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from .console_browser import PASSWORD, go_to, log_in, page_errors, screenshot, wait
from .fakes import FakeOpenAI, vector_for
from .servers import GatewayServer

MODELS = {
    "chat": "qwen",
    "embedding": "bge",
    "rerank": "ranker",
    "tts": "voice-1",
    "stt": "whisper",
    "image_generation": "painter",
    "image_edit": "editor",
}
QUERY = "capital of France"
DOCS = ["Berlin is the capital of Germany", "Paris is the capital of France", "Bananas are yellow", "France"]


def _gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Path,
    *,
    keys: bool,
) -> tuple[FakeOpenAI, GatewayServer]:
    fake, url = start_upstream("a")
    services = {service: {"instances": [{"name": name, "base_url": url}]} for service, name in MODELS.items()}
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "auth": {"enabled": keys},
            "usage": {"enabled": True},  # the store opens with keys off too (the admin API lives on it)
            "aliases": {"smart": "qwen"},
            "services": services,
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD))
    gw.bg.run(store.create_admin("watcher", PASSWORD, "viewer"))
    return fake, gw


@pytest.fixture
def keyed(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> tuple[FakeOpenAI, GatewayServer]:
    return _gateway(start_upstream, start_gateway, tmp_path, keys=True)


@pytest.fixture
def open_gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Path
) -> tuple[FakeOpenAI, GatewayServer]:
    return _gateway(start_upstream, start_gateway, tmp_path, keys=False)


@pytest.fixture
def held(keyed: tuple[FakeOpenAI, GatewayServer]) -> Iterator[Callable[[], None]]:
    """The upstream's chat streams stop after the role event and the first token until ``release()`` (called at
    the end of the test in any case, so no stream outlives it)."""
    fake, gw = keyed
    hold = asyncio.Event()
    fake.hold, fake.hold_after = hold, 2

    def release() -> None:
        gw.bg.loop.call_soon_threadsafe(hold.set)

    yield release
    release()


# --- driving the page -----------------------------------------------------------------------------------------------


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def open_playground(driver: Any, gw: GatewayServer, username: str = "ops") -> None:
    log_in(driver, gw, username)
    go_to(driver, "playground")
    wait(
        lambda: by_id(driver, "pg-key-status").get_attribute("data-key") in ("missing", "none-needed"), "the key status"
    )


def create_key(driver: Any) -> None:
    """Create a key in the page and wait until it is in use (the page waits for the gateway to honour it)."""
    by_id(driver, "pg-create-key").click()
    wait(lambda: "models from /v1/models" in by_id(driver, "pg-key-status").text, "the new key in use", timeout=15)
    assert by_id(driver, "pg-key-status").get_attribute("data-key") == "created"


def fill(driver: Any, element_id: str, text: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(text)


def tab(driver: Any, name: str) -> None:
    by_id(driver, f"pg-tab-{name}").click()
    wait(lambda: by_id(driver, f"pg-{name}").is_displayed(), f"the {name} form")


def send(driver: Any, name: str) -> str:
    """Send the tab's form; the state its output ends in (done, failed)."""
    by_id(driver, f"pg-{name}-send").click()
    return str(wait(lambda: _settled(driver, name), f"the {name} answer", timeout=15))


def _settled(driver: Any, name: str) -> str | None:
    state = by_id(driver, f"pg-{name}-out").get_attribute("data-state")
    return state if state in ("done", "failed", "stopped") else None


def shown_curl(driver: Any, name: str) -> str:
    """The curl command the page shows for the tab's last request, with the key shown."""
    toggle = by_id(driver, "pg-show-key")
    if not toggle.is_selected():
        toggle.click()
    return str(by_id(driver, f"pg-{name}-curl").text)


def run_curl(command: str, cwd: Path) -> bytes:
    """The command as a user pastes it into a shell (curl if the machine has it)."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine to run the command the page shows")
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, timeout=30, check=True)
    return done.stdout


def png(width: int, height: int) -> bytes:
    """A real RGB PNG of one red colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def wav(seconds: float) -> bytes:
    """A real WAV: a 440 Hz tone, 8 kHz mono 16-bit."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        frames = int(8000 * seconds)
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(frames))
        )
    return out.getvalue()


# --- with client keys on, a key created in the page -----------------------------------------------------------------


def test_a_chat_streams_into_the_page_before_the_stream_ends(
    browser: Any, keyed: tuple[FakeOpenAI, GatewayServer], held: Callable[[], None]
) -> None:
    fake, gw = keyed
    open_playground(browser, gw)
    assert "needs a client key" in by_id(browser, "pg-key-status").text
    create_key(browser)
    # The chat form offers the chat names /v1/models lists (the alias too), none of the other services'.
    options = [o.get_attribute("value") for o in by_id(browser, "pg-chat-models").find_elements("tag name", "option")]
    assert options == ["qwen", "smart"]
    assert by_id(browser, "pg-chat-model").get_attribute("value") == "qwen"

    fill(browser, "pg-chat-system", "Be brief.")
    fill(browser, "pg-chat-user", "Say hello")
    by_id(browser, "pg-chat-send").click()
    wait(lambda: "tok0" in by_id(browser, "pg-chat-answer").text, "the first token")
    # The stream is still open at the upstream, and the page shows what came so far.
    assert by_id(browser, "pg-chat-out").get_attribute("data-state") == "running"
    assert "tok1" not in by_id(browser, "pg-chat-answer").text
    assert by_id(browser, "pg-chat-stop").is_displayed()
    screenshot(browser, "playground-chat-streaming")
    sent = fake.last
    assert sent.json["stream"] is True
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]

    held()
    wait(lambda: by_id(browser, "pg-chat-out").get_attribute("data-state") == "done", "the end of the stream")
    assert by_id(browser, "pg-chat-answer").get_attribute("textContent") == "tok0 tok1 tok2 "  # as the upstream sent
    assert by_id(browser, "pg-chat-usage").get_attribute("data-total") == "8"
    assert not by_id(browser, "pg-chat-stop").is_displayed()

    # The curl shows the key masked, unless asked; asked, it is the key that the upstream's caller used.
    masked_curl = by_id(browser, "pg-chat-curl").text
    assert "curl -sS -N" in masked_curl
    assert gw.url + "/v1/chat/completions" in masked_curl
    command = shown_curl(browser, "chat")
    secret = command.split("Authorization: Bearer ", 1)[1].split("'", 1)[0]
    assert secret not in masked_curl
    assert secret.startswith(masked_curl.split("Authorization: Bearer ", 1)[1].split("…", 1)[0])
    store = gw.gateway.store
    assert store is not None
    assert [k.name.startswith("playground ") for k in gw.bg.run(store.list_keys())] == [True]
    screenshot(browser, "playground-chat")


def test_stop_ends_the_stream_at_the_upstream(
    browser: Any, keyed: tuple[FakeOpenAI, GatewayServer], held: Callable[[], None]
) -> None:
    fake, gw = keyed
    # Released, the fake writes on, a little at a time: to a gateway that dropped the stream, its next write fails.
    fake.stream_events, fake.stream_gap = 200, 0.01
    open_playground(browser, gw)
    create_key(browser)
    fill(browser, "pg-chat-user", "Tell me a long story")
    by_id(browser, "pg-chat-send").click()
    wait(lambda: "tok0" in by_id(browser, "pg-chat-answer").text, "the first token")
    by_id(browser, "pg-chat-stop").click()
    wait(lambda: by_id(browser, "pg-chat-out").get_attribute("data-state") == "stopped", "the stream stopped")
    assert by_id(browser, "pg-chat-answer").get_attribute("textContent") == "tok0 "
    held()
    wait(lambda: fake.disconnects == 1, "the upstream to see its client go")
    assert "tok1" not in by_id(browser, "pg-chat-answer").get_attribute("textContent")


def test_a_chat_not_streamed_and_its_curl_gets_the_same_answer(
    browser: Any, keyed: tuple[FakeOpenAI, GatewayServer], tmp_path: Path
) -> None:
    fake, gw = keyed
    open_playground(browser, gw)
    create_key(browser)
    by_id(browser, "pg-chat-stream").click()
    fill(browser, "pg-chat-user", "Hi")
    fill(browser, "pg-chat-temperature", "0.5")
    fill(browser, "pg-chat-max-tokens", "20")
    assert send(browser, "chat") == "done"
    assert by_id(browser, "pg-chat-answer").text == "hello from a"
    assert by_id(browser, "pg-chat-usage").get_attribute("data-total") == "8"
    sent = fake.last.json
    assert (sent["stream"], sent["temperature"], sent["max_tokens"]) == (False, 0.5, 20)

    answer = json.loads(run_curl(shown_curl(browser, "chat"), tmp_path))
    assert answer["choices"][0]["message"]["content"] == "hello from a"
    assert answer["usage"]["total_tokens"] == 8
    assert fake.last.json == sent  # the same request reached the upstream


def test_embeddings_rerank_and_an_unknown_model(
    browser: Any, keyed: tuple[FakeOpenAI, GatewayServer], tmp_path: Path
) -> None:
    fake, gw = keyed
    open_playground(browser, gw)
    create_key(browser)

    tab(browser, "embeddings")
    assert by_id(browser, "pg-embeddings-model").get_attribute("value") == "bge"
    fill(browser, "pg-embeddings-input", "the quick brown fox")
    fill(browser, "pg-embeddings-dimensions", "5")
    assert send(browser, "embeddings") == "done"
    assert fake.last.json["dimensions"] == 5
    row = by_id(browser, "pg-embeddings-table").find_element("css selector", "tbody tr")
    assert row.get_attribute("data-dims") == "5"
    values = [float(v) for v in row.find_element("css selector", ".pg-values").text.split(", ")]
    assert values == pytest.approx(vector_for("the quick brown fox", 5), abs=1e-4)
    replayed = json.loads(run_curl(shown_curl(browser, "embeddings"), tmp_path))
    assert replayed["data"][0]["embedding"] == vector_for("the quick brown fox", 5)
    screenshot(browser, "playground-embeddings")

    tab(browser, "rerank")
    fill(browser, "pg-rerank-query", QUERY)
    fill(browser, "pg-rerank-documents", "\n".join(DOCS))
    assert send(browser, "rerank") == "done"
    assert fake.last.json["documents"] == DOCS
    items = by_id(browser, "pg-rerank-results").find_elements("css selector", "li")
    ranked = [(int(li.get_attribute("data-index")), float(li.get_attribute("data-score"))) for li in items]
    replayed = json.loads(run_curl(shown_curl(browser, "rerank"), tmp_path))
    assert ranked == [(r["index"], r["score"]) for r in replayed["results"]]
    assert [index for index, _ in ranked] == [3, 1, 0, 2]  # the fake's scores, best first
    assert items[0].find_element("css selector", ".pg-doc").text == "France"
    screenshot(browser, "playground-rerank")

    tab(browser, "chat")
    fill(browser, "pg-chat-model", "no-such-model")
    fill(browser, "pg-chat-user", "Hi")
    requests_before = len(fake.requests)
    assert send(browser, "chat") == "failed"
    error = by_id(browser, "pg-chat-error")
    assert error.get_attribute("data-type") == "not_found_error"
    assert error.get_attribute("data-code") == "model_not_found"
    assert "The model 'no-such-model' does not exist" in error.find_element("css selector", ".pg-message").text
    assert len(fake.requests) == requests_before
    screenshot(browser, "playground-error")
    # The one error in the browser's log is that refused request's 404 (its network log).
    errors = page_errors(browser)
    assert [(e["source"], "/v1/chat/completions" in e["message"] and "404" in e["message"]) for e in errors] == [
        ("network", True)
    ]


# --- with client keys off, no key --------------------------------------------------------------------------------


def test_speech_plays_in_the_page(browser: Any, open_gateway: tuple[FakeOpenAI, GatewayServer], tmp_path: Path) -> None:
    fake, gw = open_gateway
    audio = wav(0.5)
    fake.speech_audio = audio
    open_playground(browser, gw)
    wait(lambda: "models from /v1/models" in by_id(browser, "pg-key-status").text, "the model list")
    assert "off on this gateway" in by_id(browser, "pg-key-status").text
    assert not by_id(browser, "pg-create-key").is_displayed()
    tab(browser, "speech")
    fill(browser, "pg-speech-input", "Hello there")
    from selenium.webdriver.support.ui import Select

    Select(by_id(browser, "pg-speech-format")).select_by_value("wav")
    assert send(browser, "speech") == "done"
    assert fake.last.json == {"model": "voice-1", "input": "Hello there", "voice": "alloy", "response_format": "wav"}
    player = by_id(browser, "pg-speech-audio")
    assert player.get_attribute("src").startswith("blob:")
    assert by_id(browser, "pg-speech-size").get_attribute("data-size") == str(len(audio))
    # It plays: the browser decoded the Blob's header (its length is the tone's).
    duration = wait(lambda: browser.execute_script("return arguments[0].duration", player), "the audio's metadata")
    assert duration == pytest.approx(0.5, abs=0.05)
    command = by_id(browser, "pg-speech-curl").text
    assert "Authorization" not in command  # no key is needed, and none is sent
    run_curl(command, tmp_path)
    assert (tmp_path / "speech.wav").read_bytes() == audio
    screenshot(browser, "playground-speech")


def test_a_transcription_of_an_uploaded_file(
    browser: Any, open_gateway: tuple[FakeOpenAI, GatewayServer], tmp_path: Path
) -> None:
    fake, gw = open_gateway
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav(0.2))
    open_playground(browser, gw)
    tab(browser, "stt")
    wait(lambda: by_id(browser, "pg-stt-model").get_attribute("value") == "whisper", "the model list")
    by_id(browser, "pg-stt-file").send_keys(str(clip))
    assert send(browser, "stt") == "done"
    assert by_id(browser, "pg-stt-text").text == "transcript of clip.wav by whisper"
    upload = fake.last
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.files["file"]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    replayed = json.loads(run_curl(by_id(browser, "pg-stt-curl").text, tmp_path))
    assert replayed == {"text": "transcript of clip.wav by whisper"}
    assert fake.last.files["file"]["sha256"] == upload.files["file"]["sha256"]

    from selenium.webdriver.support.ui import Select

    Select(by_id(browser, "pg-stt-task")).select_by_value("translations")
    Select(by_id(browser, "pg-stt-format")).select_by_value("text")
    assert send(browser, "stt") == "done"
    assert fake.last.path == "/v1/audio/translations"
    assert by_id(browser, "pg-stt-text").text == "transcript of clip.wav by whisper"
    screenshot(browser, "playground-transcription")


def test_images_generated_and_edited_are_shown(
    browser: Any, open_gateway: tuple[FakeOpenAI, GatewayServer], tmp_path: Path
) -> None:
    fake, gw = open_gateway
    fake.image_b64 = base64.b64encode(png(3, 2)).decode()
    open_playground(browser, gw)
    wait(lambda: "models from /v1/models" in by_id(browser, "pg-key-status").text, "the model list")
    tab(browser, "images")
    fill(browser, "pg-images-prompt", "a red square")
    fill(browser, "pg-images-n", "2")
    assert send(browser, "images") == "done"
    # No model given: the page sends none, and the gateway picks the service's only one.
    assert '"model"' not in by_id(browser, "pg-images-curl").text
    assert fake.last.json == {
        "model": "painter",
        "prompt": "a red square",
        "size": "1024x1024",
        "n": 2,
        "response_format": "b64_json",
    }
    shown = by_id(browser, "pg-images-shown").find_elements("css selector", "img")
    assert len(shown) == 2
    widths = "return arguments[0].map((image) => image.naturalWidth)"
    wait(lambda: browser.execute_script(widths, shown) == [3, 3], "the images decoded")
    screenshot(browser, "playground-images")

    picture = tmp_path / "photo.png"
    picture.write_bytes(png(4, 4))
    tab(browser, "edit")
    by_id(browser, "pg-edit-image").send_keys(str(picture))
    fill(browser, "pg-edit-prompt", "make it blue")
    assert send(browser, "edit") == "done"
    edit = fake.last
    assert edit.path == "/v1/images/edits"
    assert edit.files["image"]["sha256"] == hashlib.sha256(picture.read_bytes()).hexdigest()
    assert edit.fields["prompt"] == "make it blue"
    image = by_id(browser, "pg-edit-shown").find_element("css selector", "img")
    wait(lambda: browser.execute_script("return arguments[0].naturalWidth", image) == 3, "the edited image")
    replayed = json.loads(run_curl(by_id(browser, "pg-edit-curl").text, tmp_path))
    assert replayed["data"][0]["b64_json"] == fake.image_b64
    assert fake.last.files["image"]["sha256"] == edit.files["image"]["sha256"]


def test_a_viewer_pastes_a_key_and_may_not_create_one(browser: Any, keyed: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = keyed
    store = gw.gateway.store
    assert store is not None
    _, secret = gw.bg.run(store.create_key("team-a", models=["ranker"]))
    open_playground(browser, gw, "watcher")
    assert not by_id(browser, "pg-create-key").is_displayed()
    auth = {"Authorization": f"Bearer {secret}"}
    # A key made in the store reaches the gateway within store.refresh_interval.
    wait(lambda: httpx2.get(gw.url + "/v1/models", headers=auth, timeout=10).status_code == 200, "the key honoured")
    by_id(browser, "pg-key").send_keys(secret)
    by_id(browser, "pg-key-form").submit()
    wait(lambda: "models from /v1/models" in by_id(browser, "pg-key-status").text, "the pasted key in use")
    assert by_id(browser, "pg-key-status").get_attribute("data-key") == "pasted"
    assert secret not in by_id(browser, "pg-key-status").text
    # A key restricted to one model: only its endpoint offers a name.
    tab(browser, "rerank")
    assert by_id(browser, "pg-rerank-model").get_attribute("value") == "ranker"
    assert by_id(browser, "pg-chat-model").get_attribute("value") == ""
    assert by_id(browser, "pg-chat-hint").get_attribute("textContent")
    fill(browser, "pg-rerank-query", QUERY)
    fill(browser, "pg-rerank-documents", "\n".join(DOCS))
    assert send(browser, "rerank") == "done"
    assert fake.last.json["model"] == "ranker"
    assert "'Authorization: Bearer " + secret[:4] in by_id(browser, "pg-rerank-curl").text

    from selenium.webdriver.support.ui import Select

    Select(by_id(browser, "lang")).select_by_value("zh")
    wait(lambda: by_id(browser, "pg-tab-chat").text == "对话", "the Chinese page")
    assert "粘贴的密钥" in by_id(browser, "pg-key-status").text
    screenshot(browser, "playground-zh")

    # Logging out forgets the key (without reloading the page).
    by_id(browser, "logout").click()
    wait(lambda: by_id(browser, "login-page").is_displayed(), "the login form")
    fill(browser, "username", "watcher")
    fill(browser, "password", PASSWORD)
    browser.find_element("css selector", "#login button[type=submit]").click()
    go_to(browser, "playground")
    wait(lambda: by_id(browser, "pg-key-status").get_attribute("data-key") == "missing", "no key any more")
    assert by_id(browser, "pg-rerank-out").get_attribute("textContent") == ""
