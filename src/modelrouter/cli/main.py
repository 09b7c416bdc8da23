"""Command line: ``modelrouter serve``, ``check-config``, and the store commands ``store``, ``keys`` and ``admin``
(cli_store) and ``config`` (cli_config)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence

from .._version import __version__
from ..config.load import ConfigError, default_config_text, load_config, parse_config_text, read_config_text
from ..config.model import Config
from ..control.source import ConfigControl
from ..runtime.workers import FD_ENV
from . import admins, keys, local, store
from .config import register as register_config_commands

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    if args.import_ and args.config_source != "store":
        print(
            "modelrouter: --import needs --config-source store (in file mode the file is always read)", file=sys.stderr
        )
        return 2
    if args.import_ and args.config is None:
        print("modelrouter: --import needs --config FILE", file=sys.stderr)
        return 2
    source = args.config or "<embedded default>"
    try:
        text = default_config_text() if args.config is None else read_config_text(args.config)
        # In store mode a file may only say where the store is (and listen where): the store holds the services.
        config = parse_config_text(text, source, require_services=args.config_source == "file")
    except ConfigError as exc:
        print(f"modelrouter: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        config = config.model_copy(update={"store": config.store.model_copy(update={"data_dir": args.data_dir})})
    from ..app import create_app
    from ..runtime.server import run  # imports uvicorn: only the serve command needs it
    from ..store.migrate import run_apart

    run_apart()  # a long-running process: migrations that are due run in a child, Alembic never loads here

    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.log_level.lower() != "debug":
        # Alembic names each of its plugins at INFO on every start; the migrations it runs stay in the log.
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("modelrouter").info(
        "modelrouter %s on http://%s:%d (%s, %s mode)", __version__, host, port, source, args.config_source
    )
    if args.workers > 1 and FD_ENV not in os.environ:
        from ..runtime.promises import per_process_promises, workers_refusal
        from ..runtime.workers import supervise

        if promises := per_process_promises(config) or asyncio.run(_stored_promises(config, args.config_source)):
            print(f"modelrouter: {workers_refusal(args.workers, promises)}.", file=sys.stderr)
            return 2

        return supervise(_worker_argv(args), host=host, port=port, workers=args.workers)
    exchange = None
    sockets = None
    if FD_ENV in os.environ:  # a worker of `serve --workers N`: the supervisor's socket, a shared metrics directory
        from ..runtime.workers import INDEX_ENV, METRICS_DIR_ENV, MetricsExchange

        sockets = [socket.socket(fileno=int(os.environ[FD_ENV]))]
        exchange = MetricsExchange(os.environ[METRICS_DIR_ENV], int(os.environ[INDEX_ENV]))
    _tune_gc()
    app = create_app(
        config,
        control=lambda gateway: ConfigControl(gateway, args.config_source, text, source, import_text=args.import_),
        exchange=exchange,
        freeze_heap=True,
    )
    # In store mode the file is not watched: the store holds the config (SIGHUP checks the store instead).
    watched = args.config if args.config_source == "file" else None
    return run(app, host=host, port=port, config_path=watched, log_level=args.log_level, sockets=sockets)


async def _stored_promises(config: Config, mode: str) -> list[str]:
    """What the store adds to the per-process promises ``serve --workers`` refuses: its keys' quotas and limits,
    and in store mode the newest config version's. Nothing when there is no store yet, or a version that does not
    validate, or a store that cannot be opened (the workers then refuse or report it themselves)."""
    from ..control.source import parse_text
    from ..runtime.promises import per_process_promises
    from ..store import Store, StoreError

    if config.state.backend != "memory":
        return []
    try:
        opened = await Store.open(config.store, create=False)
    except StoreError:  # NoStoreError too: no store yet, no stored keys or versions
        return []
    async with opened as store:
        served = config
        latest = await store.latest_config_version() if mode == "store" else None
        if latest is not None:
            with contextlib.suppress(ConfigError):
                served = parse_text(latest.config, f"config version {latest.id}")
        return per_process_promises(served, await store.all_active_keys(), backend="memory")


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker: this one's options, without --workers."""
    argv = ["serve", "--config-source", args.config_source, "--log-level", args.log_level]
    for flag, value in (("--config", args.config), ("--host", args.host), ("--data-dir", args.data_dir)):
        if value is not None:
            argv += [flag, value]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    if args.import_:
        argv.append("--import")
    return argv


def _tune_gc() -> None:
    """A proxy allocates many short-lived objects per request and keeps a large, stable heap of modules and
    config. With CPython's default threshold (700) the collector ran every few requests and its older
    generations walked that whole heap; freezing the startup heap and collecting the young generation less
    often measured +10-15 % throughput on the benchmark. Done here, not in the app: the process is ours."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    instances = sum(len(s.instances) for s in config.services.values())
    print(
        f"{args.file}: ok ({len(config.services)} service(s), {instances} instance(s), {len(config.aliases)} alias(es))"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelrouter", description="An OpenAI-compatible AI model gateway.")
    parser.add_argument("--version", action="version", version=f"modelrouter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    local.register(sub, add_serve_arguments, _serve)  # local: the local model pack, then the gateway

    check = sub.add_parser("check-config", help="validate a config file; lists every problem by its path")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    store.register(sub)  # store init
    keys.register(sub)  # keys create | list | disable | enable | revoke | rotate | delete | hash
    admins.register(sub)  # admin create | reset-password | disable | enable | list
    register_config_commands(sub)  # config versions, show, export, diff, import, rollback
    return parser


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", metavar="FILE", help="YAML config (default: the embedded default config)")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--config-source",
        choices=["file", "store"],
        default="file",
        help="file (default): the config file is the truth, reloaded on change and recorded as versions; "
        "store: the file only seeds an empty store, which holds the config from then on (admin API edits, rollbacks)",
    )
    serve.add_argument(
        "--import",
        dest="import_",
        action="store_true",
        help="store mode: save the --config file as a new version and serve it",
    )
    serve.add_argument("--data-dir", metavar="DIR", help="the store's SQLite directory (overrides store.data_dir)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1); metrics are added up across them",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
