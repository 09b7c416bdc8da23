"""Secrets never reach the logs; masking rules rewrite content on the way in and out."""

from __future__ import annotations

import logging

import openai

from modelrouter.observability.redaction import LogRedactor

KEY = "mr-abcdefghijklmnopqrstuvwxyz0123456789"


def _render(redactor: LogRedactor, msg: str, *args: object, exc: BaseException | None = None) -> str:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    redactor.filter(record)
    return logging.Formatter().format(record)


def test_keys_bearer_tokens_and_patterns_are_redacted_in_logs() -> None:
    redactor = LogRedactor([r"secret-project-\w+"])
    line = _render(redactor, "key %s header %s on %s", KEY, "Bearer sk-live-0123456789abcdefghij", "secret-project-x")
    assert KEY not in line
    assert "sk-live" not in line
    assert "secret-project-x" not in line
    assert line.count("[redacted]") == 3
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError as err:
        rendered = _render(redactor, "failed", exc=err)
    assert KEY not in rendered
    assert "ValueError" in rendered


def test_request_and_response_masks(start_upstream, start_gateway) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(
        {
            "redaction": {
                "request_masks": [{"pattern": r"\d{3}-\d{2}-\d{4}", "replacement": "[ssn]"}],
                "response_masks": [{"pattern": "from a", "replacement": "from [backend]"}],
            },
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    out = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": [{"type": "text", "text": "my ssn is 123-45-6789"}]}]
    )
    assert fake.last.json["messages"][0]["content"][0]["text"] == "my ssn is [ssn]"
    assert fake.last.json["messages"][0]["role"] == "user"
    assert out.choices[0].message.content == "hello from [backend]"
