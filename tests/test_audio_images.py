"""Audio (speech, transcriptions, translations) and images (generations, edits) through the gateway, with the
openai SDK as the client: binary streaming, multipart forwarding (spooled uploads), limits and errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest
from aiohttp import BodyPartReader, web

from .fakes import FakeOpenAI, Recorded, speech_bytes
from .servers import BackgroundLoop, GatewayServer, UpstreamServer

# --------------------------------------------------------------------------------------------------------------
# Fakes of our own: a speech server that holds back all but its first chunk until told to go on, and an
# upstream that records every multipart part in order (FakeOpenAI keeps one value per field name).


@dataclass
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


class FormFake(FakeOpenAI):
    def __init__(self, name: str = "a") -> None:
        super().__init__(name)
        self.forms: list[list[FormPart]] = []

    async def _read_form(self, request: web.Request) -> Recorded:
        rec = Recorded(request.path, dict(request.headers), b"")
        parts: list[FormPart] = []
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            parts.append(FormPart(part.name or "", part.filename, part.headers.get("Content-Type"), bytes(data)))
            if part.filename is not None:
                rec.files[part.name or ""] = {
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            else:
                rec.fields[part.name or ""] = data.decode()
        self.forms.append(parts)
        self.requests.append(rec)
        return rec

    def values(self, name: str) -> list[str]:
        """Every value the last form had for a text field, in order."""
        return [p.data.decode() for p in self.forms[-1] if p.name == name and p.filename is None]


class GatedSpeechFake(FakeOpenAI):
    """Sends its first chunk, then waits (up to 10 s) for ``go`` before sending the rest."""

    def __init__(self) -> None:
        super().__init__("tts")
        self.go = threading.Event()
        self.waited_for_client = False
        self.finished = False

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        chunks = speech_bytes(rec.json["input"])
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        await resp.prepare(request)
        await resp.write(chunks[0])
        for _ in range(1000):
            if self.go.is_set():
                self.waited_for_client = True
                break
            await asyncio.sleep(0.01)
        for chunk in chunks[1:]:
            await resp.write(chunk)
            await asyncio.sleep(self.stream_gap)
        await resp.write_eof()
        self.finished = True
        return resp


@pytest.fixture
def serve(bg: BackgroundLoop) -> Iterator[Callable[[FakeOpenAI], str]]:
    """serve(fake) -> base URL of a real HTTP server running fake.app(); stopped after the test."""
    started: list[UpstreamServer] = []

    def start(fake: FakeOpenAI) -> str:
        server = UpstreamServer(bg, fake.app()).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


def sdk(url: str, *, strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, _strict_response_validation=strict)


def service(url: str, name: str, upstream_model: str) -> dict[str, Any]:
    return {"instances": [{"name": name, "base_url": url, "upstream_model": upstream_model}]}


@pytest.fixture
def stt(
    serve: Callable[[FakeOpenAI], str], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> tuple[FormFake, str, GatewayServer]:
    """A form-recording upstream for stt and image_edit, its URL, and a gateway in front of it."""
    fake = FormFake("stt")
    url = serve(fake)
    gw = start_gateway(
        {
            "services": {
                "stt": service(url, "whisper", "whisper-large-v3"),
                "image_edit": service(url, "editor", "up-editor"),
            }
        }
    )
    return fake, url, gw


AUDIO = bytes(range(256)) * 64 + b"\x00\r\n--not-a-boundary\r\n"  # binary, with multipart-looking bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# /v1/audio/speech


@pytest.mark.parametrize(("fmt", "ctype"), [("wav", "audio/wav"), ("mp3", "audio/mpeg"), ("opus", "audio/ogg")])
def test_speech_bytes_and_content_type(one_of_each: tuple[FakeOpenAI, GatewayServer], fmt: str, ctype: str) -> None:
    fake, gw = one_of_each
    text = f"Hello in {fmt}"
    with sdk(gw.url).audio.speech.with_streaming_response.create(
        model="m-tts",
        voice="alloy",
        input=text,
        response_format=fmt,
        speed=1.25,  # type: ignore[arg-type]
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == ctype
        audio = resp.read()
    assert audio == b"".join(speech_bytes(text))
    sent = fake.last.json
    assert sent == {"model": "up-tts", "voice": "alloy", "input": text, "response_format": fmt, "speed": 1.25}


def test_speech_is_streamed(
    serve: Callable[[FakeOpenAI], str], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> None:
    fake = GatedSpeechFake()
    fake.stream_gap = 0.02
    gw = start_gateway({"services": {"tts": service(serve(fake), "kokoro", "kokoro-82m")}})
    text = "streamed speech"
    got: list[bytes] = []
    with sdk(gw.url).audio.speech.with_streaming_response.create(
        model="kokoro", voice="af_sky", input=text, response_format="wav"
    ) as resp:
        assert resp.headers["content-type"] == "audio/wav"
        for chunk in resp.iter_bytes():
            if not got:
                # The upstream has sent only its first chunk and is waiting for us: nothing was buffered.
                assert not fake.finished
                fake.go.set()
            got.append(chunk)
    assert fake.waited_for_client, "the first audio bytes only reached the client after the upstream finished"
    assert fake.finished
    assert b"".join(got) == b"".join(speech_bytes(text))
    assert fake.last.json["model"] == "kokoro-82m"


def test_speech_missing_input_is_400(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw.url).post("/audio/speech", body={"model": "m-tts", "voice": "alloy"}, cast_to=bytes)
    assert info.value.param == "input"
    assert fake.requests == []


def test_speech_upstream_error_is_an_openai_error(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    fake.fail(
        "/v1/audio/speech",
        400,
        {
            "error": {
                "message": "unknown voice 'zz'",
                "type": "invalid_request_error",
                "param": "voice",
                "code": "invalid_voice",
            }
        },
    )
    with (
        pytest.raises(openai.BadRequestError) as info,
        sdk(gw.url).audio.speech.with_streaming_response.create(model="m-tts", voice="zz", input="hi"),
    ):
        pass
    assert info.value.param == "voice"
    assert info.value.code == "invalid_voice"
    assert "unknown voice" in info.value.message


# --------------------------------------------------------------------------------------------------------------
# /v1/audio/transcriptions and /v1/audio/translations (multipart)


def test_transcription_forwards_every_field_and_the_file(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, url, gw = stt

    def call(base: str, model: str) -> Any:
        return sdk(base).audio.transcriptions.create(
            model=model,
            file=("réunion 1.wav", AUDIO, "audio/wav"),
            language="fr",
            prompt='Bonjour, "ça va"?\nOui.',
            temperature=0.2,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )

    call(url, "whisper-large-v3")  # straight to the upstream, to see what the SDK sends
    sdk_parts = fake.forms[-1]
    out = call(gw.url, "whisper")
    assert out.text == "transcript of réunion 1.wav by whisper-large-v3"
    assert out.language == "english"
    assert out.duration == 1.0

    rec = fake.last
    assert rec.path == "/v1/audio/transcriptions"
    assert rec.fields["model"] == "whisper-large-v3"
    assert rec.fields["language"] == "fr"
    assert rec.fields["prompt"] == 'Bonjour, "ça va"?\nOui.'
    assert float(rec.fields["temperature"]) == 0.2
    assert rec.fields["response_format"] == "verbose_json"
    assert fake.values("timestamp_granularities[]") == ["word", "segment"]
    assert rec.files["file"] == {
        "filename": "réunion 1.wav",
        "content_type": "audio/wav",
        "size": len(AUDIO),
        "sha256": sha(AUDIO),
    }
    # Exactly the parts the SDK sends, in its order, only model rewritten.
    assert fake.forms[-1] == sdk_parts
    assert {p.name for p in sdk_parts} == {
        "model",
        "file",
        "language",
        "prompt",
        "temperature",
        "response_format",
        "timestamp_granularities[]",
    }


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # translations are deprecated in the SDK
def test_translation_forwards_fields_and_file(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    out = sdk(gw.url).audio.translations.create(
        model="whisper",
        file=("clip.mp3", AUDIO, "audio/mpeg"),
        prompt="context",
        temperature=0.5,
    )
    assert out.text == "transcript of clip.mp3 by whisper-large-v3"
    rec = fake.last
    assert rec.path == "/v1/audio/translations"
    assert rec.fields["model"] == "whisper-large-v3"
    assert rec.fields["prompt"] == "context"
    assert float(rec.fields["temperature"]) == 0.5
    assert rec.files["file"]["filename"] == "clip.mp3"
    assert rec.files["file"]["content_type"] == "audio/mpeg"
    assert rec.files["file"]["sha256"] == sha(AUDIO)


def test_upstream_gets_a_content_length_not_chunks(stt: tuple[FormFake, str, GatewayServer]) -> None:
    # Several speech servers reject chunked uploads.
    fake, _url, gw = stt
    sdk(gw.url).audio.transcriptions.create(model="whisper", file=("a.wav", AUDIO, "audio/wav"))
    headers = {k.lower(): v for k, v in fake.last.headers.items()}
    assert "chunked" not in headers.get("transfer-encoding", "")
    assert int(headers["content-length"]) > len(AUDIO)
    assert headers["content-type"].startswith("multipart/form-data; boundary=")


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json", "json"])
def test_response_formats_pass_through(stt: tuple[FormFake, str, GatewayServer], endpoint: str, fmt: str) -> None:
    _fake, url, gw = stt

    def call(base: str, model: str) -> Any:
        resource = getattr(sdk(base).audio, endpoint)
        return resource.with_raw_response.create(
            model=model, file=("talk.wav", AUDIO, "audio/wav"), response_format=fmt
        )

    via = call(gw.url, "whisper")
    direct = call(url, "whisper-large-v3")  # what the upstream itself answers
    assert via.status_code == direct.status_code == 200
    assert via.headers["content-type"] == direct.headers["content-type"]
    assert via.http_response.content == direct.http_response.content
    if fmt in ("text", "srt", "vtt"):
        assert not via.headers["content-type"].startswith("application/json")
        text = via.parse()
        assert isinstance(text, str)
        assert "transcript of talk.wav by whisper-large-v3" in text
        if fmt == "vtt":
            assert text.startswith("WEBVTT")
        if fmt == "srt":
            assert text.startswith("1\n00:00:00,000 --> ")
    else:
        assert via.headers["content-type"].startswith("application/json")
        assert via.parse().text == "transcript of talk.wav by whisper-large-v3"


def test_transcription_upstream_error_is_passed_on(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    fake.fail("/v1/audio/transcriptions", 422, {"detail": "audio file could not be decoded"})
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk(gw.url).audio.transcriptions.create(model="whisper", file=("bad.wav", b"RIFF", "audio/wav"))
    assert "audio file could not be decoded" in info.value.message
    assert fake.last.files["file"]["sha256"] == sha(b"RIFF")


def test_large_upload_is_spooled_and_forwarded_intact(
    serve: Callable[[FakeOpenAI], str], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> None:
    fake = FormFake("stt")
    gw = start_gateway(
        {"server": {"spool_memory_bytes": 64 * 1024}, "services": {"stt": service(serve(fake), "whisper", "whisper-1")}}
    )
    audio = random.Random(7).randbytes(5 * 1024 * 1024 + 3)
    out = sdk(gw.url).audio.transcriptions.create(
        model="whisper", file=("long.flac", audio, "audio/flac"), language="en"
    )
    assert out.text == "transcript of long.flac by whisper-1"
    rec = fake.last
    assert rec.files["file"] == {
        "filename": "long.flac",
        "content_type": "audio/flac",
        "size": len(audio),
        "sha256": sha(audio),
    }
    assert rec.fields == {"model": "whisper-1", "language": "en"}


def test_upload_over_the_limit_is_413(
    serve: Callable[[FakeOpenAI], str], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> None:
    fake = FormFake("stt")
    gw = start_gateway(
        {
            "server": {"max_upload_bytes": 100_000, "spool_memory_bytes": 10_000},
            "services": {"stt": service(serve(fake), "whisper", "whisper-1")},
        }
    )
    client = sdk(gw.url)
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="whisper", file=("big.wav", b"\x01" * 300_000, "audio/wav"))
    assert info.value.status_code == 413
    assert info.value.code == "request_too_large"
    # Without a Content-Length (chunked upload) the limit is enforced while reading.
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def chunked() -> Iterator[bytes]:
        yield head
        for _ in range(30):
            yield b"\x02" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = httpx2.post(
        gw.url + "/v1/audio/transcriptions",
        content=chunked(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=10,
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"
    # Just under the limit is fine.
    out = client.audio.transcriptions.create(model="whisper", file=("ok.wav", b"\x03" * 90_000, "audio/wav"))
    assert out.text == "transcript of ok.wav by whisper-1"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("path", ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/images/edits"])
def test_json_body_on_multipart_endpoint_is_415(stt: tuple[FormFake, str, GatewayServer], path: str) -> None:
    fake, _url, gw = stt
    with pytest.raises(openai.APIStatusError) as info:
        sdk(gw.url).post(
            path[3:], body={"model": "whisper", "file": "abc", "image": "abc", "prompt": "p"}, cast_to=object
        )
    assert info.value.status_code == 415
    assert info.value.code == "unsupported_media_type"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("files", "param"),
    [
        ({"model": (None, "whisper"), "language": (None, "en")}, "file"),
        ({"model": (None, "whisper"), "file": (None, "not a file, a text field")}, "file"),
        ({"file": ("a.wav", AUDIO, "audio/wav"), "language": (None, "en")}, "model"),
    ],
    ids=["no-file", "file-as-text-field", "no-model"],
)
def test_missing_multipart_parts_are_400(
    stt: tuple[FormFake, str, GatewayServer], files: dict[str, Any], param: str
) -> None:
    fake, _url, gw = stt
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        resp = httpx2.post(gw.url + path, files=files, timeout=10)
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["param"] == param
        assert err["type"] == "invalid_request_error"
    assert fake.requests == []


def test_malformed_multipart_is_400(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    resp = httpx2.post(
        gw.url + "/v1/audio/transcriptions",
        content=b"--zzz\r\nnot a part at all",
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


@pytest.mark.parametrize(
    "tail",
    [b"", b"\r\n", b"\r\n--b0undary", b"\r\n--b0undary-", b"\r\n--b0undary\r\n"],
    ids=["cut-in-the-file", "cut-before-boundary", "boundary-without-dashes", "one-dash", "next-part-never-came"],
)
def test_multipart_without_its_closing_boundary_is_400(stt: tuple[FormFake, str, GatewayServer], tail: bytes) -> None:
    # A client that stopped mid-upload (or a truncating proxy) must not have the part it sent forwarded as a
    # complete file.
    fake, _url, gw = stt
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + AUDIO[:1000] + tail
    )
    resp = httpx2.post(
        gw.url + "/v1/audio/transcriptions",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
        timeout=10,
    )
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert (err["type"], err["code"]) == ("invalid_request_error", "incomplete_multipart")
    assert fake.requests == []
    # The same body with its closing boundary goes through.
    resp = httpx2.post(
        gw.url + "/v1/audio/transcriptions",
        content=body.removesuffix(tail) + b"\r\n--b0undary--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


# --------------------------------------------------------------------------------------------------------------
# /v1/images/generations and /v1/images/edits


def test_image_generation_with_model(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    out = sdk(gw.url).images.generate(
        model="m-image_generation", prompt="a red fox", n=2, size="256x256", response_format="b64_json", user="u-7"
    )
    assert [(d.b64_json, d.revised_prompt) for d in out.data or []] == [("aW1hZ2U=", "a red fox")] * 2
    assert fake.last.path == "/v1/images/generations"
    assert fake.last.json == {
        "model": "up-image_generation",
        "prompt": "a red fox",
        "n": 2,
        "size": "256x256",
        "response_format": "b64_json",
        "user": "u-7",
    }


def test_image_generation_without_model_uses_the_only_one(one_of_each: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = one_of_each
    raw = sdk(gw.url).images.with_raw_response.generate(prompt="a blue whale")
    out = raw.parse()
    assert out.data is not None
    assert out.data[0].b64_json == "aW1hZ2U="
    assert fake.last.json == {"model": "up-image_generation", "prompt": "a blue whale"}
    # The JSON answer is the upstream's, passed through.
    assert raw.headers["content-type"].startswith("application/json")
    body = raw.http_response.json()
    assert body["data"] == [{"b64_json": "aW1hZ2U=", "revised_prompt": "a blue whale"}]


def test_image_generation_without_model_needs_a_single_model(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> None:
    fake, url = start_upstream("img")
    gw = start_gateway(
        {
            "services": {
                "image_generation": {
                    "instances": [
                        {"name": "sdxl", "base_url": url},
                        {"name": "flux", "base_url": url},
                    ]
                }
            }
        }
    )
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw.url).images.generate(prompt="a cat")
    assert info.value.param == "model"
    assert fake.requests == []
    out = sdk(gw.url).images.generate(prompt="a cat", model="flux")
    assert out.data is not None
    assert fake.last.json["model"] == "flux"


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200)) * 10


def test_image_edit_forwards_fields_and_files(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    mask = PNG[::-1]
    raw = sdk(gw.url).images.with_raw_response.edit(
        model="editor",
        image=("cat.png", PNG, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="add a hat",
        n=1,
        size="512x512",
        response_format="b64_json",
    )
    out = raw.parse()
    assert out.data is not None
    assert [(d.b64_json, d.revised_prompt) for d in out.data] == [("ZWRpdGVk", "add a hat")]
    assert raw.headers["content-type"].startswith("application/json")

    rec = fake.last
    assert rec.path == "/v1/images/edits"
    assert rec.fields == {
        "model": "up-editor",
        "prompt": "add a hat",
        "n": "1",
        "size": "512x512",
        "response_format": "b64_json",
    }
    assert rec.files["image"] == {
        "filename": "cat.png",
        "content_type": "image/png",
        "size": len(PNG),
        "sha256": sha(PNG),
    }
    assert rec.files["mask"] == {
        "filename": "mask.png",
        "content_type": "image/png",
        "size": len(mask),
        "sha256": sha(mask),
    }


def test_image_edit_with_several_images(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    images = [("a.png", PNG, "image/png"), ("b.webp", PNG[:500], "image/webp")]
    out = sdk(gw.url).images.edit(model="editor", image=images, prompt="merge")
    assert out.data is not None
    got = [(p.filename, p.content_type, p.data) for p in fake.forms[-1] if p.filename is not None]
    assert got == [(name, ctype, data) for name, data, ctype in images]
    assert fake.last.fields["model"] == "up-editor"


def test_image_edit_without_model_uses_the_only_one(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    out = sdk(gw.url).images.edit(image=("cat.png", PNG, "image/png"), prompt="make it blue")
    assert out.data is not None
    assert out.data[0].revised_prompt == "make it blue"
    assert fake.last.files["image"]["sha256"] == sha(PNG)
    # The upstream is told which model, as for JSON requests (images/generations without a model).
    assert fake.last.fields.get("model") == "up-editor"


def test_image_edit_missing_parts_are_400(stt: tuple[FormFake, str, GatewayServer]) -> None:
    fake, _url, gw = stt
    url = gw.url + "/v1/images/edits"
    resp = httpx2.post(url, files={"model": (None, "editor"), "prompt": (None, "p")}, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "image"
    resp = httpx2.post(url, files={"model": (None, "editor"), "image": ("a.png", PNG, "image/png")}, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "prompt"
    assert fake.requests == []
