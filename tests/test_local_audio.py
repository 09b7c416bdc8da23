"""The local speech (piper) and transcription (Whisper tiny.en) servers, with the real models, as subprocesses."""

from __future__ import annotations

import concurrent.futures
import io
import itertools
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import openai
import pytest

from modelrouter.local.serving import EXIT_MISSING, INSTALL_HINT

from .local_servers import LocalServer, local_process, run_local

pytestmark = pytest.mark.timeout(180)

FOX = "the quick brown fox jumps over the lazy dog"
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
VOICES = ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"]
STORY = (
    "Once upon a time there was a small village by the sea. Every morning the fishermen went out in their boats. "
    "In the evening they came back with their nets full of fish. The children ran down to the harbour to meet them."
)


@pytest.fixture(scope="module")
def speech() -> Iterator[LocalServer]:
    with local_process("speech") as server:
        yield server


@pytest.fixture(scope="module")
def whisper() -> Iterator[str]:
    with local_process("transcribe") as server:
        yield server.url


def speak(url: str, text: str = FOX, **fields: object) -> httpx.Response:
    body = {"model": "tts-1", "input": text, "voice": "alloy", **fields}
    return httpx.post(url + "/v1/audio/speech", json=body, timeout=60)


def seconds(data: bytes, response_format: str) -> float:
    """Decoded duration of an answer (pcm: 24 kHz 16-bit mono by OpenAI's definition)."""
    if response_format == "pcm":
        return len(data) / 2 / 24_000
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.samples / frame.sample_rate for frame in container.decode(audio=0))


def transcribe(url: str, audio: bytes, path: str = "/v1/audio/transcriptions", **fields: str) -> httpx.Response:
    files = {"file": ("speech.wav", audio, "audio/wav")}
    return httpx.post(url + path, files=files, data=fields, timeout=60)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_models_list_the_ids(speech: LocalServer, whisper: str) -> None:
    assert [m["id"] for m in httpx.get(speech.url + "/v1/models").json()["data"]] == ["tts-local"]
    assert [m["id"] for m in httpx.get(whisper + "/v1/models").json()["data"]] == ["whisper-local"]


@pytest.mark.parametrize("response_format", list(CONTENT_TYPES))
def test_every_format_decodes_to_the_spoken_length(speech: LocalServer, response_format: str) -> None:
    reply = speak(speech.url, response_format=response_format)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == CONTENT_TYPES[response_format]
    # Nine words at a normal pace: about 2.5 s (a silent or truncated answer would be far off).
    assert 1.5 < seconds(reply.content, response_format) < 5.0


def test_mp3_is_the_default_and_wav_is_24_khz(speech: LocalServer) -> None:
    reply = httpx.post(speech.url + "/v1/audio/speech", json={"input": FOX, "voice": "nova"}, timeout=60)
    assert reply.headers["content-type"] == "audio/mpeg"
    with av.open(io.BytesIO(speak(speech.url, response_format="wav").content)) as container:
        stream = container.streams.audio[0]
        assert (stream.sample_rate, stream.codec_context.layout.nb_channels) == (24_000, 1)


def test_speed_scales_the_duration(speech: LocalServer) -> None:
    normal = seconds(speak(speech.url, STORY, response_format="wav").content, "wav")
    fast = seconds(speak(speech.url, STORY, response_format="wav", speed=2.0).content, "wav")
    slow = seconds(speak(speech.url, STORY, response_format="wav", speed=0.5).content, "wav")
    # piper's own timing varies a little between runs (its duration predictor samples noise): hence the margins.
    assert 0.4 < fast / normal < 0.6
    assert 1.7 < slow / normal < 2.3


def test_every_voice_name_speaks(speech: LocalServer) -> None:
    for voice in [*VOICES, "marin", "someone-else"]:
        reply = speak(speech.url, "hello", voice=voice, response_format="pcm")
        assert reply.status_code == 200, (voice, reply.text)
        assert seconds(reply.content, "pcm") > 0.2


