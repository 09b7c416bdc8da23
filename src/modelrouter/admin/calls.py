"""What every admin route shares: the routed request a handler sees (``Call``), the declaration of a route
(``Routes``: method, path, least role, the body and query models it reads, its summary and reply - each said once,
at the handler), and the views of records that leave the API (never a hash, a secret already shown, or a
password). ``AdminApp`` does the rest (matching, the store check, authentication, roles, validating the body and
query from the route's models, turning errors into responses); a handler acts on the store and writes the audit
log (with the acting admin's username and the client IP, never a secret or password)."""

from __future__ import annotations

import inspect
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..config.model import AdminConfig
from ..errors import InvalidRequest
from ..store.records import AdminRecord, AuditRecord, Role
from .http import Request
from .ratelimit import AttemptLimiter
from .schema import Body, Query, Schema, validated

if TYPE_CHECKING:  # the store pulls in SQLAlchemy, which a gateway without a store never loads
    from ..control.source import ConfigControl
    from ..observability.history import History
    from ..store import Store

__all__ = [
    "ANONYMOUS",
    "GLOBAL",
    "PER_ADDRESS",
    "ROLE_RANK",
    "Call",
    "Handler",
    "Reply",
    "Route",
    "Routes",
    "admin_view",
    "audit_view",
    "invalid",
]

log = logging.getLogger("modelrouter.admin")

ROLE_RANK: Mapping[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}
ANONYMOUS = "anonymous"  # the audit actor of a failed login: nobody is authenticated yet
# Login attempts a minute, as multiples of `admin.login_attempts_per_minute` (N), which counts per (username,
# address): an address gets 4 N over all usernames (several admins behind one NAT), the process 20 N in all (at the
# default N = 5: 100 argon2id checks a minute, ~90 ms each here, at most 15 % of a core however many addresses guess).
PER_ADDRESS = 4
GLOBAL = 20


@dataclass(slots=True)
class Call:
    """One routed request, as a handler sees it. ``admin`` and ``token`` are None only on the login route."""

    request: Request
    params: Mapping[str, str]
    store: Store
    config: AdminConfig
    clock: Callable[[], float]
    login_limiter: AttemptLimiter
    admin: AdminRecord | None = None
    token: str | None = None
    control: ConfigControl | None = None  # the gateway's config source (None: a gateway without one)
    live: Callable[[], dict[str, Any]] | None = None  # the gateway's live state, for GET /admin/api/state
    history: History | None = None  # the traffic history, for GET /admin/api/metrics/history
    endpoints: Callable[[], dict[str, Any]] | None = None  # the public API served now, GET /admin/api/endpoints

    @property
    def who(self) -> AdminRecord:
        assert self.admin is not None, "only the login route runs without an admin"
        return self.admin

    async def audit(self, action: str, target: str, detail: Mapping[str, Any] | None = None) -> None:
        actor = self.admin.username if self.admin is not None else ANONYMOUS
        await self.store.audit(actor, action, target, {**(detail or {}), "ip": self.request.client_ip})


Reply = tuple[int, Any]  # status, JSON-serialisable body
# A handler takes the Call, and ``body`` and/or ``query`` when it reads them: their annotations are the models
# they are validated from before the handler runs.
Handler = Callable[..., Awaitable[Reply]]
H = TypeVar("H", bound=Handler)


# --- the route table -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One admin route, as declared at its handler. ``errors`` lists only the statuses particular to the route;
    those that follow from how it is called (400 for a body or query, 401, 403, 415, 503) are the document's to
    add."""

    method: str
    template: str  # e.g. /admin/api/keys/{id}/disable
    handler: Handler
    role: Role | None  # the least role allowed; None: no login needed (only the login route itself)
    pattern: re.Pattern[str]
    summary: str  # the first paragraph of the handler's docstring
    notes: str  # the rest of it
    reply: Schema
    status: int
    errors: tuple[int, ...]
    body: type[Body] | None  # the JSON body the handler reads; None: it reads none
    query: type[Query] | None

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else found.groupdict()

    async def run(self, call: Call) -> Reply:
        """The handler, given its body and query as validated from its models."""
        kwargs: dict[str, Any] = {}
        if self.body is not None:
            kwargs["body"] = validated(self.body, await call.request.json())
        if self.query is not None:
            kwargs["query"] = validated(self.query, call.request.query())
        return await self.handler(call, **kwargs)


_PARAMS = {
    "id": r"[0-9]{1,18}",  # a key id: digits only, and few enough to fit a 64-bit integer column
    "version": r"[0-9]{1,9}",
}


class Routes:
    """A resource's routes in the order declared, each declared once, at its handler::

        @routes("POST", "/admin/api/keys", "operator", reply=ref("KeyWithSecret"), status=201)
        async def create_key(call: Call, body: NewKey) -> Reply:
            "Create a client key; its secret is in this reply only."

    ``{id}`` and ``{version}`` in a path match numbers, other ``{name}``s one path segment."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __call__(
        self,
        method: str,
        template: str,
        role: Role | None,
        *,
        reply: Schema,
        status: int = 200,
        errors: tuple[int, ...] = (),
    ) -> Callable[[H], H]:
        def declare(handler: H) -> H:
            self._routes.append(_route(method, template, role, handler, reply, status, errors))
            return handler

        return declare


def _route(
    method: str, template: str, role: Role | None, handler: Handler, reply: Schema, status: int, errors: tuple[int, ...]
) -> Route:
    pattern = re.escape(template)
    for name in re.findall(r"\{(\w+)\}", template):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{_PARAMS.get(name, '[^/]+')})")
    hints = typing.get_type_hints(handler)
    reads = [name for name in inspect.signature(handler).parameters if name != "call"]
    assert set(reads) <= {"body", "query"}, f"{handler.__name__}: a handler reads only (call, body, query)"
    body, query = hints.get("body"), hints.get("query")
    assert body is None or issubclass(body, Body), f"{handler.__name__}: body must be a Body model"
    assert query is None or issubclass(query, Query), f"{handler.__name__}: query must be a Query model"
    doc = inspect.getdoc(handler)
    assert doc, f"{handler.__name__}: the docstring's first paragraph is the route's summary"
    summary, _, notes = doc.partition("\n\n")
    return Route(
        method,
        template,
        handler,
        role,
        re.compile(pattern),
        " ".join(summary.split()),
        " ".join(notes.split()),
        reply,
        status,
        errors,
        body,
        query,
    )


# --- views: what leaves the API (never a hash, a secret already shown, or a password) --------------------------


def admin_view(record: AdminRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "username": record.username,
        "role": record.role,
        "disabled": record.disabled,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def audit_view(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "ts": record.ts,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "detail": dict(record.detail),
    }


# --- input ---------------------------------------------------------------------------------------------------


def invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    """A 400 for input the models cannot judge alone (a time in the past, a change to one's own account)."""
    return InvalidRequest(message, param=param, code=code)
