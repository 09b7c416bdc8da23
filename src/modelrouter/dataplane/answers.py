"""A non-streamed answer made ready for the client: checked to be what its endpoint answers (JSON for JSON
endpoints), translated from the backend's dialect, and given a ``usage`` when the backend reported none."""

from __future__ import annotations

import logging

import orjson

from ..access.usage import add_usage, lacks_usage, with_usage
from ..errors import GatewayError, UpstreamInvalid, UpstreamInvalidResponse, echo
from ..routing.instance import Instance
from ..speedups import JSON_INVALID, JSON_UNKNOWN, JSON_WITHOUT_USAGE, json_kind
from .context import Call
from .postprocess import RerankShape

__all__ = ["ESTIMATED", "claims_json", "invalid", "is_json", "translate"]

log = logging.getLogger("modelrouter.pipeline")

# Answers whose usage the gateway counts when the upstream reports none, and the header that then says so.
_COUNTED = frozenset({"chat", "completions", "embeddings"})
ESTIMATED = (b"x-modelrouter-usage", b"estimated")


def translate(call: Call, instance: Instance, raw: bytes, check: bool) -> tuple[bytes | None, bool]:
    """The answer in the endpoint's shape (None: ``raw`` as it is) and whether its usage is the gateway's
    estimate; a 2xx that is not what the endpoint answers raises."""
    endpoint, payload = call.endpoint, call.payload
    assert isinstance(payload, dict)
    estimated = False
    try:
        translated = instance.adapter.response_body(endpoint, payload, raw)
        if call.post is not None:
            translated = call.post.apply(translated if translated is not None else raw)
            estimated = isinstance(call.post, RerankShape) and call.post.estimated
        # An answer without usage (some servers never report it) gets the gateway's count, marked as such.
        counted = None
        if check and translated is None:
            # Passed through byte for byte, so nothing parsed it on the way (a translation, the embeddings
            # and rerank post-processing do): the whole body must be checked, as garbage may be anywhere in
            # it (a peek at the first and last byte passes a truncated or spliced answer). json_kind scans it
            # without building objects, ~3x faster than orjson.loads (docs/resilience.md), and tells whether
            # the usage is there; only an answer that lacks it is parsed, to add it.
            kind = json_kind(raw)
            if kind == JSON_INVALID:
                raise _NotJSON
            if kind == JSON_UNKNOWN or (kind == JSON_WITHOUT_USAGE and endpoint.name in _COUNTED):
                data = orjson.loads(raw)
                if endpoint.name in _COUNTED and isinstance(data, dict):
                    counted = add_usage(endpoint.name, payload, data)
        elif endpoint.name in _COUNTED and translated is not None and lacks_usage(translated):
            counted = with_usage(endpoint.name, payload, translated)
        if counted is not None:
            translated, estimated = counted, True
    except (orjson.JSONDecodeError, _NotJSON):
        raise invalid(instance, call, "not valid JSON") from None
    except GatewayError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: the backend sent an invalid answer: %s", instance.id, exc)
        raise UpstreamInvalid(f"the backend sent an invalid answer: {exc} (model '{echo(call.model)}')") from None
    return translated, estimated


def invalid(instance: Instance, call: Call, what: str) -> UpstreamInvalidResponse:
    """A 2xx that is not what the endpoint answers: the instance is broken (the attempt's caller judges it a
    failure), and the error is retryable, so the request fails over."""
    log.warning("%s: the backend sent a 2xx answer that is %s", instance.id, what)
    return UpstreamInvalidResponse(f"the backend sent an answer that is {what} (model '{echo(call.model)}')")


class _NotJSON(Exception):
    """An answer the compiled scan found not to be JSON (what orjson.JSONDecodeError says when it parses)."""


def is_json(raw: bytes) -> bool:
    kind = json_kind(raw)
    if kind != JSON_UNKNOWN:
        return kind != JSON_INVALID
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def claims_json(content_type: str | None) -> bool:
    """Whether a content type says JSON (application/json, application/*+json), parameters aside."""
    if content_type is None:
        return False
    mime = content_type.partition(";")[0].strip().lower()
    return mime.endswith(("/json", "+json"))