def test_line_breaks_make_one_utterance(speech: LocalServer) -> None:
    # Were they passed on, piper would speak three utterances and this answer (and the next ones) would be out of
    # step with their requests.
    several = speak(speech.url, "first line here\nsecond line here\r\nthird\x00 line\u2028here", response_format="pcm")
    one = speak(speech.url, "first line here", response_format="pcm")
    assert seconds(several.content, "pcm") > 2 * seconds(one.content, "pcm")
    again = speak(speech.url, "first line here", response_format="pcm")
    assert abs(seconds(again.content, "pcm") - seconds(one.content, "pcm")) < 0.5


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": " \n\t "}, "input"),
        ({"input": "..."}, "input"),
        ({"input": 42}, "input"),
        ({"voice": "alloy"}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"input": "hi", "response_format": "ogg"}, "response_format"),
        ({"input": "hi", "speed": 0.2}, "speed"),
        ({"input": "hi", "speed": 4.5}, "speed"),
        ({"input": "hi", "speed": "fast"}, "speed"),
        ({"input": "hi", "speed": True}, "speed"),
        ({"input": "hi", "voice": 7}, "voice"),
        ({"input": "hi", "stream_format": "sse"}, "stream_format"),
    ],
)
def test_bad_speech_parameters_are_400_naming_them(speech: LocalServer, body: dict[str, object], param: str) -> None:
    reply = httpx.post(speech.url + "/v1/audio/speech", json=body, timeout=30)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error


def test_speech_with_the_openai_sdk(speech: LocalServer) -> None:
    client = openai.OpenAI(base_url=speech.url + "/v1", api_key="x", max_retries=0)
    answer = client.audio.speech.create(model="tts-1", voice="onyx", input=FOX, response_format="flac", speed=1.5)
    assert 1.0 < seconds(answer.content, "flac") < 3.5


def test_a_killed_piper_is_started_again(speech: LocalServer) -> None:
    (before,) = children(speech.pid)
    os.kill(before, signal.SIGKILL)
    time.sleep(0.2)
    reply = speak(speech.url, response_format="wav")
    assert reply.status_code == 200, reply.text
    assert children(speech.pid) != [before]


def test_piper_dying_mid_request_is_500_and_the_next_request_works(speech: LocalServer) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        long = pool.submit(speak, speech.url, STORY * 15, response_format="pcm")  # minutes of speech: seconds of work
        time.sleep(1.5)
        (piper,) = children(speech.pid)
        os.kill(piper, signal.SIGKILL)
        reply = long.result(timeout=60)
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "tts_failed")
    assert "piper exited" in error["message"]
    assert speak(speech.url, response_format="wav").status_code == 200


@pytest.mark.timeout(120)
def test_a_hung_piper_is_503_and_the_next_request_works() -> None:
    with local_process("speech", "--timeout", "2") as server:
        (piper,) = children(server.pid)
        os.kill(piper, signal.SIGSTOP)  # alive but answering nothing, as a wedged process would be
        started = time.monotonic()
        hung = speak(server.url, "hello there", response_format="wav")
        assert hung.status_code == 503
        assert hung.json()["error"]["type"] == "overloaded_error"
        assert "did not answer" in hung.json()["error"]["message"]
        assert time.monotonic() - started < 10
        assert speak(server.url, "hello there", response_format="wav").status_code == 200
        (current,) = children(server.pid)
        assert current != piper
        command = Path(f"/proc/{current}/cmdline").read_text().split("\0")
        workdir = Path(command[command.index("--output-dir") + 1])
        assert workdir.is_dir()
    # SIGTERM ends the server cleanly: piper ends with it, and its working directory goes too.
    assert server.proc is not None
    assert server.proc.returncode == 0
    assert not Path(f"/proc/{current}").exists()
    assert not workdir.exists()


def test_the_spoken_fox_comes_back_with_the_openai_sdk(speech: LocalServer, whisper: str) -> None:
    audio = speak(speech.url, FOX, response_format="mp3").content
    client = openai.OpenAI(base_url=whisper + "/v1", api_key="x", max_retries=0)
    text = client.audio.transcriptions.create(model="whisper-1", file=("fox.mp3", audio)).text
    heard = set(re.findall(r"[a-z]+", text.lower()))
    assert len(heard & set(FOX.split())) >= 6, text


@pytest.fixture(scope="module")
def story(speech: LocalServer) -> bytes:
    return speak(speech.url, STORY, response_format="wav").content


def test_text_is_plain_text(whisper: str, story: bytes) -> None:
    reply = transcribe(whisper, story, response_format="text")
    assert reply.headers["content-type"].startswith("text/plain")
    assert "fishermen" in reply.text.lower() or "village" in reply.text.lower()


def _times(cue_times: list[tuple[str, str]], separator: str) -> list[tuple[float, float]]:
    def parse(value: str) -> float:
        hours, minutes, rest = value.split(":")
        secs, millis = rest.split(separator)
        return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000

    return [(parse(a), parse(b)) for a, b in cue_times]


def _increasing(spans: list[tuple[float, float]], total: float) -> None:
    assert spans
    for (start, end), (next_start, _) in zip(spans, [*spans[1:], (total, total)], strict=True):
        assert start < end <= next_start + 0.01
    assert spans[-1][1] <= total + 0.5


