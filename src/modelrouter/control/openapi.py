"""The OpenAPI 3.1 document of the gateway's two HTTP APIs: the OpenAI-compatible ``/v1`` data plane and the admin
API under ``/admin/api``. Served at ``GET /openapi.json`` (``dataplane/front.py``) with no auth: it describes, it grants
nothing.

Generated from the tables the gateway routes by, not written by hand, so that it cannot drift from them: ``/v1``
paths come from ``endpoints.ENDPOINTS`` and admin paths from ``admin.ROUTES`` (a route added there appears here by
itself). What a route table cannot tell - each admin route's request body, query and path parameters, its reply
and the errors it can give - is in ``ADMIN_OPERATIONS`` below, keyed by ``(method, template)``. A route without an
entry is still listed (with no body documented) rather than breaking the document in production;
``tests/test_openapi.py`` fails on it instead, so nobody forgets to describe a new route.

Why this module is long: it holds the schemas of the admin API's bodies and answers next to the builder; once
each admin route declares its own body schema (issue 14), only the builder stays here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .._version import __version__
from ..admin import ROLE_RANK, ROUTES, Route
from ..admin.calls import MAX_NAME_LENGTH
from ..admin.config_routes import MAX_COMMENT, SECTIONS
from ..admin.state import GROUPS
from ..config.model import SERVICE_NAMES, KeyQuotas
from ..dataplane.params import field_schemas
from ..endpoints import ENDPOINTS, Endpoint
from ..errors import ERROR_TYPES
from ..store.records import MIN_PASSWORD_LENGTH, ROLES

__all__ = ["ADMIN_OPERATIONS", "AdminOperation", "Query", "build_openapi", "openapi_json"]

Schema = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Mapping[str, Schema], required: Iterable[str] = (), *, closed: bool = True) -> Schema:
    """A JSON object. ``closed``: other fields are refused (the admin handlers answer 400 ``unknown_parameter``)."""
    schema: Schema = {"type": "object", "properties": dict(properties)}
    if required := list(required):
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _list_of(item: Schema) -> Schema:
    """The ``{"object": "list", "data": [...]}`` envelope OpenAI uses, and the admin API with it."""
    return _object({"object": {"const": "list"}, "data": {"type": "array", "items": item}}, ["object", "data"])


# --- what the admin API reads ------------------------------------------------------------------------------------

# The handlers' own limits, imported rather than repeated so the document follows them. A "non-empty string" is
# one with a non-blank character (``value.strip()`` in the handlers).
_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": r"\S"}
_LOGIN_PASSWORD: Schema = {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"\S"}
_NEW_PASSWORD: Schema = {"type": "string", "minLength": MIN_PASSWORD_LENGTH, "maxLength": 1024, "pattern": r"\S"}
_ROLE: Schema = {"type": "string", "enum": list(ROLES)}
_TIME: Schema = {"type": "number", "minimum": 0, "description": "unix time in seconds"}
_LIMIT: Schema = {"type": "integer", "minimum": 1, "maximum": 1000}
# Version numbers are matched as at most nine digits (``route()`` and ``_number`` in admin/config_routes.py).
_VERSION_NUMBER: Schema = {"type": "integer", "minimum": 0, "maximum": 999_999_999}
_BASED_ON: Schema = {
    "type": "integer",
    "description": "the config version this change was made from (GET /admin/api/config shows the newest); "
    "a change made from an older one is refused with 409 version_conflict",
}
_COMMENT: Schema = {"type": ["string", "null"], "maxLength": MAX_COMMENT}
_ANY_OBJECT: Schema = {"type": "object"}
_BASE_URL = "the instance's base_url, when several instances of the service share its name"

# Path parameters by name. ``{id}`` and ``{version}`` only match digits (admin/calls.py ``_PARAMS``); the rest
# match one path segment. Services and sections are the names the config model knows: others are 404 or 400.
PATH_PARAMETERS: Mapping[str, Schema] = {
    "id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1, "description": "a client key's id"},
    "version": {**_VERSION_NUMBER, "description": "a config version number"},
    "username": {"type": "string", "minLength": 1, "description": "an admin user's name"},
    "section": {"type": "string", "enum": list(SECTIONS), "description": "a top-level config section"},
    "service": {"type": "string", "enum": list(SERVICE_NAMES), "description": "a service of the config"},
    "name": {"type": "string", "minLength": 1, "description": "an instance's name (its model name)"},
}


def _edit_body(field: str | None = None, schema: Schema | None = None, *, version_required: bool = True) -> Schema:
    """A config edit: ``version`` (what it was made from), an optional ``comment``, and the change itself."""
    properties: dict[str, Schema] = {"version": _BASED_ON, "comment": _COMMENT}
    required = ["version"] if version_required else []
    if field is not None:
        properties[field] = schema if schema is not None else _ANY_OBJECT
        required.append(field)
    return _object(properties, required)


@dataclass(frozen=True, slots=True)
class Query:
    """One query parameter of an admin route."""

    name: str
    schema: Schema
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class AdminOperation:
    """What the route table does not say about an admin route. ``errors`` lists only the statuses particular to
    the route; those every route can give (400 for a body or query, 401, 403, 415, 503) are added from the route."""

    summary: str
    reply: Schema
    status: int = 200
    body: Schema | None = None  # the JSON body the handler reads; None: it reads none
    body_required: bool = True
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = ()


_CONFIG_VERSION = _ref("ConfigVersion")
_KEY_STATE_ERRORS = (404, 409)  # no such key; a revoked key cannot be enabled or rotated
_EDIT_ERRORS = (404, 409)  # no such service/instance/section; version conflict, file mode, duplicate instance
_DELETE_QUERY = (Query("version", _VERSION_NUMBER, description="the config version, when not given in a body"),)
_INSTANCE_QUERY = (Query("base_url", {"type": "string"}, description=_BASE_URL),)
_USAGE_FILTERS = (
    Query("key_id", {"type": "string"}, description='"store:<id>" for a stored key, "config:<name>" for the file'),
    Query("model", {"type": "string"}),
    Query("since", _TIME, description="records at or after this time"),
    Query("until", _TIME, description="records before this time"),
)

# Every admin route, by (method, template). Keep it in step with admin/routes.py: tests/test_openapi.py fails on a
# route missing here, and on an entry whose route is gone.
ADMIN_OPERATIONS: Mapping[tuple[str, str], AdminOperation] = {
    # the session
    ("POST", "/admin/api/login"): AdminOperation(
        "Log in: exchange a username and password for an admin token (throttled per client IP and username)",
        _ref("Login"),
        body=_object({"username": _NAME, "password": _LOGIN_PASSWORD}, ["username", "password"]),
        errors=(429,),
    ),
    ("POST", "/admin/api/logout"): AdminOperation(
        "Log out: revoke the token presented", _object({"logged_out": {"const": True}}, ["logged_out"])
    ),
    ("GET", "/admin/api/me"): AdminOperation("The admin user the token belongs to", _ref("AdminUser")),
    # client keys
    ("GET", "/admin/api/keys"): AdminOperation("Client keys (never a hash or a secret)", _list_of(_ref("Key"))),
    ("POST", "/admin/api/keys"): AdminOperation(
        "Create a client key; its secret is in this reply only",
        _ref("KeyWithSecret"),
        status=201,
        body=_object(
            {
                "name": _NAME,
                "models": {"type": ["array", "null"], "items": {"type": "string", "pattern": r"\S"}},
                "services": {"type": ["array", "null"], "items": {"type": "string", "enum": list(SERVICE_NAMES)}},
                "expires_at": {"type": ["number", "null"], "description": "unix time in seconds, in the future"},
                "quotas": {"anyOf": [KeyQuotas.model_json_schema(), {"type": "null"}]},
            },
            ["name"],
        ),
    ),
    ("POST", "/admin/api/keys/{id}/disable"): AdminOperation(
        "Disable a client key", _ref("Key"), errors=_KEY_STATE_ERRORS
    ),
    ("POST", "/admin/api/keys/{id}/enable"): AdminOperation(
        "Enable a disabled client key", _ref("Key"), errors=_KEY_STATE_ERRORS
    ),
    ("POST", "/admin/api/keys/{id}/revoke"): AdminOperation(
        "Revoke a client key for good", _ref("Key"), errors=_KEY_STATE_ERRORS
    ),
    ("POST", "/admin/api/keys/{id}/rotate"): AdminOperation(
        "Give a client key a new secret (in this reply only); the old one stops working",
        _ref("KeyWithSecret"),
        errors=_KEY_STATE_ERRORS,
    ),
    ("DELETE", "/admin/api/keys/{id}"): AdminOperation(
        "Delete a client key",
        _object({"id": {"type": "integer"}, "deleted": {"const": True}}, ["id", "deleted"]),
        errors=(404,),
    ),
    # admin users and the audit log
    ("GET", "/admin/api/admins"): AdminOperation("Admin users", _list_of(_ref("AdminUser"))),
    ("POST", "/admin/api/admins"): AdminOperation(
        "Create an admin user",
        _ref("AdminUser"),
        status=201,
        body=_object(
            {
                # No spaces at either end: a name that looks the same as another must not be a second account.
                "username": {**_NAME, "pattern": r"^\S(?:[\s\S]*\S)?$"},
                "password": _NEW_PASSWORD,
                "role": _ROLE,
            },
            ["username", "password", "role"],
        ),
        errors=(409,),
    ),
    ("PATCH", "/admin/api/admins/{username}"): AdminOperation(
        "Change another admin user's role, or disable or enable them",
        _ref("AdminUser"),
        body={**_object({"role": _ROLE, "disabled": {"type": "boolean"}}), "minProperties": 1},
        errors=(404,),
    ),
    ("POST", "/admin/api/admins/{username}/password"): AdminOperation(
        "Set an admin user's password (one's own, or anyone's as an admin); their tokens are revoked",
        _object({"username": {"type": "string"}, "password_changed": {"const": True}}, ["username"]),
        body=_object({"password": _NEW_PASSWORD}, ["password"]),
        errors=(403, 404),
    ),
    ("GET", "/admin/api/audit"): AdminOperation(
        "The audit log, newest first", _list_of(_ref("AuditEntry")), query=(Query("limit", _LIMIT),)
    ),
    # the config and its versions
    ("GET", "/admin/api/config"): AdminOperation("The config now serving, secrets masked", _ref("ConfigView")),
    ("PUT", "/admin/api/config"): AdminOperation(
        "Replace the whole config (validated, saved as the next version and applied live)",
        _CONFIG_VERSION,
        body=_edit_body("config"),
        errors=_EDIT_ERRORS,
    ),
    ("GET", "/admin/api/config/export"): AdminOperation(
        "A config version's YAML text as stored, secrets included",
        _object(
            {"version": {"type": "integer"}, "format": {"const": "yaml"}, "config": {"type": "string"}},
            ["version", "format", "config"],
        ),
        query=(Query("version", _VERSION_NUMBER, description="default: the version now serving"),),
        errors=(404,),
    ),
    ("GET", "/admin/api/config/versions"): AdminOperation(
        "Config versions, newest first",
        _object(
            {
                "object": {"const": "list"},
                "current": {"type": ["integer", "null"]},
                "data": {"type": "array", "items": _CONFIG_VERSION},
            },
            ["object", "current", "data"],
        ),
        query=(Query("limit", _LIMIT),),
    ),
    ("GET", "/admin/api/config/versions/{version}"): AdminOperation(
        "One config version, secrets masked",
        {"allOf": [_CONFIG_VERSION, _object({"config": _ANY_OBJECT}, ["config"], closed=False)]},
        errors=(404,),
    ),
    ("POST", "/admin/api/config/versions/{version}/apply"): AdminOperation(
        "Roll back (or forward) to a version: saved as the next version and applied live",
        _CONFIG_VERSION,
        body=_edit_body(),
        errors=_EDIT_ERRORS,
    ),
    ("GET", "/admin/api/config/diff"): AdminOperation(
        "A unified diff between two config versions, secrets masked",
        _object(
            {
                "from": {"type": "integer"},
                "to": {"type": "integer"},
                "changed": {"type": "boolean"},
                "diff": {"type": "string"},
            },
            ["from", "to", "changed", "diff"],
        ),
        query=(
            Query("from", _VERSION_NUMBER, required=True),
            Query("to", _VERSION_NUMBER, description="default: the version now serving"),
        ),
        errors=(404,),
    ),
    ("GET", "/admin/api/config/sections/{section}"): AdminOperation(
        "One top-level section of the config, secrets masked",
        _object({"section": {"type": "string"}, "value": {}}, ["section", "value"]),
        errors=(404,),
    ),
    ("PUT", "/admin/api/config/sections/{section}"): AdminOperation(
        "Replace one top-level section of the config (null removes it)",
        _CONFIG_VERSION,
        body=_edit_body("value", {"description": "the section's new value; null removes it"}),
        errors=_EDIT_ERRORS,
    ),
    ("GET", "/admin/api/services"): AdminOperation(
        "The config's services by name, secrets masked",
        _object(
            {"object": {"const": "list"}, "data": {"type": "object", "additionalProperties": _ANY_OBJECT}},
            ["object", "data"],
        ),
    ),
    ("GET", "/admin/api/services/{service}"): AdminOperation(
        "One service of the config, secrets masked", _ANY_OBJECT, errors=(404,)
    ),
    ("PUT", "/admin/api/services/{service}"): AdminOperation(
        "Add or replace a service", _CONFIG_VERSION, body=_edit_body("service"), errors=_EDIT_ERRORS
    ),
    ("PATCH", "/admin/api/services/{service}"): AdminOperation(
        "Change some of a service's settings", _CONFIG_VERSION, body=_edit_body("changes"), errors=_EDIT_ERRORS
    ),
    ("DELETE", "/admin/api/services/{service}"): AdminOperation(
        "Remove a service",
        _CONFIG_VERSION,
        body=_edit_body(version_required=False),
        body_required=False,
        query=_DELETE_QUERY,
        errors=_EDIT_ERRORS,
    ),
    ("POST", "/admin/api/services/{service}/instances"): AdminOperation(
        "Add an instance to a service", _CONFIG_VERSION, body=_edit_body("instance"), errors=_EDIT_ERRORS
    ),
    ("PUT", "/admin/api/services/{service}/instances/{name}"): AdminOperation(
        "Replace an instance",
        _CONFIG_VERSION,
        body=_edit_body("instance"),
        query=_INSTANCE_QUERY,
        errors=_EDIT_ERRORS,
    ),
    ("PATCH", "/admin/api/services/{service}/instances/{name}"): AdminOperation(
        "Change some of an instance's settings",
        _CONFIG_VERSION,
        body=_edit_body("changes"),
        query=_INSTANCE_QUERY,
        errors=_EDIT_ERRORS,
    ),
    ("DELETE", "/admin/api/services/{service}/instances/{name}"): AdminOperation(
        "Remove an instance",
        _CONFIG_VERSION,
        body=_edit_body(version_required=False),
        body_required=False,
        query=(*_DELETE_QUERY, *_INSTANCE_QUERY),
        errors=_EDIT_ERRORS,
    ),
    # what the gateway is doing
    ("GET", "/admin/api/state"): AdminOperation(
        "Live state: instances (health, breaker, load, latency) and rate limits", _ref("LiveState")
    ),
    ("GET", "/admin/api/usage"): AdminOperation(
        "Usage totals, filtered and grouped (unknown query parameters are refused)",
        _object(
            {
                "object": {"const": "list"},
                "group_by": {"type": "string", "enum": list(GROUPS)},
                "since": {"type": ["number", "null"]},
                "until": {"type": ["number", "null"]},
                "data": {"type": "array", "items": _ref("UsageTotal")},
            },
            ["object", "group_by", "data"],
        ),
        query=(*_USAGE_FILTERS, Query("group_by", {"type": "string", "enum": list(GROUPS)})),
    ),
    ("GET", "/admin/api/usage/records"): AdminOperation(
        "Usage records, newest first (unknown query parameters are refused)",
        _list_of(_ref("UsageRecord")),
        query=(*_USAGE_FILTERS, Query("limit", _LIMIT)),
    ),
}


# --- admin paths ---------------------------------------------------------------------------------------------------


def _admin_operation(route: Route, spec: AdminOperation | None) -> Schema:
    if spec is None:
        # Not described yet (the unit test says so): listed without a body rather than missing from the document.
        spec = AdminOperation(f"{route.method} {route.template}", {})
    operation: Schema = {
        "operationId": f"admin_{route.handler.__name__}",
        "tags": ["admin"],
        "summary": spec.summary,
        "security": [{"adminToken": []}] if route.role is not None else [],
        "responses": {
            str(spec.status): _json_response("OK" if spec.status == 200 else "Created", spec.reply),
            **{str(status): _error_ref(status) for status in _admin_errors(route, spec)},
        },
    }
    if route.role is not None:
        operation["description"] = f"Least role: {route.role}."
    if parameters := _admin_parameters(route, spec):
        operation["parameters"] = parameters
    if spec.body is not None:
        operation["requestBody"] = {
            "required": spec.body_required,
            "content": {"application/json": {"schema": spec.body}},
        }
    return operation


def _admin_errors(route: Route, spec: AdminOperation) -> list[int]:
    """The error statuses a route can answer: its own, and those that follow from how it is called."""
    statuses = set(spec.errors)
    if spec.body is not None:
        statuses |= {400, 415}  # a malformed or invalid body; a body that is not JSON
    if spec.query:
        statuses.add(400)
    if route.role is not None:
        statuses.add(401)
        if ROLE_RANK[route.role] > min(ROLE_RANK.values()):
            statuses.add(403)  # a role below the route's
    statuses.add(503)  # the store (admins, tokens, keys, versions) is not available
    return sorted(statuses)


def _admin_parameters(route: Route, spec: AdminOperation) -> list[Schema]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
        for name in _template_names(route.template)
    ]
    for query in spec.query:
        parameter: Schema = {"name": query.name, "in": "query", "required": query.required, "schema": query.schema}
        if query.description:
            parameter["description"] = query.description
        parameters.append(parameter)
    return parameters


def _template_names(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{") and part.endswith("}")]


def _path_schema(name: str) -> Schema:
    return PATH_PARAMETERS.get(name, {"type": "string", "minLength": 1})


# --- /v1 paths -----------------------------------------------------------------------------------------------------

_STRING: Schema = {"type": "string"}
_FILE: Schema = {"type": "string", "contentMediaType": "application/octet-stream"}
_RESPONSE_FORMATS: Schema = {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt"]}

# Fields of each endpoint's body worth documenting that the gateway does not check (those it checks, with their
# types and ranges, come from dataplane/params.py and take precedence). It passes fields it does not interpret to the
# upstream unchanged, so bodies are open objects (docs/api.md, "What reaches the upstream").
_V1_FIELDS: Mapping[str, Mapping[str, Schema]] = {
    "chat": {
        "stream": {"description": "true: the answer comes as server-sent events"},
        "stream_options": {"type": "object"},
        "tools": {"type": "array"},
        "user": _STRING,
    },
    "completions": {"stream": {"description": "true: the answer comes as server-sent events"}},
    "embeddings": {"input": {"description": "text, a list of texts, or token ids"}},
    "speech": {"response_format": _STRING},
    "transcriptions": {"model": _STRING, "file": _FILE, "language": _STRING, "response_format": _RESPONSE_FORMATS},
    "translations": {"model": _STRING, "file": _FILE, "response_format": _RESPONSE_FORMATS},
    "image_generations": {
        "model": {"description": "optional when the service has one model"},
        "size": _STRING,
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
    },
    "image_edits": {
        "model": {**_STRING, "description": "optional when the service has one model"},
        "image": _FILE,
        "mask": _FILE,
        "prompt": _STRING,
        "size": _STRING,
    },
}

# The reply of each endpoint: JSON schema name, or the media types of a body the gateway passes through as is.
_V1_REPLIES: Mapping[str, str] = {
    "chat": "ChatCompletion",
    "completions": "TextCompletion",
    "embeddings": "EmbeddingList",
    "rerank": "RerankResult",
    "transcriptions": "Transcription",
    "translations": "Transcription",
    "image_generations": "ImagesResponse",
    "image_edits": "ImagesResponse",
}
_V1_ERRORS = (400, 401, 403, 404, 413, 415, 429)
# Bearer or X-API-Key when client keys are on (auth.enabled); the empty alternative: an open gateway needs none.
_CLIENT_SECURITY: list[Schema] = [{"clientKey": []}, {"clientApiKey": []}, {}]
_TYPE_SCHEMAS: Mapping[str, Schema] = {"string": _STRING, "array": {"type": "array"}, "object": {"type": "object"}}


def _v1_request_schema(endpoint: Endpoint) -> Schema:
    """The body: required fields from the endpoints table, the fields the front door checks with their rules
    (a description written here is kept beside the rule's schema), the rest documented."""
    documented = _V1_FIELDS.get(endpoint.name, {})
    properties = {name: {**documented.get(name, {}), **schema} for name, schema in field_schemas(endpoint).items()}
    for name, schema in documented.items():
        properties.setdefault(name, schema)
    for name, kind in endpoint.required:
        if kind == "file":
            properties.setdefault(name, _FILE)
        else:
            # "any": anything but null (the front door refuses a missing or null field).
            properties.setdefault(name, _TYPE_SCHEMAS.get(kind, {"not": {"type": "null"}}))
    schema = _object(properties, [name for name, _kind in endpoint.required], closed=False)
    schema["description"] = (
        "The gateway answers 400 before calling a backend when a required field is missing or a field it checks "
        "(docs/api.md, 'Parameters checked') has the wrong type or, unless its server.validate_parameters is "
        "false, a value outside that field's minimum, maximum or enum. Other fields pass through unchanged."
    )
    return schema


def _v1_operation(endpoint: Endpoint) -> Schema:
    media_type = "application/json" if endpoint.body == "json" else "multipart/form-data"
    return {
        "operationId": f"v1_{endpoint.name}",
        "tags": ["v1"],
        "summary": f"OpenAI-compatible {endpoint.path.removeprefix('/v1/')} (service: {endpoint.service})",
        "security": _CLIENT_SECURITY,
        "requestBody": {"required": True, "content": {media_type: {"schema": _v1_request_schema(endpoint)}}},
        "responses": {
            "200": _v1_success(endpoint),
            **{str(status): _error_ref(status) for status in _V1_ERRORS},
            "5XX": _error_ref(500),
        },
    }


def _v1_success(endpoint: Endpoint) -> Schema:
    if endpoint.output == "binary":
        return {"description": "The audio, streamed, in the upstream's content type", "content": {"audio/*": {}}}
    content: Schema = {"application/json": {"schema": _ref(_V1_REPLIES[endpoint.name])}}
    if endpoint.output == "sse":
        content["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": 'with "stream": true: `data: {...}` chunk events, ending with `data: [DONE]`; '
                'a failure after the first byte ends the stream with one `data: {"error": {...}}` event',
            }
        }
    if endpoint.body == "multipart":
        # Transcriptions answer text, srt or vtt when response_format asks for them.
        content["text/plain"] = {"schema": _STRING}
    return {"description": "The upstream's answer", "content": content}


