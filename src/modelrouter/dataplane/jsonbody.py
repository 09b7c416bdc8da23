"""JSON request bodies: parsed once, and refused when nested deeper than ``MAX_DEPTH``.

Why a depth limit at all: orjson parses up to 1,024 levels but serialises only up to 254, so a body nested
255-1,024 deep used to parse, then fail when re-serialised for the upstream - a 500 with a traceback per request.
One limit, well below both, checked here at parse time, makes every such body the same 400, and leaves adapters
room to move parts of a body a few levels deeper when they translate it for their upstream.

The check must be cheap: it runs on every request of the hot path (thousands a second). Walking the parsed tree
in Python costs about as much as parsing it. Instead it asks orjson's serialiser, in C, with the body placed
under enough levels of lists that orjson's own recursion limit falls exactly at ``MAX_DEPTH`` (measured on a
29 KB chat body with tools: parsing 30 us, a Python walk 28 us, this 8 us); and small bodies, the usual
case, skip even that, by a bound: a body cannot be nested deeper than its number of ``[`` and ``{``.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from ..errors import InvalidRequest

__all__ = ["MAX_DEPTH", "parse_object"]

MAX_DEPTH = 128  # levels of arrays and objects, the body itself being the first

# Up to this size, counting brackets (~0.35 ns a byte for each of the two counts) is cheaper than serialising
# (~1 us at 1 KB); the two cross at about 2 KB, and beyond it serialising is the cheaper (a 4 MB body with an inline
# image: 2.1 ms to count, 0.3 ms to serialise).
_COUNT_UP_TO = 2048


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ``InvalidRequest`` (400): not JSON, not an object, or too deeply nested."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's own parse limit (1,024 levels) is past ours: the same answer as for any too-deep body.
        if str(exc).startswith("depth limit exceeded"):
            raise _too_deep() from None
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object")
    size = len(body)
    # Each level takes two bytes (its brackets), so a short body cannot be too deep; nor one with few brackets
    # (counted in strings too, which can only overcount).
    if size > 2 * MAX_DEPTH and (size > _COUNT_UP_TO or body.count(b"[") + body.count(b"{") > MAX_DEPTH):
        _check_depth(payload)
    return payload


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"The JSON body of your request is nested more than {MAX_DEPTH} levels deep", code="json_too_deep"
    )


def _serialise_limit() -> int:
    """The deepest value orjson serialises (254 in orjson 3.x), found once rather than assumed, so that a new
    orjson with another limit moves the check with it."""
    value: list[Any] = []
    depth = 1
    while True:
        try:
            orjson.dumps([value])
        except orjson.JSONEncodeError:
            return depth
        value = [value]
        depth += 1


_PAD = _serialise_limit() - MAX_DEPTH  # levels of lists above the body, so that orjson fails exactly past ours
assert _PAD >= 1, "orjson serialises no more levels than MAX_DEPTH"
_local = threading.local()  # one nest of lists per thread: it is filled in and emptied around each check


def _check_depth(payload: dict[str, Any]) -> None:
    nest = getattr(_local, "nest", None)
    if nest is None:
        # Built once per thread: building 126 lists per request would cost more than the check itself.
        inner: list[Any] = [None]
        outer = inner
        for _ in range(_PAD - 1):
            outer = [outer]
        nest = _local.nest = (outer, inner)
    outer, inner = nest
    inner[0] = payload
    try:
        orjson.dumps(outer)
    except orjson.JSONEncodeError:
        # Nothing orjson parsed fails to serialise other than by depth.
        raise _too_deep() from None
    finally:
        inner[0] = None  # the request's body is not kept alive by the nest
