"""The process contract every local model server keeps, and the small HTTP layer they share.

Contract (the supervisor relies on it): ``python -m modelrouter.local.<name> --host H --port P [--threads T]``
listens at once; ``GET /health`` answers 503 ``{"status": "loading"}`` while the model loads and 200
``{"status": "ok"}`` when it is ready; ``GET /v1/models`` lists what it serves; SIGTERM ends it cleanly. A missing
package is found before anything listens: the process prints which extra installs it and exits with
``EXIT_MISSING`` (the supervisor then stops retrying and says so).

The HTTP layer is deliberately tiny: these servers answer one client (the gateway) on loopback, and every model
call runs on one worker thread (the models are not safe to call concurrently, and two cores gain nothing from it).
Bodies are bounded; bad input is a 400 in the gateway's error vocabulary, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson

__all__ = [
    "EXIT_MISSING",
    "INSTALL_HINT",
    "Missing",
    "Reply",
    "Request",
    "Routes",
    "bad_request",
    "error",
    "json_reply",
    "require",
    "serve",
]

EXIT_MISSING = 3
INSTALL_HINT = "pip install 'modelrouter[local]'"
MAX_BODY = 32 * 1024 * 1024  # an upload of a few minutes of audio; JSON requests are far smaller

log = logging.getLogger("modelrouter.local")
T = TypeVar("T")


class Missing(Exception):
    """A package (or a model file inside one) this server needs is not installed."""


def require(*modules: str) -> None:
    """Raise ``Missing`` naming the first module that cannot be imported — without importing any of them."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise Missing(f"the Python package {module!r} is not installed: {INSTALL_HINT}")


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or a ``Reply`` raised as the 400 a client should see."""
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise bad_request("The request body must be a JSON object")
        return value


@dataclass(slots=True)
class Reply(Exception):
    """An answer; raised, it short-cuts a handler (the way a 400 leaves a parser)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(value))


def error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> Reply:
    return json_reply({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> Reply:
    return error(400, message, "invalid_request_error", param, code)


Handler = Callable[[Request], Awaitable[Reply]]
Routes = Mapping[tuple[str, str], Handler]


class Worker:
    """The one thread the model runs on: calls queue in order, the event loop stays free for /health."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _App:
    def __init__(self, model_ids: Sequence[str]) -> None:
        self.routes: Routes = {}
        self.ready = False
        self.failed: str | None = None
        data = [{"id": m, "object": "model", "owned_by": "modelrouter-local"} for m in model_ids]
        self.models = json_reply({"object": "list", "data": data})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        reply = await self._answer(scope, receive)
        headers = [(b"content-type", reply.content_type.encode()), (b"content-length", str(len(reply.body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _answer(self, scope: dict[str, Any], receive: Any) -> Reply:
        method, path = scope["method"], scope["path"]
        if path == "/health":
            if self.failed is not None:
                return error(503, self.failed, "api_error", code="model_failed")
            return json_reply({"status": "ok"}) if self.ready else json_reply({"status": "loading"}, 503)
        if path == "/v1/models" and method == "GET":
            return self.models
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                message = f"{method} is not allowed on {path}"
                return error(405, message, "invalid_request_error", code="method_not_allowed")
            return error(404, f"No route {path}", "not_found_error", code="not_found")
        if not self.ready:
            return error(503, "The model is still loading", "overloaded_error", code="model_loading")
        try:
            body = await _read_body(scope, receive)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return await handler(Request(method, path, query, headers, body))
        except Reply as reply:
            return reply
        except Exception as exc:  # a model failure is this request's 500, not the server's end
            log.exception("%s %s failed", method, path)
            return error(500, f"The local model failed: {type(exc).__name__}: {exc}", "api_error", code="model_error")


async def _read_body(scope: dict[str, Any], receive: Any) -> bytes:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            raise error(413, f"The request body is over {MAX_BODY} bytes", "invalid_request_error", code="too_large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise error(400, "The client went away", "invalid_request_error")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise error(413, f"The request body is over {MAX_BODY} bytes", "invalid_request_error", code="too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def serve(
    description: str,
    model_ids: Sequence[str],
    load: Callable[[argparse.Namespace, Worker], Routes],
    *,
    needs: Iterable[str] = (),
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Run a local model server: check ``needs`` (module names), listen, then ``load`` the model on the worker
    thread (it returns the routes) while ``/health`` says loading. Returns the exit code."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads the model may use (default 2)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        require(*needs)
    except Missing as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_MISSING

    import uvicorn  # only here: the gateway imports this module's names without starting a server

    app = _App(model_ids)
    worker = Worker()
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="off", access_log=False)
    )
    exit_code = [0]

    def load_in_background() -> None:
        try:
            app.routes = load(args, worker)
            app.ready = True
            log.info("%s ready on http://%s:%d", ", ".join(model_ids), args.host, args.port)
        except Missing as exc:
            print(f"{parser.prog}: {exc}", file=sys.stderr)
            exit_code[0] = EXIT_MISSING
            server.should_exit = True
        except Exception as exc:
            log.exception("loading %s failed", ", ".join(model_ids))
            app.failed = f"loading the model failed: {type(exc).__name__}: {exc}"
            exit_code[0] = 1
            server.should_exit = True

    # Loading runs beside the event loop (it may take seconds): /health answers "loading" meanwhile.
    threading.Thread(target=load_in_background, name="load", daemon=True).start()
    # uvicorn handles SIGTERM/SIGINT while it runs, then restores the handlers it found and raises the signal again:
    # with the defaults that kills the process by SIGTERM (or a KeyboardInterrupt traceback) after a clean
    # shutdown, skipping the cleanup below and the exit code. Found handlers that ask it to stop instead, a stop
    # signal ends the process with the code above, and one in the instant before uvicorn's own are set still counts.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        worker.close()
    return exit_code[0]