def _models_paths() -> dict[str, Schema]:
    listing = {
        "operationId": "v1_list_models",
        "tags": ["v1"],
        "summary": "The model names and aliases this gateway serves (a restricted key sees only its own)",
        "security": _CLIENT_SECURITY,
        "responses": {"200": _json_response("OK", _list_of(_ref("Model"))), "401": _error_ref(401)},
    }
    one = {
        "operationId": "v1_retrieve_model",
        "tags": ["v1"],
        "summary": "One model name or alias",
        "security": _CLIENT_SECURITY,
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": _STRING}],
        "responses": {
            "200": _json_response("OK", _ref("Model")),
            "401": _error_ref(401),
            "404": _error_ref(404),
        },
    }
    return {"/v1/models": {"get": listing}, "/v1/models/{model}": {"get": one}}


# --- shared parts --------------------------------------------------------------------------------------------------

_ERROR_DESCRIPTIONS: Mapping[int, str] = {
    400: "Invalid request: malformed JSON, a missing, mistyped or unknown field (`param` names it)",
    401: "Missing, unknown, expired or revoked credentials",
    403: "The credentials do not allow this",
    404: "Not found: an unknown model or URL, or no such item",
    409: "Conflict with the current state",
    413: "Body larger than the configured limit",
    415: "Unsupported Content-Type",
    429: "Rate limit, quota or login throttle (see Retry-After)",
    500: "A gateway or upstream failure: 502 bad gateway, 503 unavailable, 504 timeout",
    503: "Unavailable: the store (or a store-backed config) is not available",
}


