"""Optional masking of request and response content (``redaction.request_masks``, ``response_masks``): the text
of messages, prompts and inputs is rewritten before it is forwarded, and that of non-streaming answers before they
are returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from ..config.model import MaskRule

__all__ = ["ContentMasks"]

_CONTENT_FIELDS = ("messages", "input", "prompt", "query", "documents")


class ContentMasks:
    """Regex -> replacement rules applied to the text a client sends and receives."""

    def __init__(self, request: Sequence[MaskRule], response: Sequence[MaskRule]) -> None:
        self._request = [(re.compile(r.pattern), r.replacement) for r in request]
        self._response = [(re.compile(r.pattern), r.replacement) for r in response]

    @property
    def active(self) -> bool:
        return bool(self._request or self._response)

    def mask_request(self, payload: dict[str, Any]) -> None:
        if self._request:
            for field in _CONTENT_FIELDS:
                if field in payload:
                    payload[field] = _walk(payload[field], self._request)

    def mask_response(self, body: bytes) -> bytes:
        if not self._response:
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if isinstance(data, dict) and isinstance(data.get("choices"), list):
            data["choices"] = _walk(data["choices"], self._response)
            return orjson.dumps(data)
        return body


def _walk(value: Any, rules: list[tuple[re.Pattern[str], str]]) -> Any:
    if isinstance(value, str):
        for pattern, replacement in rules:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, list):
        return [_walk(v, rules) for v in value]
    if isinstance(value, dict):
        # Only text is masked: roles, ids and image URLs keep their meaning.
        return {
            k: _walk(v, rules) if k in ("content", "text") or isinstance(v, list | dict) else v
            for k, v in value.items()
        }
    return value
