"""The admin API's vocabulary, declared once and read twice: the handlers' request bodies and query strings are
validated from these pydantic models (``Body``, ``Query``) and the OpenAPI builder documents them from the same
models, so what is checked and what is documented cannot drift apart. Also here: how a validation error reads (in
the API document's words, with ``param`` naming the field), the path parameters' schemas, and the JSON schemas of
the replies the document references.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..config.model import SERVICE_NAMES, Config
from ..errors import InvalidRequest, echo
from ..store.records import MIN_PASSWORD_LENGTH, ROLES

__all__ = [
    "MAX_COMMENT",
    "MAX_NAME_LENGTH",
    "MAX_TIME",
    "PATH_PARAMETERS",
    "REPLIES",
    "SECTIONS",
    "Body",
    "Comment",
    "Limit",
    "LoginPassword",
    "Name",
    "NewPassword",
    "NonBlank",
    "Query",
    "Schema",
    "UnixTime",
    "Username",
    "VersionNumber",
    "list_of",
    "obj",
    "ref",
    "validated",
]

Schema = dict[str, Any]
M = TypeVar("M", bound=BaseModel)

MAX_NAME_LENGTH = 200
MAX_PASSWORD_LENGTH = 1024
MAX_COMMENT = 500
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last time a database timestamp column holds
SECTIONS = tuple(name for name in Config.model_fields if name != "services")  # services have their own routes


# --- what requests carry ------------------------------------------------------------------------------------------


class Body(BaseModel):
    """A JSON request body. Unknown fields are errors, as in the config file (a misspelt ``expires_at`` must not
    make a key that never expires), and values are taken as sent: ``"5"`` is not a number, ``true`` is not 1."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Query(BaseModel):
    """A query string. Every value arrives as text, so numbers are parsed from it; unknown parameters are ignored
    unless a model refuses them (``extra="forbid"``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


# Patterns are searched, as JSON Schema's are: NOT_BLANK asks for one character that is not a space.
NOT_BLANK = r"\S"
NO_OUTER_SPACE = r"^\S(?:[\s\S]*\S)?$"
_PATTERN_PROBLEMS = {
    NOT_BLANK: "must have a character other than a space",
    # A name that looks the same as another must not be a second account.
    NO_OUTER_SPACE: "must not start or end with spaces",
}

NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=NOT_BLANK)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NOT_BLANK)]
Username = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NO_OUTER_SPACE)]
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_LENGTH, pattern=NOT_BLANK)]
NewPassword = Annotated[
    str, StringConstraints(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH, pattern=NOT_BLANK)
]
Comment = Annotated[str, StringConstraints(max_length=MAX_COMMENT)]
UnixTime = Annotated[float, Field(ge=0, le=MAX_TIME, allow_inf_nan=False, description="unix time in seconds")]
# Version numbers are matched as at most nine digits in paths (admin/calls.py), and the same range elsewhere.
VersionNumber = Annotated[int, Field(ge=0, le=999_999_999)]
Limit = Annotated[int, Field(ge=1, le=1000)]


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """``data`` as ``model``, or the first problem with it as a 400 (unknown fields first: a misspelt name
    explains the "missing" error that follows from it)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _problem(exc, model, "query parameter(s)" if issubclass(model, Query) else "field(s)") from None


def _problem(exc: ValidationError, model: type[BaseModel], things: str) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    if unknown := [e["loc"] for e in errors if e["type"] == "extra_forbidden"]:
        names = ", ".join(_where(loc) for loc in unknown)
        return InvalidRequest(
            f"unknown {things}: {echo(names)}", param=echo(_param(unknown[0])), code="unknown_parameter"
        )
    error = errors[0]
    where, param = _where(error["loc"]), _param(error["loc"])
    if error["type"] == "missing":
        field = model.model_fields.get(str(error["loc"][0]))
        hint = f" ({field.description})" if field is not None and field.description and len(error["loc"]) == 1 else ""
        return InvalidRequest(
            f"Invalid request: missing required parameter '{where}'{hint}", param=param, code="missing_parameter"
        )
    pattern = (error.get("ctx") or {}).get("pattern")
    problem = _PATTERN_PROBLEMS.get(pattern, error["msg"]) if isinstance(pattern, str) else error["msg"]
    code = "invalid_type" if error["type"].endswith("_type") else "invalid_value"
    return InvalidRequest(f"{echo(where)}: {problem.removeprefix('Value error, ')}", param=param, code=code)


