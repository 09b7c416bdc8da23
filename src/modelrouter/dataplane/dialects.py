"""Front doors in other APIs' shapes: ``/v1/messages`` (Anthropic Messages, ``messages_api.py``). A request of such
an endpoint becomes a request of the endpoint it ``serves`` (chat), routed, limited, metered and failed over like
any; its answer, whole or streamed, and its errors come back in the front door's shape."""

from __future__ import annotations

from typing import Any

from ..endpoints import ENDPOINTS, Endpoint
from ..errors import GatewayError
from . import messages_api as messages
from .responses import Response, StreamResponse

__all__ = ["SERVED", "answer", "error_body", "to_served"]

SERVED: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS if e.serves is None}


def to_served(endpoint: Endpoint, payload: dict[str, Any]) -> tuple[Endpoint, dict[str, Any]]:
    """The endpoint and request the gateway routes for a front-door request."""
    assert endpoint.serves is not None
    return SERVED[endpoint.serves], messages.request_to_chat(payload)


def answer(
    endpoint: Endpoint, result: Response | StreamResponse, model: str, max_event: int
) -> Response | StreamResponse:
    """The routed answer in the front door's shape: a success translated (a stream event by event)."""
    if isinstance(result, StreamResponse):
        result.post = messages.ChunksToEvents(model, max_event)
        result.error_event = messages.error_event
        return result
    if 200 <= result.status < 300:
        headers = [(k, v) for k, v in result.headers if k != b"content-type"]
        return Response(
            result.status,
            [(b"content-type", b"application/json"), *headers],
            messages.answer_to_message(result.body, model),
        )
    return result


def error_body(endpoint: Endpoint, exc: GatewayError) -> bytes:
    return messages.error_body(exc)
