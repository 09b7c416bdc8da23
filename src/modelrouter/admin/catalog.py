"""Admin route for what the public API serves now: its endpoints, the model names each takes, and whether client
keys are required (the console's playground builds its forms from it)."""

from __future__ import annotations

from ..errors import GatewayError
from .calls import Call, Reply, Routes
from .schema import Schema, obj

__all__ = ["endpoints", "routes"]

routes = Routes()

_TEXT: Schema = {"type": "string"}
_ENDPOINT: Schema = obj(
    {
        "endpoint": _TEXT,
        "service": _TEXT,
        "path": {**_TEXT, "description": "the path a client POSTs to, e.g. /v1/chat/completions"},
        "body": {"type": "string", "enum": ["json", "multipart"]},
        "dialect": {**_TEXT, "description": "openai: the gateway's own API; anthropic, responses: other doors"},
        "models": {
            "type": "array",
            "items": _TEXT,
            "description": "the names this endpoint takes (models, then aliases); a restricted key may use fewer",
        },
    },
    ["endpoint", "service", "path", "body", "dialect", "models"],
)
_ENDPOINTS: Schema = obj(
    {
        "object": {"const": "list"},
        "client_keys_required": {"type": "boolean", "description": "auth.enabled: every /v1 request needs a key"},
        "key_refresh_s": {
            "type": "number",
            "description": "store.refresh_interval: a key created now is honoured within this many seconds",
        },
        "data": {"type": "array", "items": _ENDPOINT},
    },
    ["object", "client_keys_required", "key_refresh_s", "data"],
)


@routes("GET", "/admin/api/endpoints", "viewer", reply=_ENDPOINTS)
async def endpoints(call: Call) -> Reply:
    """The public API's endpoints: path, body kind and the model names each takes now; whether keys are required.

    GET /v1/models lists every name a key may use without saying which endpoint serves it; this says which."""
    if call.endpoints is None:
        raise GatewayError("the endpoint list is not available in this process")
    return 200, call.endpoints()