def _where(loc: tuple[int | str, ...]) -> str:
    """``quotas.daily_tokens``, ``services[1]``: where in the input the problem is."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _param(loc: tuple[int | str, ...]) -> str:
    """The field ``param`` names: an item of a list is its list's problem (``services``, not ``services[1]``)."""
    names: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        names.append(part)
    return ".".join(names)


# --- the OpenAPI document's pieces --------------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Mapping[str, Schema], required: Any = (), *, closed: bool = True) -> Schema:
    """A JSON object; ``closed``: it has no fields besides these."""
    schema: Schema = {"type": "object", "properties": dict(properties)}
    if required := list(required):
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def list_of(item: Schema) -> Schema:
    """The ``{"object": "list", "data": [...]}`` envelope OpenAI uses, and the admin API with it."""
    return obj({"object": {"const": "list"}, "data": {"type": "array", "items": item}}, ["object", "data"])


# Path parameters by name. ``{id}`` and ``{version}`` only match digits (admin/calls.py); the rest match one path
# segment. Services and sections are the names the config model knows: others are 404.
PATH_PARAMETERS: Mapping[str, Schema] = {
    "id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1, "description": "a client key's id"},
    "version": {"type": "integer", "minimum": 0, "maximum": 999_999_999, "description": "a config version number"},
    "username": {"type": "string", "minLength": 1, "description": "an admin user's name"},
    "section": {"type": "string", "enum": list(SECTIONS), "description": "a top-level config section"},
    "service": {"type": "string", "enum": list(SERVICE_NAMES), "description": "a service of the config"},
    "name": {"type": "string", "minLength": 1, "description": "an instance's name (its model name)"},
}


def _replies() -> dict[str, Schema]:
    """The shapes of the records the API answers with (the views in admin/calls.py and the handlers)."""
    number: Schema = {"type": "number"}
    integer: Schema = {"type": "integer"}
    text: Schema = {"type": "string"}
    role: Schema = {"type": "string", "enum": list(ROLES)}
    maybe_number: Schema = {"type": ["number", "null"]}
    maybe_integer: Schema = {"type": ["integer", "null"]}
    maybe_text: Schema = {"type": ["string", "null"]}
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
        "limits": {"type": "array", "items": {"type": "object"}, "description": "rate limits of this key alone"},
        "created_at": number,
        "updated_at": number,
    }
    admin = {
        "id": integer,
        "username": text,
        "role": role,
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
    return {
        "Login": obj(
            {"token": text, "token_type": {"const": "bearer"}, "expires_at": number, "username": text, "role": role},
            ["token", "token_type", "expires_at", "username", "role"],
        ),
        "AdminUser": obj(admin, list(admin)),
        "Key": obj(key, list(key)),
        "KeyWithSecret": obj({**key, "secret": text}, [*key, "secret"]),
        "AuditEntry": obj(
            {"id": integer, "ts": number, "actor": text, "action": text, "target": text, "detail": {"type": "object"}},
            ["id", "ts", "actor", "action", "target", "detail"],
        ),
        "ConfigVersion": obj(version, list(version)),
        "ConfigView": obj(
            {
                "mode": {"type": "string", "enum": ["file", "store"]},
                "source": text,
                "version": maybe_integer,
                "config": {"type": "object"},
            },
            ["mode", "source", "version", "config"],
        ),
        "LiveState": obj(
            {
                "replica": {**text, "description": "MODELROUTER_REPLICA_ID, else the host name"},
                "config_version": maybe_integer,
                "models": {"type": "array", "items": text},
                "instances": {"type": "array", "items": {"type": "object"}},
                "limits": {"type": "array", "items": {"type": "object"}},
                "concurrency": {"type": "object"},
            },
            ["replica", "config_version", "models", "instances", "limits"],
            closed=False,
        ),
        "UsageTotal": obj(
            {
                "key_id": maybe_text,
                "key_name": maybe_text,
                "model": maybe_text,
                "day": {**text, "description": "YYYY-MM-DD, with per=day"},
            }
            | {name: integer for name in totals}
            | {"last_used": maybe_number},
            ["key_id", "key_name", "model", *totals, "last_used"],
        ),
        "UsageRecord": obj(
            {
                "id": maybe_integer,
                "ts": number,
                "model": text,
                "endpoint": text,
                "status": integer,
                "key_id": maybe_text,
                "instance": maybe_text,
                "latency_ms": maybe_number,
                "ttft_ms": maybe_number,
            }
            | {name: maybe_integer for name in ("prompt_tokens", "completion_tokens", "bytes_in", "bytes_out")},
            ["ts", "model", "endpoint", "status"],
            closed=False,
        ),
    }


REPLIES: Mapping[str, Schema] = _replies()
