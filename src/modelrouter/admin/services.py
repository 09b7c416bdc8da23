"""Admin routes for the config's services and their instances: list, show, add or replace, change, remove (the
edit protocol is admin/config_edit.py's). Several instances of one model share a name; ``?base_url=`` says which
one a route means."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from ..control.source import masked
from ..errors import NotFound, echo
from .calls import Call, Reply, Routes, invalid
from .config_edit import EDIT_ERRORS, VERSION, Edit, Removal, RemovalQuery, control_of, edit, removal_version
from .http import Conflict
from .schema import Query, Schema, obj

__all__ = [
    "add_instance",
    "delete_instance",
    "delete_service",
    "edit_instance",
    "edit_service",
    "get_service",
    "list_services",
    "put_instance",
    "put_service",
    "routes",
]

routes = Routes()


class ServiceEdit(Edit):
    service: dict[str, Any]


class InstanceEdit(Edit):
    instance: dict[str, Any]


class Changes(Edit):
    changes: dict[str, Any] = Field(description="the settings to change, and their new values")


class Which(Query):
    base_url: str | None = Field(
        None, description="the instance's base_url, when several instances of the service share its name"
    )


class InstanceRemovalQuery(RemovalQuery, Which):
    pass


_SERVICES: Schema = obj(
    {"object": {"const": "list"}, "data": {"type": "object", "additionalProperties": {"type": "object"}}},
    ["object", "data"],
)


@routes("GET", "/admin/api/services", "viewer", reply=_SERVICES)
async def list_services(call: Call) -> Reply:
    """The config's services by name, secrets masked."""
    return 200, {"object": "list", "data": _masked_services(control_of(call).document())}


@routes("GET", "/admin/api/services/{service}", "viewer", reply={"type": "object"}, errors=(404,))
async def get_service(call: Call) -> Reply:
    """One service of the config, secrets masked."""
    services = _masked_services(control_of(call).document())
    name = call.params["service"]
    if name not in services:
        raise _no_service(name)
    return 200, services[name]


@routes("PUT", "/admin/api/services/{service}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def put_service(call: Call, body: ServiceEdit) -> Reply:
    """Add or replace a service."""
    name = call.params["service"]
    return await edit(
        call,
        body.version,
        body.comment,
        f"service.put {name}",
        lambda doc: _services(doc).__setitem__(name, body.service),
    )


@routes("PATCH", "/admin/api/services/{service}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def edit_service(call: Call, body: Changes) -> Reply:
    """Change some of a service's settings."""
    name = call.params["service"]
    return await edit(
        call, body.version, body.comment, f"service.edit {name}", lambda doc: _service(doc, name).update(body.changes)
    )


@routes("DELETE", "/admin/api/services/{service}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def delete_service(call: Call, body: Removal, query: RemovalQuery) -> Reply:
    """Remove a service."""
    name = call.params["service"]

    def remove(doc: dict[str, Any]) -> None:
        _service(doc, name)
        del _services(doc)[name]

    return await edit(call, removal_version(body, query), body.comment, f"service.delete {name}", remove)


@routes("POST", "/admin/api/services/{service}/instances", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def add_instance(call: Call, body: InstanceEdit) -> Reply:
    """Add an instance to a service."""
    instance = body.instance
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

    return await edit(call, body.version, body.comment, f"instance.add {name}/{instance.get('name')}", add)


@routes("PUT", "/admin/api/services/{service}/instances/{name}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def put_instance(call: Call, body: InstanceEdit, query: Which) -> Reply:
    """Replace an instance."""
    return await _on_instance(
        call, body.version, body.comment, "put", query, lambda i, at: i.__setitem__(at, body.instance)
    )


@routes("PATCH", "/admin/api/services/{service}/instances/{name}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def edit_instance(call: Call, body: Changes, query: Which) -> Reply:
    """Change some of an instance's settings."""
    return await _on_instance(call, body.version, body.comment, "edit", query, lambda i, at: i[at].update(body.changes))


@routes("DELETE", "/admin/api/services/{service}/instances/{name}", "operator", reply=VERSION, errors=EDIT_ERRORS)
async def delete_instance(call: Call, body: Removal, query: InstanceRemovalQuery) -> Reply:
    """Remove an instance."""
    version = removal_version(body, query)
    return await _on_instance(call, version, body.comment, "delete", query, lambda i, at: i.__delitem__(at))


async def _on_instance(
    call: Call,
    version: int,
    comment: str | None,
    verb: str,
    query: Which,
    change: Callable[[list[dict[str, Any]], int], None],
) -> Reply:
    """An edit of the instance the path (and ``?base_url=``) names: ``change(instances, its index)``."""
    service, name = call.params["service"], call.params["name"]

    def mutate(doc: dict[str, Any]) -> None:
        instances = _instances(doc, service)
        change(instances, _instance_index(instances, service, name, query.base_url))

    return await edit(call, version, comment, f"instance.{verb} {service}/{name}", mutate)


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


def _instance_index(instances: list[dict[str, Any]], service: str, name: str, base_url: str | None) -> int:
    """The instance named ``name``; several instances of one model share a name, and then ``?base_url=`` says
    which one is meant."""
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
