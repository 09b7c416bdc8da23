"""Audio conversion for the local speech server, with PyAV (FFmpeg's libraries in a wheel; LGPL, loaded as a library).

piper writes 22.05 kHz 16-bit mono WAV. OpenAI's speech endpoint answers 24 kHz in every format, and its ``pcm`` is
documented as raw 24 kHz 16-bit little-endian mono — a client plays those bytes with exactly those parameters, so
every format is resampled to 24 kHz here rather than passed on at piper's rate.

Which formats need an encoder: ``wav`` and ``pcm`` need none (the standard library writes them); ``mp3``
(libmp3lame), ``opus`` (libopus, in an Ogg container), ``aac`` (FFmpeg's own, ADTS stream) and ``flac`` need the
encoder inside the PyAV wheel. The PyPI wheels carry all four; a PyAV built against a system FFmpeg may not, so
``available_formats()`` asks at start and a request for a format without its encoder gets a 400 that names it
and suggests ``wav``.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = ["FORMATS", "OUTPUT_RATE", "Format", "available_formats", "encode", "read_wav"]

OUTPUT_RATE = 24_000


@dataclass(frozen=True, slots=True)
class Format:
    content_type: str
    container: str | None  # FFmpeg muxer; None: written without PyAV
    codec: str | None
    bit_rate: int | None = None


# Bit rates suit one voice: 64 kb/s mono is clear speech in every lossy codec here (OpenAI's files are similar).
FORMATS: dict[str, Format] = {
    "mp3": Format("audio/mpeg", "mp3", "libmp3lame", 64_000),
    "opus": Format("audio/ogg", "ogg", "libopus", 48_000),
    "aac": Format("audio/aac", "adts", "aac", 64_000),
    "flac": Format("audio/flac", "flac", "flac"),
    "wav": Format("audio/wav", None, None),
    "pcm": Format("audio/pcm", None, None),
}


def available_formats() -> dict[str, str | None]:
    """Each format's missing piece (a message), or None when this PyAV can write it."""
    import av

    missing: dict[str, str | None] = {}
    for name, fmt in FORMATS.items():
        missing[name] = None
        if fmt.codec is None or fmt.container is None:
            continue
        try:
            av.codec.Codec(fmt.codec, "w")
        except Exception:
            missing[name] = f"the {fmt.codec} encoder is not in this PyAV build"
            continue
        if fmt.container not in av.formats_available:
            missing[name] = f"the {fmt.container} muxer is not in this PyAV build"
    return missing


def read_wav(data: bytes) -> tuple[Any, int]:
    """(int16 samples as a numpy array, sample rate) of a 16-bit mono WAV, as piper writes it."""
    import numpy as np

    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"unexpected WAV: {wav.getsampwidth() * 8}-bit, {wav.getnchannels()} channels")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), wav.getframerate()


def _frame(samples: Any, rate: int) -> Any:
    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    return frame


def _tempo(samples: Any, rate: int, speed: float) -> list[Any]:
    """Frames of ``samples`` played ``speed`` times faster at the same pitch (FFmpeg's ``atempo``, WSOLA).

    One atempo stage takes 0.5 to 100; below 0.5 two equal stages multiply to the factor (0.25 = 0.5 * 0.5)."""
    import av

    if speed == 1.0:
        return [_frame(samples, rate)]
    graph = av.filter.Graph()
    nodes = [graph.add_abuffer(format="s16", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))]
    stages = [speed**0.5] * 2 if speed < 0.5 else [speed]
    nodes += [graph.add("atempo", f"{stage:.6f}") for stage in stages]
    nodes.append(graph.add("abuffersink"))
    graph.link_nodes(*nodes).configure()
    graph.push(_frame(samples, rate))
    graph.push(None)
    frames: list[Any] = []
    while True:
        try:
            frames.append(graph.pull())
        except (av.BlockingIOError, av.EOFError):
            return frames


def _resampled(frames: list[Any], fmt: str, frame_size: int | None = None) -> list[Any]:
    import av

    resampler = av.AudioResampler(format=fmt, layout="mono", rate=OUTPUT_RATE, frame_size=frame_size)
    out: list[Any] = []
    for frame in frames:
        frame.pts = None  # the resampler keeps its own clock; atempo's pts would be on the input's time base
        out += resampler.resample(frame)
    out += resampler.resample(None)
    return out


def encode(samples: Any, rate: int, response_format: str, speed: float = 1.0) -> bytes:
    """``samples`` (int16 mono at ``rate``) at ``speed``, as ``response_format`` at 24 kHz."""
    import av

    fmt = FORMATS[response_format]
    frames = _tempo(samples, rate, speed)
    if fmt.codec is None or fmt.container is None:
        pcm = b"".join(bytes(frame.planes[0])[: frame.samples * 2] for frame in _resampled(frames, "s16"))
        if response_format == "pcm":
            return pcm
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(OUTPUT_RATE)
            wav.writeframes(pcm)
        return buf.getvalue()
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt.container) as container:
        stream: Any = container.add_stream(fmt.codec, rate=OUTPUT_RATE, layout="mono")  # an AudioStream
        if fmt.bit_rate is not None:
            stream.codec_context.bit_rate = fmt.bit_rate
        stream.codec_context.open()  # opened now, so its frame size (fixed for mp3, aac and opus) is known
        sample_format = stream.codec_context.format.name
        for frame in _resampled(frames, sample_format, stream.codec_context.frame_size or None):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
