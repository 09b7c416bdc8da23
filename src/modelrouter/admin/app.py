"""``AdminApp``: the admin API as an ASGI application, mounted by the front door under ``/admin/``.

For each request, in this order: match a route (404, 405), find the store (503), authenticate the admin token
(401), check the role (403), validate the body and query from the route's models (400, 415), run the handler
(400, 404, 409, 429 …), and turn any error into an OpenAI-shaped
error response — here, and nowhere else in the admin API.

Authentication accepts ``Authorization: Bearer <admin token>`` and nothing else, looked up with
``store.lookup_token`` only. Client API keys live in another table and another namespace, so a client key, sent
however, is simply an unknown token here; ``X-API-Key`` is not even read. Bearer tokens in a header (never
cookies) also mean a browser cannot be tricked into sending one, so there is no CSRF to defend against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config.model import AdminConfig
from ..errors import GatewayError, InternalError, InvalidRequest, MethodNotAllowed, NotFound, PermissionDenied, echo
from ..http.client import TrustedProxies, client_ip
from ..store.records import NotFoundError, StoreError
from .calls import ROLE_RANK, Call, Route
from .http import (
    Conflict,
    Download,
    NotAuthenticated,
    Receive,
    Request,
    Scope,
    Send,
    StoreUnavailable,
    send_download,
    send_error,
    send_json,
)
from .ratelimit import AttemptLimiter, SharedAttemptLimiter
from .routes import ROUTES

if TYPE_CHECKING:  # the store pulls in SQLAlchemy, which a gateway without a store never loads
    from ..control.source import ConfigControl
    from ..observability.history import History
    from ..state import SharedState
    from ..store import Store

__all__ = ["AdminApp"]

log = logging.getLogger("modelrouter.admin")


class AdminApp:
    """The admin API. Reads the store and its own config through getters on every request, so a config reload
    or a store opened after startup take effect without rebuilding the app.

    ``trusted_proxies`` (a getter, like the others) decides whether X-Forwarded-For is believed for the client IP
    that login throttling and the audit log use; pass the gateway's ``auth.trusted_proxies``. ``clock`` (unix
    seconds) exists for tests: it dates tokens' ``expires_at`` and paces login throttling. ``shared``: the Redis
    that login throttling counts in (``state.backend: redis``)."""

    def __init__(
        self,
        store_getter: Callable[[], Store | None],
        config_getter: Callable[[], AdminConfig],
        *,
        trusted_proxies: Callable[[], TrustedProxies] = lambda: (),
        control_getter: Callable[[], ConfigControl | None] = lambda: None,
        live_state: Callable[[], dict[str, Any]] | None = None,
        history: Callable[[], History | None] = lambda: None,
        endpoints: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        shared: SharedState | None = None,
    ) -> None:
        self._control_getter = control_getter
        self._live_state = live_state
        self._history = history
        self._endpoints = endpoints
        self._store_getter = store_getter
        self._config_getter = config_getter
        self._trusted_proxies = trusted_proxies
        self._clock = clock
        # state.backend: redis - login attempts count for every replica together.
        self._login_limiter = AttemptLimiter(clock) if shared is None else SharedAttemptLimiter(shared)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the front door runs the lifespan; the admin API has no websockets
        try:
            route, params = _match(scope["method"], scope["path"])
            store = self._store_getter()
            if store is None:
                raise StoreUnavailable("the admin API needs the store, and it is not available")
            request = Request(scope, receive, self._client_ip(scope))
            call = Call(
                request,
                params,
                store,
                self._config_getter(),
                self._clock,
                self._login_limiter,
                control=self._control_getter(),
                live=self._live_state,
                history=self._history(),
                endpoints=self._endpoints,
            )
            if route.role is not None:
                await _authenticate(call, route)
            status, body = await _run(route, call)
            if isinstance(body, Download):
                await send_download(send, status, body)
            else:
                await send_json(send, status, body)
        except GatewayError as exc:
            await send_error(send, exc)
        except Exception:
            log.exception("unexpected error in the admin API on %s %s", scope.get("method"), scope.get("path"))
            await send_error(send, InternalError("internal error in the admin API (see the gateway's log)"))

    def _client_ip(self, scope: Scope) -> str | None:
        client = scope.get("client")
        if not client:
            return None
        trusted = self._trusted_proxies()
        peer: str = client[0]
        return client_ip(peer, scope["headers"], trusted) if trusted else peer

    def __repr__(self) -> str:
        return f"<AdminApp {len(ROUTES)} routes, login throttle {self._login_limiter!r}>"


def _match(method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed: list[str] = []
    for route in ROUTES:
        params = route.match(path)
        if params is None:
            continue
        if route.method == method:
            return route, params
        allowed.append(route.method)
    if allowed:
        allow = ", ".join(allowed)
        raise MethodNotAllowed(f"{echo(method)} is not allowed on {echo(path)}; use {allow}", allow=allow)
    raise NotFound(f"Invalid URL ({echo(method)} {echo(path)})")


async def _authenticate(call: Call, route: Route) -> None:
    token = _bearer(call.request)
    admin = await call.store.lookup_token(token) if token else None
    if admin is None:
        raise NotAuthenticated(
            "The admin API needs 'Authorization: Bearer <admin token>' from POST /admin/api/login; "
            "the token given is missing, expired or revoked (client API keys are not admin tokens)"
        )
    assert route.role is not None
    if ROLE_RANK[admin.role] < ROLE_RANK[route.role]:
        raise PermissionDenied(
            f"role '{admin.role}' may not {route.method} {route.template}; it needs '{route.role}' or higher",
            code="insufficient_role",
        )
    call.admin = admin
    call.token = token


def _bearer(request: Request) -> str | None:
    value = request.header(b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def _run(route: Route, call: Call) -> tuple[int, object]:
    """The handler, with the store's exceptions turned into HTTP errors (the one place they are)."""
    try:
        return await route.run(call)
    except NotFoundError as exc:
        raise NotFound(str(exc), code="not_found") from None
    except StoreError as exc:  # a username taken, a revoked key enabled or rotated: refused for the current state
        raise Conflict(str(exc)) from None
    except ValueError as exc:  # what the store refuses as input
        raise InvalidRequest(str(exc)) from None
    except Exception as exc:
        # A value the database driver cannot convert (a time past year 9999, a number too large for its column)
        # reaches us wrapped in SQLAlchemy's StatementError: bad input, not a server fault.
        orig = getattr(exc, "orig", None)
        if type(exc).__name__ == "StatementError" and isinstance(orig, ValueError | OverflowError | OSError):
            raise InvalidRequest(f"a value is out of range for the store: {orig}") from None
        raise