def _error_ref(status: int) -> Schema:
    return {"$ref": f"#/components/responses/Error{status}"}


def _json_response(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _components() -> Schema:
    return {
        "schemas": _component_schemas(),
        "responses": {
            f"Error{status}": _json_response(description, _ERROR_REF)
            for status, description in _ERROR_DESCRIPTIONS.items()
        },
        "securitySchemes": {
            "clientKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "A client API key, when the gateway has auth.enabled (/v1 only)",
            },
            "clientApiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "The same client API key, in X-API-Key instead of Authorization (/v1 only)",
            },
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An admin token from POST /admin/api/login (/admin/api only; client keys are refused)",
            },
        },
    }


def _component_schemas() -> dict[str, Schema]:
    return {**_error_schemas(), **_v1_schemas(), **_admin_schemas()}


def _error_schemas() -> dict[str, Schema]:
    nullable = {"type": ["string", "null"]}
    kind = {
        "type": "string",
        "description": "One of " + ", ".join(ERROR_TYPES) + " for every error the gateway makes; an upstream's own "
        "OpenAI-shaped error passes unchanged",
        "examples": list(ERROR_TYPES),
    }
    detail = _object(
        {"message": _STRING, "type": kind, "param": nullable, "code": nullable},
        ["message", "type", "param", "code"],
        closed=False,
    )
    return {"Error": _object({"error": detail}, ["error"], closed=False)}


