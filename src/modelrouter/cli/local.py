"""``modelrouter local``: start the local model pack (docs/local.md), wait for it, then run the gateway on it.

The models start first so the gateway's first health probes find them up; each one's URL is put in the
environment (``MODELROUTER_LOCAL_<KIND>_URL``) before the config is read, so the embedded default config - or
any config that uses those variables - routes to whichever ports were free. With ``--models-only`` the gateway
is not started (run it elsewhere with the same variables, or on the default ports).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from ..local.catalog import CATALOG, KINDS
from ..local.serving import INSTALL_HINT, require

__all__ = ["register"]

log = logging.getLogger("modelrouter.local")


def register(
    sub: Any, add_serve_arguments: Callable[[argparse.ArgumentParser], None], serve: Callable[[argparse.Namespace], int]
) -> None:
    parser = sub.add_parser(
        "local",
        help="run the local model pack (small real models, offline) and the gateway routed to it",
        description="Starts small real models on loopback (chat, embeddings, rerank, speech, transcription), "
        f"supervised, then the gateway. Needs {INSTALL_HINT}.",
    )
    add_serve_arguments(parser)
    parser.add_argument(
        "--models", default=",".join(KINDS), help=f"which to start, comma-separated (default: all of {','.join(KINDS)})"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per model (default 2)")
    parser.add_argument(
        "--ready-timeout", type=float, default=300, help="seconds to wait for the models before serving anyway"
    )
    parser.add_argument("--models-only", action="store_true", help="run the models, not the gateway")
    parser.add_argument("--list", action="store_true", help="list the pack's models and whether each is installed")
    parser.set_defaults(func=lambda args: _local(args, serve))


def _installed(modules: tuple[str, ...]) -> str:
    try:
        require(*modules)
    except Exception as exc:
        return f"missing ({exc})"
    return "installed"


def _local(args: argparse.Namespace, serve: Callable[[argparse.Namespace], int]) -> int:
    from ..local.supervisor import Child, Supervisor

    if args.list:
        for model in CATALOG:
            print(f"{model.kind:14} {model.served_id:24} {model.title}: {_installed(model.modules)}")
        return 0
    wanted = [k.strip() for k in args.models.split(",") if k.strip()]
    if unknown := [k for k in wanted if k not in KINDS]:
        choose = ", ".join(KINDS)
        print(f"modelrouter local: unknown model kind {', '.join(unknown)} (choose from {choose})", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    def said(child: Child) -> None:
        if child.state == "missing":
            log.warning("local %s not started: %s", child.model.kind, child.why)
        elif child.state == "starting" and child.restarts == 0:
            log.info("local %s: loading %s on %s", child.model.kind, child.model.title, child.url)

    supervisor = Supervisor([m for m in CATALOG if m.kind in wanted], threads=args.threads, on_change=said)
    began = time.monotonic()
    os.environ.update(supervisor.start())
    try:
        if not supervisor.wait_ready(args.ready_timeout):
            log.warning("local: not every model is ready after %.0f s; serving anyway", args.ready_timeout)
        ready = [c.model.kind for c in supervisor.children if c.state == "ready"]
        log.info("local: %s ready in %.1f s", ", ".join(ready) or "no model", time.monotonic() - began)
        if args.models_only:
            for child in supervisor.children:
                print(f"{child.model.url_variable}={child.url}  # {child.state}", flush=True)
            stops = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # taken by sigwait, not by the default handlers
            signal.sigwait(stops)
            return 0
        return serve(args)
    finally:
        supervisor.stop()
