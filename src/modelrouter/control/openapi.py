"""The OpenAPI 3.1 document of the gateway's two HTTP APIs: the OpenAI-compatible ``/v1`` data plane and the admin
API under ``/admin/api``. Served at ``GET /openapi.json`` (``dataplane/front.py``) with no auth: it describes, it grants
nothing.

Built from the tables the gateway routes by, so that it cannot drift from them: ``/v1`` paths come from
``endpoints.ENDPOINTS`` (bodies from the rules the front door checks), admin paths from ``admin.ROUTES``, where
each route declares its role, body and query models (the same models its input is validated from), summary, reply
and particular errors. This module assembles them.

Why this module is long: besides the builder, it describes what no table in the code holds for ``/v1``: the
fields worth documenting that the front door does not check, and the shapes of OpenAI's replies.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel

from .._version import __version__
from ..admin import ROLE_RANK, ROUTES, Route
from ..admin.schema import PATH_PARAMETERS, REPLIES, Schema, list_of, obj, ref
from ..dataplane.params import field_schemas
from ..endpoints import ENDPOINTS, Endpoint
from ..errors import ERROR_TYPES

__all__ = ["build_openapi", "openapi_json"]

OPENAPI_VERSION = "3.1.0"
_ERROR_REF = ref("Error")
_REF_TEMPLATE = "#/components/schemas/{model}"


# --- admin paths ---------------------------------------------------------------------------------------------------


def model_schema(model: type[BaseModel], definitions: dict[str, Schema]) -> Schema:
    """A body or query model's JSON schema, its nested models moved to ``definitions`` (the components)."""
    schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
    nested: dict[str, Schema] = schema.pop("$defs", {})
    assert not nested.keys() & REPLIES.keys(), f"{model.__name__} nests a model named like a reply"
    definitions.update(nested)
    return schema


def _admin_operation(route: Route, definitions: dict[str, Schema]) -> Schema:
    operation: Schema = {
        "operationId": f"admin_{route.handler.__name__}",
        "tags": ["admin"],
        "summary": route.summary,
        "security": [{"adminToken": []}] if route.role is not None else [],
        "responses": {
            str(route.status): _json_response("OK" if route.status == 200 else "Created", route.reply),
            **{str(status): _error_ref(status) for status in _admin_errors(route)},
        },
    }
    description = " ".join(part for part in (f"Least role: {route.role}." if route.role else "", route.notes) if part)
    if description:
        operation["description"] = description
    if parameters := _admin_parameters(route, definitions):
        operation["parameters"] = parameters
    if route.body is not None:
        body = model_schema(route.body, definitions)
        operation["requestBody"] = {
            "required": bool(body.get("required")),  # a body whose fields are all optional may be left out
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _admin_errors(route: Route) -> list[int]:
    """The error statuses a route can answer: its own, and those that follow from how it is called."""
    statuses = set(route.errors)
    if route.body is not None:
        statuses |= {400, 415}  # a malformed or invalid body; a body that is not JSON
    if route.query is not None:
        statuses.add(400)
    if route.role is not None:
        statuses.add(401)
        if ROLE_RANK[route.role] > min(ROLE_RANK.values()):
            statuses.add(403)  # a role below the route's
    statuses.add(503)  # the store (admins, tokens, keys, versions) is not available
    return sorted(statuses)


def _admin_parameters(route: Route, definitions: dict[str, Schema]) -> list[Schema]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(name, _STRING)}
        for name in _template_names(route.template)
    ]
    if route.query is not None:
        properties = model_schema(route.query, definitions)["properties"]
        for name, field in route.query.model_fields.items():
            key = field.alias or name
            schema = dict(properties[key])
            parameter: Schema = {"name": key, "in": "query", "required": field.is_required()}
            if description := schema.pop("description", None):
                parameter["description"] = description
            parameters.append({**parameter, "schema": schema})
    return parameters


