"""Admin routes for the config: the config now serving, its versions (list, show, diff, apply/rollback, export),
and edits of its parts - services, instances, and any top-level section (aliases, limits, breaker …).

Every edit names the version it was made from (``"version": N`` in the body, or ``?version=N`` on a DELETE): a
change made from an older version is refused with 409 ``version_conflict``, so two admins cannot silently undo
each other. An edit is validated like the file (a bad change is refused with the path of each problem), saved as
the next version and applied live through the gateway's atomic swap. In file mode every edit is 409
``config_read_only``: the file is the truth there.

Views mask secrets written literally in the config (upstream headers, client keys, the database password); an
edit may send the mask back unchanged to keep the secret where it was.

Why this module is long: every config route (the document, its versions, sections, services, instances)
shares one edit protocol (based_on, conflicts, masks kept); the next step declares each admin route with its
body schema (issue 14), which shortens it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config.model import Config
from ..control.source import ConfigControl, diff_texts, document, dump_document, masked, unmask
from ..errors import GatewayError, NotFound, echo
from .calls import Call, Reply, invalid, only
from .http import Conflict

if TYPE_CHECKING:
    from ..store import ConfigVersion

__all__ = [
    "add_instance",
    "apply_version",
    "delete_instance",
    "delete_service",
    "diff_versions",
    "edit_instance",
    "edit_service",
    "export_config",
    "get_config",
    "get_section",
    "get_service",
    "get_version",
    "list_services",
    "list_versions",
    "put_config",
    "put_instance",
    "put_section",
    "put_service",
]

SECTIONS = tuple(name for name in Config.model_fields if name != "services")  # services have their own routes
MAX_COMMENT = 500


class NoControl(GatewayError):
    status = 503
    type = "overloaded_error"
    code = "config_control_unavailable"


def _control(call: Call) -> ConfigControl:
    control = call.control
    if control is None or control.version is None:
        raise NoControl("config versions are not available (the gateway runs without a store-backed config)")
    return control


# --- the config and its versions ---------------------------------------------------------------------------------


async def get_config(call: Call) -> Reply:
    control = _control(call)
    return 200, {
        "mode": control.mode,
        "source": control.source,
        "version": control.version,
        "config": masked(control.document()),
    }


async def put_config(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"config", "version", "comment"})
    new = _object(body, "config")

    def replace(doc: dict[str, Any]) -> None:
        doc.clear()
        doc.update(new)

    return await _edit(call, body, "config.replace", replace)


async def export_config(call: Call) -> Reply:
    """The YAML text as stored, secrets included: admins only (the route table says so)."""
    control = _control(call)
    version = await _version_at(call, control, call.request.query().get("version"))
    return 200, {"version": version.id, "format": "yaml", "config": version.config}


async def list_versions(call: Call) -> Reply:
    control = _control(call)
    limit = _limit(call.request.query().get("limit", "50"))
    versions = await call.store.list_config_versions(limit)
    return 200, {
        "object": "list",
        "current": control.version,
        "data": [_version_view(v, control) for v in versions],
    }


async def get_version(call: Call) -> Reply:
    control = _control(call)
    version = await _version_at(call, control, call.params["version"])
    return 200, {**_version_view(version, control), "config": masked(document(version.config))}


async def diff_versions(call: Call) -> Reply:
    control = _control(call)
    query = call.request.query()
    if "from" not in query:
        raise invalid("you must provide a from parameter (a version number)", "from", "missing_parameter")
    old = await _version_at(call, control, query["from"], "from")
    new = await _version_at(call, control, query.get("to"), "to")
    # Diffed as masked views: a diff is for reading, and readers may be viewers.
    old_text, new_text = (dump_document(masked(document(v.config))) for v in (old, new))
    diff = diff_texts(old_text, new_text, f"version {old.id}", f"version {new.id}")
    return 200, {"from": old.id, "to": new.id, "changed": bool(diff), "diff": diff}


async def apply_version(call: Call) -> Reply:
    """Roll back (or forward) to a version: a new version with its text, applied live."""
    control = _control(call)
    control.writable()
    body = await call.request.json()
    only(body, {"version", "comment"})
    based_on = _based_on(call, body)
    target = _number(call.params["version"], "version")
    saved = await control.restore(target, author=call.who.username, based_on=based_on)
    await call.audit(
        "config.rollback", f"config:{saved.id}", {"restored": target, "based_on": based_on, **_comment(body)}
    )
    return 200, _version_view(saved, control)


# --- parts of the config -----------------------------------------------------------------------------------------


async def list_services(call: Call) -> Reply:
    return 200, {"object": "list", "data": _masked_services(_control(call).document())}


async def get_service(call: Call) -> Reply:
    services = _masked_services(_control(call).document())
    name = call.params["service"]
    if name not in services:
        raise _no_service(name)
    return 200, services[name]


async def put_service(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"service", "version", "comment"})
    settings = _object(body, "service")
    name = call.params["service"]
    return await _edit(call, body, f"service.put {name}", lambda doc: _services(doc).__setitem__(name, settings))


async def edit_service(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"changes", "version", "comment"})
    changes = _object(body, "changes")
    name = call.params["service"]
    return await _edit(call, body, f"service.edit {name}", lambda doc: _service(doc, name).update(changes))


async def delete_service(call: Call) -> Reply:
    body = await _optional_json(call)
    name = call.params["service"]

    def remove(doc: dict[str, Any]) -> None:
        _service(doc, name)
        del _services(doc)[name]

    return await _edit(call, body, f"service.delete {name}", remove)


async def add_instance(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"instance", "version", "comment"})
    instance = _object(body, "instance")
    name = call.params["service"]

    def add(doc: dict[str, Any]) -> None:
        service = _services(doc).setdefault(name, {})
        if not isinstance(service, dict):
            raise invalid(f"services.{name} is not an object in the current config", "service")
        instances = service.setdefault("instances", [])
        if any(_same(i, instance.get("name"), instance.get("base_url")) for i in instances):
            raise Conflict(
                f"service {name} already has the instance {instance.get('name')!r} at {instance.get('base_url')}; "
                "PUT or PATCH to change it"
            )
        instances.append(instance)

    return await _edit(call, body, f"instance.add {name}/{instance.get('name')}", add)


async def put_instance(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"instance", "version", "comment"})
    instance = _object(body, "instance")
    service, name = call.params["service"], call.params["name"]

    def put(doc: dict[str, Any]) -> None:
        instances = _instances(doc, service)
        instances[_instance_index(call, instances, service, name)] = instance

    return await _edit(call, body, f"instance.put {service}/{name}", put)


async def edit_instance(call: Call) -> Reply:
    body = await call.request.json()
    only(body, {"changes", "version", "comment"})
    changes = _object(body, "changes")
    service, name = call.params["service"], call.params["name"]

    def edit(doc: dict[str, Any]) -> None:
        instances = _instances(doc, service)
        instances[_instance_index(call, instances, service, name)].update(changes)

    return await _edit(call, body, f"instance.edit {service}/{name}", edit)


async def delete_instance(call: Call) -> Reply:
    body = await _optional_json(call)
    service, name = call.params["service"], call.params["name"]

    def remove(doc: dict[str, Any]) -> None:
        instances = _instances(doc, service)
        del instances[_instance_index(call, instances, service, name)]

    return await _edit(call, body, f"instance.delete {service}/{name}", remove)


async def get_section(call: Call) -> Reply:
    section = _section(call)
    doc = masked(_control(call).document())
    return 200, {"section": section, "value": doc.get(section)}


async def put_section(call: Call) -> Reply:
    section = _section(call)
    body = await call.request.json()
    only(body, {"value", "version", "comment"})
    if "value" not in body:
        raise invalid("you must provide a value parameter (null removes the section)", "value", "missing_parameter")
    value = body["value"]

    def put(doc: dict[str, Any]) -> None:
        if value is None:
            doc.pop(section, None)
        else:
            doc[section] = value

    return await _edit(call, body, f"section.put {section}", put)


# --- the edit itself ---------------------------------------------------------------------------------------------


async def _edit(call: Call, body: Mapping[str, Any], change: str, mutate: Callable[[dict[str, Any]], Any]) -> Reply:
    """Apply ``mutate`` to a copy of the config now serving, validate it, save it as the next version (if it was
    made from the newest one) and serve it. Audited as ``config.change`` with what changed."""
    control = _control(call)
    control.writable()  # file mode: refused before anything else
    based_on = _based_on(call, body)
    current = control.document()
    doc = copy.deepcopy(current)
    mutate(doc)
    doc = unmask(doc, current)
    comment = _comment(body).get("comment") or change
    saved = await control.change(doc, author=call.who.username, comment=comment, based_on=based_on)
    await call.audit(
        "config.change", f"config:{saved.id}", {"change": change, "based_on": based_on, "comment": comment}
    )
    return 200, _version_view(saved, control)


def _version_view(version: ConfigVersion, control: ConfigControl) -> dict[str, Any]:
    return {
        "version": version.id,
        "created_at": version.created_at,
        "author": version.author,
        "comment": version.comment,
        "current": version.id == control.version,
    }


# --- input ------------------------------------------------------------------------------------------------------


async def _optional_json(call: Call) -> dict[str, Any]:
    """A DELETE may carry its ``version`` in a body or in the query string."""
    body = await call.request.json()
    only(body, {"version", "comment"})
    query = call.request.query()
    if "version" not in body and "version" in query:
        body["version"] = _number(query["version"], "version")
    return body


def _based_on(call: Call, body: Mapping[str, Any]) -> int:
    value = body.get("version")
    if value is None:
        raise invalid(
            "you must provide a version parameter: the config version your change is based on "
            "(GET /admin/api/config shows the current one)",
            "version",
            "missing_parameter",
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("'version' must be a version number", "version", "invalid_type")
    return value


def _comment(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("comment")
    if value is None:
        return {}
    if not isinstance(value, str) or len(value) > MAX_COMMENT:
        raise invalid(f"'comment' must be a string of at most {MAX_COMMENT} characters", "comment", "invalid_type")
    return {"comment": value}


def _object(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        raise invalid(f"Invalid request: missing required parameter '{name}'", name, "missing_parameter")
    if not isinstance(value, dict):
        raise invalid(f"'{name}' must be an object", name, "invalid_type")
    return value


def _number(text: str | None, name: str) -> int:
    if text is None or not text.isdigit() or len(text) > 9:
        raise invalid(f"'{name}' must be a version number", name)
    return int(text)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise invalid("'limit' must be a whole number from 1 to 1000", "limit")
    return int(text)


async def _version_at(call: Call, control: ConfigControl, text: str | None, name: str = "version") -> ConfigVersion:
    """The version numbered ``text`` (default: the one serving)."""
    number = control.version if text is None else _number(text, name)
    version = await call.store.get_config_version(number) if number is not None else None
    if version is None:
        raise NotFound(f"there is no config version {number}", code="version_not_found")
    return version


def _section(call: Call) -> str:
    section = call.params["section"]
    if section not in SECTIONS:
        raise NotFound(
            f"there is no config section {echo(section)!r} (sections: {', '.join(SECTIONS)}; "
            "services have their own routes)",
            code="section_not_found",
        )
    return section


def _services(doc: dict[str, Any]) -> dict[str, Any]:
    services = doc.setdefault("services", {})
    if not isinstance(services, dict):
        raise invalid("'services' is not an object in the current config", "services")
    return services


def _service(doc: dict[str, Any], name: str) -> dict[str, Any]:
    service = _services(doc).get(name)
    if not isinstance(service, dict):
        raise _no_service(name)
    return service


def _instances(doc: dict[str, Any], service: str) -> list[dict[str, Any]]:
    instances = _service(doc, service).get("instances")
    return instances if isinstance(instances, list) else []


def _instance_index(call: Call, instances: list[dict[str, Any]], service: str, name: str) -> int:
    """The instance named ``name``; several instances of one model share a name, and then ``?base_url=`` says
    which one is meant."""
    base_url = call.request.query().get("base_url")
    found = [i for i, inst in enumerate(instances) if _same(inst, name, base_url)]
    if len(found) == 1:
        return found[0]
    if not found:
        where = f" at {echo(base_url)}" if base_url else ""
        raise NotFound(f"service {service} has no instance named {echo(name)!r}{where}", code="instance_not_found")
    raise Conflict(
        f"service {service} has {len(found)} instances named {echo(name)!r}; say which with ?base_url=",
        param="base_url",
    )


def _same(instance: Any, name: Any, base_url: str | None) -> bool:
    if not isinstance(instance, dict) or instance.get("name") != name:
        return False
    url = instance.get("base_url")
    return base_url is None or (isinstance(url, str) and url.rstrip("/") == base_url.rstrip("/"))


def _no_service(name: str) -> NotFound:
    return NotFound(f"there is no service {echo(name)!r} in the config", code="service_not_found")


def _masked_services(doc: dict[str, Any]) -> dict[str, Any]:
    services = masked(doc).get("services")
    return services if isinstance(services, dict) else {}