def _openai_object(kind: str, properties: Mapping[str, Schema], required: Iterable[str]) -> Schema:
    """An OpenAI reply: its ``object`` names the kind; upstreams may add fields, which pass through."""
    return _object({"object": {"const": kind}, **properties}, ["object", *required], closed=False)


def _v1_schemas() -> dict[str, Schema]:
    usage = {"type": "object"}
    completion = {
        "id": _STRING,
        "created": {"type": "integer"},
        "model": _STRING,
        "choices": {"type": "array"},
        "usage": usage,
    }
    return {
        "ChatCompletion": _openai_object("chat.completion", completion, ["id", "model", "choices"]),
        "TextCompletion": _openai_object("text_completion", completion, ["id", "model", "choices"]),
        "EmbeddingList": _openai_object(
            "list",
            {
                "data": {
                    "type": "array",
                    "items": _openai_object(
                        "embedding",
                        {
                            "index": {"type": "integer"},
                            # base64: little-endian float32, whatever the backend returned
                            "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, _STRING]},
                        },
                        ["index", "embedding"],
                    ),
                },
                "model": _STRING,
                "usage": usage,
            },
            ["data"],
        ),
        "RerankResult": _object(
            {
                "id": _STRING,
                "model": _STRING,
                "results": {
                    "type": "array",
                    "items": _object(
                        {
                            "index": {"type": "integer"},
                            "score": {"type": "number"},
                            "relevance_score": {"type": "number", "description": "the same number as score"},
                            "document": {"description": "as the client sent it (with return_documents: true)"},
                        },
                        ["index", "score", "relevance_score"],
                        closed=False,
                    ),
                },
                "usage": _object({"total_tokens": {"type": "integer"}}, ["total_tokens"], closed=False),
            },
            ["id", "results", "model", "usage"],
            closed=False,
        ),
        "Transcription": _object({"text": _STRING}, ["text"], closed=False),
        "ImagesResponse": _object(
            {
                "created": {"type": "integer"},
                "data": {
                    "type": "array",
                    "items": _object({"url": _STRING, "b64_json": _STRING, "revised_prompt": _STRING}, closed=False),
                },
            },
            ["data"],
            closed=False,
        ),
        "Model": _openai_object(
            "model", {"id": _STRING, "created": {"type": "integer"}, "owned_by": _STRING}, ["id", "created", "owned_by"]
        ),
    }