def test_srt_and_vtt_parse(whisper: str, story: bytes) -> None:
    total = seconds(story, "wav")
    srt = transcribe(whisper, story, response_format="srt")
    assert srt.status_code == 200
    blocks = srt.text.strip().split("\n\n")
    cues = [re.fullmatch(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)", b, re.S) for b in blocks]
    assert all(cues), srt.text
    assert [int(c[1]) for c in cues if c] == list(range(1, len(cues) + 1))
    _increasing(_times([(c[2], c[3]) for c in cues if c], ","), total)

    vtt = transcribe(whisper, story, response_format="vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    head, *blocks = vtt.text.strip().split("\n\n")
    assert head == "WEBVTT"
    cues = [re.fullmatch(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)", b, re.S) for b in blocks]
    assert all(cues), vtt.text
    _increasing(_times([(c[1], c[2]) for c in cues if c], "."), total)


def test_verbose_json_has_segments_and_words(whisper: str, story: bytes) -> None:
    reply = transcribe(whisper, story, response_format="verbose_json", **{"timestamp_granularities[]": "word"})
    body = reply.json()
    assert (body["task"], body["language"]) == ("transcribe", "english")
    assert abs(body["duration"] - seconds(story, "wav")) < 0.1
    keys = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio"}
    assert all(keys | {"no_speech_prob"} <= set(s) for s in body["segments"])
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))
    _increasing([(s["start"], s["end"]) for s in body["segments"]], body["duration"])
    assert body["text"] == "".join(s["text"] for s in body["segments"]).strip()
    words = body["words"]
    assert len(words) >= 30
    assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(words))


def test_translation_of_english_is_its_transcription(speech: LocalServer, whisper: str) -> None:
    audio = speak(speech.url, FOX, response_format="wav").content
    reply = transcribe(whisper, audio, "/v1/audio/translations", response_format="verbose_json", prompt="Fox.")
    assert reply.json()["task"] == "translate"
    assert "fox" in reply.json()["text"].lower()
    assert transcribe(whisper, audio, language="en", temperature="0.2").status_code == 200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"language": "fr"}, "language"),
        ({"response_format": "xml"}, "response_format"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": "1.5"}, "temperature"),
        ({"timestamp_granularities[]": "sentence"}, "timestamp_granularities"),
    ],
)
def test_bad_transcription_parameters_are_400(whisper: str, fields: dict[str, str], param: str) -> None:
    reply = transcribe(whisper, b"RIFF....not really", **fields)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param


def test_the_language_error_says_the_model_is_english_only(whisper: str) -> None:
    message = transcribe(whisper, b"x", language="de").json()["error"]["message"]
    assert "English-only" in message


@pytest.mark.parametrize("upload", [b"this is not audio at all", b"\x00" * 2048, json.dumps({"a": 1}).encode()])
def test_undecodable_audio_is_400_naming_file(whisper: str, upload: bytes) -> None:
    reply = transcribe(whisper, upload)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "file"


def test_a_form_without_a_file_is_400(whisper: str) -> None:
    reply = httpx.post(whisper + "/v1/audio/transcriptions", files={"model": (None, "whisper-1")}, timeout=30)
    assert (reply.status_code, reply.json()["error"]["param"]) == (400, "file")


@pytest.mark.parametrize(("module", "flag"), [("speech", "--voice-package"), ("transcribe", "--model-package")])
def test_a_missing_model_package_exits_naming_the_extra(module: str, flag: str) -> None:
    done = run_local(module, flag, "no_such_model_package")
    assert done.returncode == EXIT_MISSING, done.stderr
    assert "no_such_model_package" in done.stderr
    assert INSTALL_HINT in done.stderr


def test_timestamps_past_the_end_of_the_audio_are_clamped_to_it() -> None:
    """Whisper's last timestamp may pass the audio's end by up to a 20 ms step (CI saw 10.72 s for 10.68 s of
    audio): subtitles and words never end after the media."""
    from faster_whisper.transcribe import Segment, Word

    from modelrouter.local.transcribe import _within

    word = Word(start=10.5, end=10.72, word=" dog", probability=0.9)
    segment = Segment(
        id=1, seek=0, start=8.36, end=10.72, text=" dog", tokens=[1], avg_logprob=-0.1, compression_ratio=1.0,
        no_speech_prob=0.0, words=[word], temperature=0.0,
    )  # fmt: skip
    clamped = _within(segment, 10.681)
    assert (clamped.start, clamped.end) == (8.36, 10.681)
    assert (clamped.words[0].start, clamped.words[0].end) == (10.5, 10.681)
