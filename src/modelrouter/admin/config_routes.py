"""Admin routes for the config: the config now serving, its versions (list, show, diff, apply/rollback, export),
and its top-level sections (aliases, limits, breaker …); services and instances have theirs in admin/services.py,
and every edit follows admin/config_edit.py."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..control.source import diff_texts, document, dump_document, masked
from ..errors import NotFound, echo
from .calls import Call, Reply, Routes
from .config_edit import EDIT_ERRORS, VERSION, Edit, control_of, edit, version_at, version_view
from .schema import SECTIONS, Limit, Query, Schema, VersionNumber, obj, ref

__all__ = [
    "apply_version",
    "diff_versions",
    "export_config",
    "get_config",
    "get_section",
    "get_version",
    "list_versions",
    "put_config",
    "put_section",
    "routes",
]

routes = Routes()


class ConfigEdit(Edit):
    config: dict[str, Any]


class SectionEdit(Edit):
    value: Any = Field(description="the section's new value; null removes it")


class Listing(Query):
    limit: Limit = 50


class Export(Query):
    version: VersionNumber | None = Field(None, description="default: the version now serving")


class Diff(Query):
    from_: VersionNumber = Field(alias="from")
    to: VersionNumber | None = Field(None, description="default: the version now serving")


# --- the config and its versions ---------------------------------------------------------------------------------


@routes("GET", "/admin/api/config", "viewer", reply=ref("ConfigView"))
async def get_config(call: Call) -> Reply:
    """The config now serving, secrets masked."""
    control = control_of(call)
    return 200, {
        "mode": control.mode,
        "source": control.source,
        "version": control.version,
        "config": masked(control.document()),
    }


@routes("PUT", "/admin/api/config", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def put_config(call: Call, body: ConfigEdit) -> Reply:
    """Replace the whole config (validated, saved as the next version and applied live)."""

    def replace(doc: dict[str, Any]) -> None:
        doc.clear()
        doc.update(body.config)

    return await edit(call, body.version, body.comment, "config.replace", replace)


_EXPORT: Schema = obj(
    {"version": {"type": "integer"}, "format": {"const": "yaml"}, "config": {"type": "string"}},
    ["version", "format", "config"],
)


@routes("GET", "/admin/api/config/export", "admin", reply=_EXPORT, errors=(404,))
async def export_config(call: Call, query: Export) -> Reply:
    """A config version's YAML text as stored, secrets included.

    Admins only: the text holds every secret written in the config."""
    version = await version_at(call, control_of(call), query.version)
    return 200, {"version": version.id, "format": "yaml", "config": version.config}


_VERSIONS: Schema = obj(
    {
        "object": {"const": "list"},
        "current": {"type": ["integer", "null"]},
        "data": {"type": "array", "items": VERSION},
    },
    ["object", "current", "data"],
)


@routes("GET", "/admin/api/config/versions", "viewer", reply=_VERSIONS)
async def list_versions(call: Call, query: Listing) -> Reply:
    """Config versions, newest first."""
    control = control_of(call)
    versions = await call.store.list_config_versions(query.limit)
    return 200, {"object": "list", "current": control.version, "data": [version_view(v, control) for v in versions]}


@routes(
    "GET",
    "/admin/api/config/versions/{version}",
    "viewer",
    reply={"allOf": [VERSION, obj({"config": {"type": "object"}}, ["config"], closed=False)]},
    errors=(404,),
)
async def get_version(call: Call) -> Reply:
    """One config version, secrets masked."""
    control = control_of(call)
    version = await version_at(call, control, int(call.params["version"]))
    return 200, {**version_view(version, control), "config": masked(document(version.config))}


@routes("POST", "/admin/api/config/versions/{version}/apply", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def apply_version(call: Call, body: Edit) -> Reply:
    """Roll back (or forward) to a version: saved as the next version and applied live."""
    control = control_of(call)
    control.writable()
    target = int(call.params["version"])
    saved = await control.restore(target, author=call.who.username, based_on=body.version)
    comment = {"comment": body.comment} if body.comment is not None else {}
    await call.audit("config.rollback", f"config:{saved.id}", {"restored": target, "based_on": body.version, **comment})
    return 200, version_view(saved, control)


_DIFF: Schema = obj(
    {
        "from": {"type": "integer"},
        "to": {"type": "integer"},
        "changed": {"type": "boolean"},
        "diff": {"type": "string"},
    },
    ["from", "to", "changed", "diff"],
)


@routes("GET", "/admin/api/config/diff", "viewer", reply=_DIFF, errors=(404,))
async def diff_versions(call: Call, query: Diff) -> Reply:
    """A unified diff between two config versions, secrets masked."""
    control = control_of(call)
    old = await version_at(call, control, query.from_)
    new = await version_at(call, control, query.to)
    # Diffed as masked views: a diff is for reading, and readers may be viewers.
    old_text, new_text = (dump_document(masked(document(v.config))) for v in (old, new))
    diff = diff_texts(old_text, new_text, f"version {old.id}", f"version {new.id}")
    return 200, {"from": old.id, "to": new.id, "changed": bool(diff), "diff": diff}


# --- parts of the config -----------------------------------------------------------------------------------------

_SECTION: Schema = obj({"section": {"type": "string"}, "value": {}}, ["section", "value"])


@routes("GET", "/admin/api/config/sections/{section}", "viewer", reply=_SECTION, errors=(404,))
async def get_section(call: Call) -> Reply:
    """One top-level section of the config, secrets masked."""
    section = _section(call)
    doc = masked(control_of(call).document())
    return 200, {"section": section, "value": doc.get(section)}


@routes("PUT", "/admin/api/config/sections/{section}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def put_section(call: Call, body: SectionEdit) -> Reply:
    """Replace one top-level section of the config (null removes it)."""
    section = _section(call)
    value = body.value

    def put(doc: dict[str, Any]) -> None:
        if value is None:
            doc.pop(section, None)
        else:
            doc[section] = value

    return await edit(call, body.version, body.comment, f"section.put {section}", put)


def _section(call: Call) -> str:
    section = call.params["section"]
    if section not in SECTIONS:
        raise NotFound(
            f"there is no config section {echo(section)!r} (sections: {', '.join(SECTIONS)}; "
            "services have their own routes)",
            code="section_not_found",
        )
    return section
