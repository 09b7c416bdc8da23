"""Optional compiled helpers (``_speedups.c``), or None where they were not built.

Metrics and the access log cost every request something; in pure Python most of it went into two things:
reading an answer's token usage (a reverse search, a regular expression, two ``int()`` calls) and writing the
access-log lines (a 15-key dict per request and its encoding). ``_speedups.c`` does both in C, several times
cheaper (docs/observability.md has the figures). It also checks that an answer passed through is JSON without
parsing it into objects (``json_kind``; docs/resilience.md), and runs the in-process limiter's token-bucket steps
(``token_take_all``, ``token_adjust_all``; docs/access.md). It is built when the project is installed if a C
compiler is there (setup.py). Without it, or with ``MODELROUTER_NO_SPEEDUPS=1`` in the environment, callers take their
pure-Python paths, which are the reference: the compiled functions return None for anything they do not handle
exactly as those do, and the tests compare the two byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "JSON_INVALID",
    "JSON_OTHER",
    "JSON_UNKNOWN",
    "JSON_WITHOUT_USAGE",
    "JSON_WITH_USAGE",
    "json_kind",
    "json_lines",
    "token_adjust_all",
    "token_take_all",
    "usage",
]

# usage(body) -> (prompt, completion) | None: the answer's last "usage" object when it is written compactly
# with prompt_tokens first (OpenAI, vLLM, llama.cpp...); usage.usage_from_body reads every other form.
usage: Callable[[bytes], tuple[int, int] | None] | None = None
# json_lines(keys, rows) -> bytes | None: one JSON object per row, a line each; floats written floored to
# 3 decimals; None for a value it does not write exactly as orjson would (observe.AccessLog then encodes).
json_lines: Callable[[tuple[str, ...], list[tuple[Any, ...]]], bytes | None] | None = None

# json_kind(body) -> one of these: whether body is one JSON document exactly as orjson.loads accepts it, and
# whether it is an object whose top-level "usage" is an object, found without building anything (the gateway
# checks every answer it passes through byte for byte). UNKNOWN: parse it to know (a number that may overflow a
# double, a top-level key with escapes, not a bytes object, or the helpers are not built).
JSON_UNKNOWN, JSON_INVALID, JSON_OTHER, JSON_WITH_USAGE, JSON_WITHOUT_USAGE = -1, 0, 1, 2, 3


def _json_kind_unknown(body: bytes) -> int:
    return JSON_UNKNOWN


json_kind: Callable[[bytes], int] = _json_kind_unknown

# token_take_all(entries, items, now, Decision) -> (refusal, decisions) | None and
# token_adjust_all(entries, items, now) -> True | None: limits/memory.py's take_all and adjust_all for
# buckets that are all token buckets stepped before (an entry whose ``bucket`` names the same rule object, a
# state of floats); None, with no state touched, for anything else. Every request with limits runs them.
token_take_all: Callable[..., Any] | None = None
token_adjust_all: Callable[..., Any] | None = None

if os.environ.get("MODELROUTER_NO_SPEEDUPS") != "1":
    try:
        from . import _speedups
    except ImportError:  # not built (no compiler at install time): the pure-Python paths serve
        pass
    else:
        usage, json_lines, json_kind = _speedups.usage, _speedups.json_lines, _speedups.json_kind
        # getattr: a module built from an older _speedups.c (an in-place build not redone) lacks them.
        token_take_all = getattr(_speedups, "token_take_all", None)
        token_adjust_all = getattr(_speedups, "token_adjust_all", None)
