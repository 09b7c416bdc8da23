"""Keeping secrets out of logs: a ``logging.Filter`` on the gateway's handlers replaces API keys (``mr-…``,
``sk-…``), bearer tokens and any configured ``redaction.log_patterns`` before a record is written, whatever code
logged it. (Masking of request and response content is the data plane's: ``dataplane/masks.py``.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from ..config.model import RedactionConfig

__all__ = ["LogRedactor", "install_log_redaction"]

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