def _template_names(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{") and part.endswith("}")]


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
    "messages": "Message",
    "responses": "ResponseObject",
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
    schema = obj(properties, [name for name, _kind in endpoint.required], closed=False)
    schema["description"] = (
        "The gateway answers 400 before calling a backend when a required field is missing or a field it checks "
        "(docs/api.md, 'Parameters checked') has the wrong type or, unless its server.validate_parameters is "
        "false, a value outside that field's minimum, maximum or enum. Other fields pass through unchanged."
    )
    return schema


def _v1_operation(endpoint: Endpoint) -> Schema:
    media_type = "application/json" if endpoint.body == "json" else "multipart/form-data"
    summary = f"OpenAI-compatible {endpoint.path.removeprefix('/v1/')} (service: {endpoint.service})"
    error = _error_ref
    if endpoint.dialect == "anthropic":
        summary = "Anthropic Messages API, routed like chat to any backend (docs/api.md#messages)"
        error = _anthropic_error_ref
    elif endpoint.dialect == "responses":
        summary = "OpenAI Responses API, routed like chat to any backend (docs/api.md#responses)"
    return {
        "operationId": f"v1_{endpoint.name}",
        "tags": ["v1"],
        "summary": summary,
        "security": _CLIENT_SECURITY,
        "requestBody": {"required": True, "content": {media_type: {"schema": _v1_request_schema(endpoint)}}},
        "responses": {
            "200": _v1_success(endpoint),
            **{str(status): error(status) for status in _V1_ERRORS},
            "5XX": error(500),
        },
    }


def _anthropic_error_ref(status: int) -> Schema:
    return {
        "description": f"HTTP {status}, as Anthropic's error object",
        "content": {"application/json": {"schema": ref("AnthropicError")}},
    }


def _count_tokens_path() -> dict[str, Schema]:
    request = obj(
        {"model": _STRING, "messages": {"type": "array"}, "system": {}, "tools": {"type": "array"}},
        ["model", "messages"],
        closed=False,
    )
    operation = {
        "operationId": "v1_messages_count_tokens",
        "tags": ["v1"],
        "summary": "The gateway's estimate of a Messages request's input tokens (no backend is asked)",
        "security": _CLIENT_SECURITY,
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": _json_response("OK", obj({"input_tokens": {"type": "integer"}}, ["input_tokens"])),
            **{str(status): _anthropic_error_ref(status) for status in (400, 401, 404, 413)},
        },
    }
    return {"/v1/messages/count_tokens": {"post": operation}}


