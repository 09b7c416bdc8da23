"""Front doors in other APIs' shapes: ``/v1/messages`` (Anthropic Messages, ``messages_api.py``) and
``/v1/responses`` (OpenAI Responses, ``responses_api.py``). A request of such an endpoint becomes a request of the
endpoint it ``serves`` (chat), routed, limited, metered and failed over like any; its answer, whole or streamed,
and its errors come back in the front door's shape."""

from __future__ import annotations

from typing import Any

from ..endpoints import ENDPOINTS, Endpoint
from ..errors import GatewayError
from . import messages_api, responses_api
from .responses import Response, StreamResponse

__all__ = ["SERVED", "answer", "error_body", "to_served"]

SERVED: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS if e.serves is None}


def to_served(endpoint: Endpoint, payload: dict[str, Any]) -> tuple[Endpoint, dict[str, Any]]:
    """The endpoint and request the gateway routes for a front-door request."""
    assert endpoint.serves is not None
    if endpoint.dialect == "anthropic":
        return SERVED[endpoint.serves], messages_api.request_to_chat(payload)
    return SERVED[endpoint.serves], responses_api.request_to_chat(payload)


def answer(
    endpoint: Endpoint, result: Response | StreamResponse, request: dict[str, Any], max_event: int
) -> Response | StreamResponse:
    """The routed answer in the front door's shape (``request`` as the client sent it): a success translated, a
    stream event by event."""
    anthropic = endpoint.dialect == "anthropic"
    if isinstance(result, StreamResponse):
        if result.native:  # the backend spoke the front door's dialect: its own events pass
            if anthropic:
                result.error_event = messages_api.error_event
            return result
        if anthropic:
            result.post = messages_api.ChunksToEvents(str(request.get("model")), max_event)
            result.error_event = messages_api.error_event
        else:
            result.post = responses_api.ChunksToResponseEvents(request, max_event)
            result.error_event = responses_api.error_event
        return result
    if not 200 <= result.status < 300:
        return result
    if result.native is not None:
        return Response(result.status, [(b"content-type", b"application/json")], result.native)
    if anthropic:
        body = messages_api.answer_to_message(result.body, str(request.get("model")))
    else:
        body = responses_api.answer_to_response(result.body, request)
    headers = [(k, v) for k, v in result.headers if k != b"content-type"]
    return Response(result.status, [(b"content-type", b"application/json"), *headers], body)


def error_body(endpoint: Endpoint, exc: GatewayError) -> bytes:
    """An error on a front door's path, in its API's shape (Responses errors are OpenAI's)."""
    return messages_api.error_body(exc) if endpoint.dialect == "anthropic" else exc.body()
