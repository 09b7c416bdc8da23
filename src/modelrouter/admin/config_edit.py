"""The protocol every config edit of the admin API follows (admin/config_routes.py, admin/services.py).

Every edit names the version it was made from (``"version": N`` in the body, or ``?version=N`` on a DELETE): a
change made from an older version is refused with 409 ``version_conflict``, so two admins cannot silently undo
each other. An edit is validated like the file (a bad change is refused with the path of each problem), saved as
the next version and applied live through the gateway's atomic swap. In file mode every edit is 409
``config_read_only``: the file is the truth there.

Views mask secrets written literally in the config (upstream headers, client keys, the database password); an
edit may send the mask back unchanged to keep the secret where it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..control.source import ConfigControl, unmask
from ..errors import GatewayError, NotFound
from .calls import Call, Reply, invalid
from .schema import Body, Comment, Query, VersionNumber, ref

if TYPE_CHECKING:
    from ..store import ConfigVersion

__all__ = [
    "EDIT_ERRORS",
    "VERSION",
    "Edit",
    "NoControl",
    "Removal",
    "RemovalQuery",
    "control_of",
    "edit",
    "removal_version",
    "version_at",
    "version_view",
]

VERSION = ref("ConfigVersion")  # what an edit answers: the version it made
EDIT_ERRORS = (404, 409)  # no such service/instance/section; version conflict, file mode, duplicate instance
BASED_ON = (
    "the config version this change was made from (GET /admin/api/config shows the newest); "
    "a change made from an older one is refused with 409 version_conflict"
)


class NoControl(GatewayError):
    status = 503
    type = "overloaded_error"
    code = "config_control_unavailable"


def control_of(call: Call) -> ConfigControl:
    found = call.control
    if found is None or found.version is None:
        raise NoControl("config versions are not available (the gateway runs without a store-backed config)")
    return found


class Edit(Body):
    """A config edit: the version it was made from, an optional comment, and (in subclasses) the change."""

    version: int = Field(description=BASED_ON)
    comment: Comment | None = None


class Removal(Body):
    """A removal: the version it was made from may be in the body or, for clients that send no DELETE body, in the
    query string."""

    version: int | None = Field(None, description=BASED_ON)
    comment: Comment | None = None


class RemovalQuery(Query):
    version: VersionNumber | None = Field(None, description="the config version, when not given in a body")


async def edit(
    call: Call, based_on: int, comment: str | None, change: str, mutate: Callable[[dict[str, Any]], Any]
) -> Reply:
    """Apply ``mutate`` to a copy of the config now serving, validate it, save it as the next version (if it was
    made from the newest one) and serve it. Audited as ``config.change`` with what changed."""
    serving = control_of(call)
    serving.writable()  # file mode: refused before the change is made
    current = serving.document()
    doc = copy.deepcopy(current)
    mutate(doc)
    doc = unmask(doc, current)
    comment = comment or change
    saved = await serving.change(doc, author=call.who.username, comment=comment, based_on=based_on)
    await call.audit(
        "config.change", f"config:{saved.id}", {"change": change, "based_on": based_on, "comment": comment}
    )
    return 200, version_view(saved, serving)


def version_view(version: ConfigVersion, control: ConfigControl) -> dict[str, Any]:
    return {
        "version": version.id,
        "created_at": version.created_at,
        "author": version.author,
        "comment": version.comment,
        "current": version.id == control.version,
    }


def removal_version(body: Removal, query: RemovalQuery) -> int:
    """A DELETE may carry its ``version`` in a body or in the query string; one of them must."""
    version = body.version if body.version is not None else query.version
    if version is None:
        raise invalid(
            "you must provide a version parameter: the config version your change is based on "
            "(GET /admin/api/config shows the current one)",
            "version",
            "missing_parameter",
        )
    return version


async def version_at(call: Call, control: ConfigControl, number: int | None) -> ConfigVersion:
    """The version numbered ``number`` (default: the one serving)."""
    number = control.version if number is None else number
    version = await call.store.get_config_version(number) if number is not None else None
    if version is None:
        raise NotFound(f"there is no config version {number}", code="version_not_found")
    return version