def _admin_schemas() -> dict[str, Schema]:
    number: Schema = {"type": "number"}
    integer: Schema = {"type": "integer"}
    text = _STRING
    maybe_number: Schema = {"type": ["number", "null"]}
    key = {
        "id": integer,
        "name": text,
        "prefix": {**text, "description": "the first characters of the secret, to recognise it"},
        "enabled": {"type": "boolean"},
        "active": {"type": "boolean", "description": "enabled, not revoked and not expired"},
        "expires_at": maybe_number,
        "revoked_at": maybe_number,
        "models": {"type": "array", "items": text},
        "services": {"type": "array", "items": text},
        "quotas": {"type": "object"},
        "created_at": number,
        "updated_at": number,
    }
    admin = {
        "id": integer,
        "username": text,
        "role": _ROLE,
        "disabled": {"type": "boolean"},
        "created_at": number,
        "updated_at": number,
    }
    version = {
        "version": integer,
        "created_at": number,
        "author": text,
        "comment": text,
        "current": {"type": "boolean"},
    }
    totals = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "bytes_in", "bytes_out")
    maybe_integer: Schema = {"type": ["integer", "null"]}
    return {
        "Login": _object(
            {
                "token": text,
                "token_type": {"const": "bearer"},
                "expires_at": number,
                "username": text,
                "role": _ROLE,
            },
            ["token", "token_type", "expires_at", "username", "role"],
        ),
        "AdminUser": _object(admin, list(admin)),
        "Key": _object(key, list(key)),
        "KeyWithSecret": _object({**key, "secret": text}, [*key, "secret"]),
        "AuditEntry": _object(
            {"id": integer, "ts": number, "actor": text, "action": text, "target": text, "detail": {"type": "object"}},
            ["id", "ts", "actor", "action", "target", "detail"],
        ),
        "ConfigVersion": _object(version, list(version)),
        "ConfigView": _object(
            {
                "mode": {"type": "string", "enum": ["file", "store"]},
                "source": text,
                "version": maybe_integer,
                "config": {"type": "object"},
            },
            ["mode", "source", "version", "config"],
        ),
        "LiveState": _object(
            {
                "config_version": maybe_integer,
                "models": {"type": "array", "items": text},
                "instances": {"type": "array", "items": {"type": "object"}},
                "limits": {"type": "array", "items": {"type": "object"}},
                "concurrency": {"type": "object"},
            },
            ["config_version", "models", "instances", "limits"],
            closed=False,
        ),
        "UsageTotal": _object(
            {"key_id": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]}}
            | {name: integer for name in totals},
            ["key_id", "model", *totals],
        ),
        "UsageRecord": _object(
            {
                "id": maybe_integer,
                "ts": number,
                "model": text,
                "endpoint": text,
                "status": integer,
                "key_id": {"type": ["string", "null"]},
                "instance": {"type": ["string", "null"]},
                "latency_ms": maybe_number,
                "ttft_ms": maybe_number,
            }
            | {name: maybe_integer for name in ("prompt_tokens", "completion_tokens", "bytes_in", "bytes_out")},
            ["ts", "model", "endpoint", "status"],
            closed=False,
        ),
    }


# --- the document --------------------------------------------------------------------------------------------------


def build_openapi(
    routes: Iterable[Route] = ROUTES,
    endpoints: Iterable[Endpoint] = ENDPOINTS,
    operations: Mapping[tuple[str, str], AdminOperation] = ADMIN_OPERATIONS,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the given tables (by default the gateway's own). No ``servers``: paths are
    relative to wherever the document was fetched from, which is the gateway itself."""
    paths: dict[str, Schema] = {endpoint.path: {"post": _v1_operation(endpoint)} for endpoint in endpoints}
    paths.update(_models_paths())
    for route in routes:
        spec = operations.get((route.method, route.template))
        paths.setdefault(route.template, {})[route.method.lower()] = _admin_operation(route, spec)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "modelrouter",
            "version": __version__,
            "description": "An OpenAI-compatible AI model gateway (/v1) and its admin API (/admin/api).",
        },
        "tags": [
            {"name": "v1", "description": "The OpenAI-compatible API; see docs/api.md"},
            {"name": "admin", "description": "The admin API: keys, admin users, audit log, config, usage"},
        ],
        "paths": paths,
        "components": _components(),
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as served: built once per process (the tables it is made from do not change at run time)."""
    return orjson.dumps(build_openapi())