def _v1_success(endpoint: Endpoint) -> Schema:
    if endpoint.output == "binary":
        return {"description": "The audio, streamed, in the upstream's content type", "content": {"audio/*": {}}}
    content: Schema = {"application/json": {"schema": ref(_V1_REPLIES[endpoint.name])}}
    if endpoint.output == "sse":
        events = (
            'with "stream": true: Anthropic\'s events, message_start to message_stop; a failure after the first byte '
            "ends the stream with an `event: error`"
            if endpoint.dialect == "anthropic"
            else 'with "stream": true: the Responses events, response.created to response.completed (or '
            "response.incomplete); a failure after the first byte ends the stream with an `event: error`"
            if endpoint.dialect == "responses"
            else 'with "stream": true: `data: {...}` chunk events, ending with `data: [DONE]`; a failure after the '
            'first byte ends the stream with one `data: {"error": {...}}` event'
        )
        content["text/event-stream"] = {"schema": {"type": "string", "description": events}}
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
        "responses": {"200": _json_response("OK", list_of(ref("Model"))), "401": _error_ref(401)},
    }
    one = {
        "operationId": "v1_retrieve_model",
        "tags": ["v1"],
        "summary": "One model name or alias",
        "security": _CLIENT_SECURITY,
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": _STRING}],
        "responses": {
            "200": _json_response("OK", ref("Model")),
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


def _components(definitions: Mapping[str, Schema]) -> Schema:
    return {
        "schemas": {**_error_schemas(), **_v1_schemas(), **REPLIES, **definitions},
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


def _error_schemas() -> dict[str, Schema]:
    nullable = {"type": ["string", "null"]}
    kind = {
        "type": "string",
        "description": "One of " + ", ".join(ERROR_TYPES) + " for every error the gateway makes; an upstream's own "
        "OpenAI-shaped error passes unchanged",
        "examples": list(ERROR_TYPES),
    }
    problem = obj({"param": nullable, "message": _STRING}, ["param", "message"])
    problems = {
        "type": "array",
        "items": problem,
        "description": "invalid_config only: every problem of the proposed config, each at its path",
    }
    detail = obj(
        {"message": _STRING, "type": kind, "param": nullable, "code": nullable, "problems": problems},
        ["message", "type", "param", "code"],
        closed=False,
    )
    anthropic = obj({"type": {"enum": list(ERROR_TYPES)}, "message": _STRING}, ["type", "message"], closed=False)
    return {
        "Error": obj({"error": detail}, ["error"], closed=False),
        "AnthropicError": obj({"type": {"const": "error"}, "error": anthropic}, ["type", "error"], closed=False),
    }


def _openai_object(kind: str, properties: Mapping[str, Schema], required: Iterable[str]) -> Schema:
    """An OpenAI reply: its ``object`` names the kind; upstreams may add fields, which pass through."""
    return obj({"object": {"const": kind}, **properties}, ["object", *required], closed=False)


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
        "ResponseObject": obj(
            {
                "id": _STRING,
                "object": {"const": "response"},
                "created_at": {"type": "integer"},
                "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
                "model": _STRING,
                "output": {"type": "array", "description": "message and function_call items"},
                "usage": {"type": ["object", "null"]},
            },
            ["id", "object", "status", "model", "output"],
            closed=False,
        ),
        "Message": obj(
            {
                "id": _STRING,
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": _STRING,
                "content": {"type": "array", "description": "text and tool_use blocks"},
                "stop_reason": {"type": ["string", "null"]},
                "stop_sequence": {"type": ["string", "null"]},
                "usage": obj(
                    {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}, [], closed=False
                ),
            },
            ["id", "type", "role", "model", "content"],
            closed=False,
        ),
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
        "RerankResult": obj(
            {
                "id": _STRING,
                "model": _STRING,
                "results": {
                    "type": "array",
                    "items": obj(
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
                "usage": obj({"total_tokens": {"type": "integer"}}, ["total_tokens"], closed=False),
            },
            ["id", "results", "model", "usage"],
            closed=False,
        ),
        "Transcription": obj({"text": _STRING}, ["text"], closed=False),
        "ImagesResponse": obj(
            {
                "created": {"type": "integer"},
                "data": {
                    "type": "array",
                    "items": obj({"url": _STRING, "b64_json": _STRING, "revised_prompt": _STRING}, closed=False),
                },
            },
            ["data"],
            closed=False,
        ),
        "Model": _openai_object(
            "model", {"id": _STRING, "created": {"type": "integer"}, "owned_by": _STRING}, ["id", "created", "owned_by"]
        ),
    }


# --- the document --------------------------------------------------------------------------------------------------


def build_openapi(routes: Iterable[Route] = ROUTES, endpoints: Iterable[Endpoint] = ENDPOINTS) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the given tables (by default the gateway's own). No ``servers``: paths are
    relative to wherever the document was fetched from, which is the gateway itself."""
    paths: dict[str, Schema] = {endpoint.path: {"post": _v1_operation(endpoint)} for endpoint in endpoints}
    paths.update(_models_paths())
    paths.update(_count_tokens_path())
    definitions: dict[str, Schema] = {}  # the models nested in admin bodies
    for route in routes:
        paths.setdefault(route.template, {})[route.method.lower()] = _admin_operation(route, definitions)
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
        "components": _components(definitions),
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as served: built once per process (the tables it is made from do not change at run time)."""
    return orjson.dumps(build_openapi())
