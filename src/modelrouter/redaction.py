"""Keeping secrets out of logs, and optional masking of request and response content.

Log redaction is a ``logging.Filter`` on the gateway's handlers: API keys (``mr-…``, ``sk-…``), bearer tokens
and any configured ``redaction.log_patterns`` are replaced before a record is written, whatever code logged it.
Content masking (``request_masks``, ``response_masks``) rewrites the text of messages, prompts and inputs
before they are forwarded, and of non-streaming answers before they are returned.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .config.model import MaskRule, RedactionConfig

__all__ = ["ContentMasks", "LogRedactor", "install_log_redaction"]

_BUILTIN = (
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]+",
    r"\b(?:mr|mrt|sk)-[A-Za-z0-9_-]{16,}",
    r"(?<=(?i:x-api-key): )\S+",
)


class LogRedactor(logging.Filter):
    def __init__(self, patterns: Iterable[str] = ()) -> None:
        super().__init__()
        self.set_patterns(patterns)

    def set_patterns(self, patterns: Iterable[str]) -> None:
        self._pattern = re.compile("|".join(f"(?:{p})" for p in (*_BUILTIN, *patterns)))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._pattern.sub("[redacted]", message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            # Tracebacks quote exception messages, which may hold a key: render and redact them here.
            record.exc_text = self._pattern.sub("[redacted]", logging.Formatter().formatException(record.exc_info))
        return True


_installed: LogRedactor | None = None


def install_log_redaction(config: RedactionConfig) -> LogRedactor:
    """Attach the redactor to every handler of the root and uvicorn loggers (uvicorn's do not propagate), and
    update its patterns on reload."""
    global _installed
    if _installed is None:
        _installed = LogRedactor(config.log_patterns)
    else:
        _installed.set_patterns(config.log_patterns)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "modelrouter"):
        for handler in logging.getLogger(name).handlers:
            if _installed not in handler.filters:
                handler.addFilter(_installed)
    return _installed


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
