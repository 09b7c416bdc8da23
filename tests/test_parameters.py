"""Request parameters are checked as the API document's tables say, before any backend is called: a bad value is a
400 ``invalid_request_error`` naming the field and the allowed range, and the upstream sees nothing.

Ranges (numeric bounds, value sets) can be turned off with ``server.validate_parameters: false`` for backends that
accept wider ones; types and required fields are checked either way. Unknown fields pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from .fakes import FakeOpenAI
from .servers import GatewayServer
from .test_api_document import CHAT as DOCUMENT_CHAT

StartUpstream = Callable[..., tuple[FakeOpenAI, str]]
StartGateway = Callable[[dict[str, Any]], GatewayServer]

SERVICES = ("chat", "embedding", "rerank", "tts", "stt", "image_generation", "image_edit")
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)

# The API document's chat example, as published ("stop": null means no stop sequence).
DOCUMENT_CHAT_EXAMPLE: dict[str, Any] = {**DOCUMENT_CHAT, "model": "m-chat"}

# A valid body per JSON path, which the cases below change one field of.
VALID: dict[str, dict[str, Any]] = {
    CHAT: {"model": "m-chat", "messages": USER},
    "/v1/completions": {"model": "m-chat", "prompt": "Once upon a time"},
    "/v1/embeddings": {"model": "m-embedding", "input": "text"},
    "/v1/rerank": {"model": "m-rerank", "query": "capital of France", "documents": ["Paris", "Berlin"]},
    "/v1/audio/speech": {"model": "m-tts", "input": "hello", "voice": "alloy"},
    "/v1/images/generations": {"model": "m-image_generation", "prompt": "a cat"},
}


def config(*, validate: bool | None = None, url: str) -> dict[str, Any]:
    """One upstream serving every service under model names m-<service>; ``validate``: server.validate_parameters
    (None: not set, the default)."""
    services = {s: {"instances": [{"name": f"m-{s}", "base_url": url}]} for s in SERVICES}
    server = {} if validate is None else {"server": {"validate_parameters": validate}}
    # No health probes: a reload would otherwise turn them on, and they would reach the fake.
    return {**server, "health_check": {"enabled": False}, "services": services}


@pytest.fixture
def strict(start_upstream: StartUpstream, start_gateway: StartGateway) -> tuple[FakeOpenAI, GatewayServer]:
    """The default gateway: ranges checked."""
    fake, url = start_upstream("a")
    return fake, start_gateway(config(url=url))


@pytest.fixture
def lenient(start_upstream: StartUpstream, start_gateway: StartGateway) -> tuple[FakeOpenAI, GatewayServer]:
    """A gateway with server.validate_parameters: false."""
    fake, url = start_upstream("a")
    return fake, start_gateway(config(validate=False, url=url))


def post(gw: GatewayServer, path: str, body: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(gw.url + path, json=body, timeout=10)


def post_form(gw: GatewayServer, path: str, fields: dict[str, str]) -> httpx2.Response:
    """A multipart request with a valid file for ``path`` and the text ``fields``."""
    name, data, ctype = ("image", PNG, "image/png") if path == "/v1/images/edits" else ("file", AUDIO, "audio/wav")
    files: dict[str, Any] = {name: (f"upload.{ctype[6:]}", data, ctype)}
    files.update({k: (None, v) for k, v in fields.items()})
    return httpx2.post(gw.url + path, files=files, timeout=10)


def refused(resp: httpx2.Response, param: str, code: str) -> str:
    """The 400 error's message, after checking its shape, param and code."""
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error"}
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] == code
    message: str = err["message"]
    assert message.startswith("Invalid request: ")
    return message


# ------------------------------------------------------------------------------------------------ ranges (switchable)

# (path, field, refused value, the range the message states, the value as the message shows it)
RANGES = [
    (CHAT, "temperature", 2.5, "a number between 0 and 2", "2.5"),
    (CHAT, "temperature", -0.1, "a number between 0 and 2", "-0.1"),
    (CHAT, "top_p", 1.01, "a number between 0 and 1", "1.01"),
    (CHAT, "top_p", -1, "a number between 0 and 1", "-1"),
    (CHAT, "frequency_penalty", -2.5, "a number between -2 and 2", "-2.5"),
    (CHAT, "presence_penalty", 3, "a number between -2 and 2", "3"),
    (CHAT, "max_tokens", 0, "an integer of at least 1", "0"),
    (CHAT, "max_completion_tokens", 0, "an integer of at least 1", "0"),
    (CHAT, "top_k", -1, "an integer of at least 0", "-1"),
    (CHAT, "n", 0, "an integer of at least 1", "0"),
    ("/v1/completions", "temperature", 3, "a number between 0 and 2", "3"),
    ("/v1/completions", "top_p", 2, "a number between 0 and 1", "2"),
    ("/v1/completions", "presence_penalty", -2.01, "a number between -2 and 2", "-2.01"),
    ("/v1/completions", "max_tokens", -5, "an integer of at least 1", "-5"),
    ("/v1/completions", "top_k", -3, "an integer of at least 0", "-3"),
    ("/v1/completions", "n", 0, "an integer of at least 1", "0"),
    ("/v1/embeddings", "encoding_format", "int8", "'float' or 'base64'", "'int8'"),
    ("/v1/embeddings", "dimensions", 0, "an integer of at least 1", "0"),
    ("/v1/rerank", "top_n", 0, "an integer of at least 1", "0"),
    ("/v1/audio/speech", "speed", 0.2, "a number between 0.25 and 4", "0.2"),
    ("/v1/audio/speech", "speed", 4.5, "a number between 0.25 and 4", "4.5"),
    ("/v1/images/generations", "n", 0, "an integer of at least 1", "0"),
]


@pytest.mark.parametrize(("path", "field", "value", "wants", "shown"), RANGES)
def test_a_value_out_of_range_is_400_naming_the_field_and_range(
    strict: tuple[FakeOpenAI, GatewayServer], path: str, field: str, value: Any, wants: str, shown: str
) -> None:
    fake, gw = strict
    message = refused(post(gw, path, {**VALID[path], field: value}), field, "invalid_value")
    assert message == f"Invalid request: '{field}' must be {wants} (got {shown})"
    assert fake.requests == []


MULTIPART_RANGES = [
    ("/v1/audio/transcriptions", "temperature", "1.5", "a number between 0 and 1"),
    ("/v1/audio/transcriptions", "temperature", "-0.1", "a number between 0 and 1"),
    ("/v1/audio/translations", "temperature", "2", "a number between 0 and 1"),
    ("/v1/images/edits", "n", "0", "an integer of at least 1"),
]


@pytest.mark.parametrize(("path", "field", "text", "wants"), MULTIPART_RANGES)
def test_a_multipart_field_out_of_range_is_400(
    strict: tuple[FakeOpenAI, GatewayServer], path: str, field: str, text: str, wants: str
) -> None:
    fake, gw = strict
    fields = {"model": "m-image_edit" if "images" in path else "m-stt", "prompt": "add a hat", field: text}
    message = refused(post_form(gw, path, fields), field, "invalid_value")
    assert message == f"Invalid request: '{field}' must be {wants} (got {float(text):g})"
    assert fake.requests == []


# The bounds themselves are inside the ranges, and a whole number is a number.
EDGES = [
    (CHAT, {"temperature": 0, "top_p": 0, "frequency_penalty": -2, "presence_penalty": -2.0, "top_k": 0}),
    (CHAT, {"temperature": 2.0, "top_p": 1, "frequency_penalty": 2.0, "presence_penalty": 2, "n": 1}),
    (CHAT, {"max_tokens": 1, "max_completion_tokens": 1, "stop": [], "stream": True}),
    ("/v1/completions", {"temperature": 2, "max_tokens": 1, "top_k": 0, "stop": "\n"}),
    ("/v1/embeddings", {"encoding_format": "float", "dimensions": 1}),
    ("/v1/rerank", {"top_n": 1, "return_documents": False}),
    ("/v1/audio/speech", {"speed": 0.25}),
    ("/v1/audio/speech", {"speed": 4}),
    ("/v1/images/generations", {"n": 1}),
]


@pytest.mark.parametrize(("path", "fields"), EDGES)
def test_values_at_the_bounds_reach_the_upstream_unchanged(
    strict: tuple[FakeOpenAI, GatewayServer], path: str, fields: dict[str, Any]
) -> None:
    fake, gw = strict
    resp = post(gw, path, {**VALID[path], **fields})
    assert resp.status_code == 200, resp.text
    sent = fake.last.json
    for name, value in fields.items():
        assert sent[name] == value
        assert type(sent[name]) is type(value)  # 2 stays 2, 2.0 stays 2.0


@pytest.mark.parametrize(
    ("path", "field", "text"),
    [
        ("/v1/audio/transcriptions", "temperature", "0"),
        ("/v1/audio/transcriptions", "temperature", "1"),
        ("/v1/audio/translations", "temperature", "0.25"),
        ("/v1/images/edits", "n", "1"),
    ],
)
def test_multipart_values_at_the_bounds_reach_the_upstream(
    strict: tuple[FakeOpenAI, GatewayServer], path: str, field: str, text: str
) -> None:
    fake, gw = strict
    fields = {"model": "m-image_edit" if "images" in path else "m-stt", "prompt": "add a hat", field: text}
    resp = post_form(gw, path, fields)
    assert resp.status_code == 200, resp.text
    assert fake.last.fields[field] == text


# ------------------------------------------------------------------------------------------------ types (always)

# (path, field, refused value, code, what the message must say)
TYPES = [
    (CHAT, "temperature", True, "invalid_type", "'temperature' must be a number"),
    (CHAT, "temperature", "0.7", "invalid_type", "(got '0.7')"),
    (CHAT, "top_p", [1], "invalid_type", "'top_p' must be a number"),
    (CHAT, "max_tokens", 1.0, "invalid_type", "(got 1.0, a decimal number)"),
    (CHAT, "max_tokens", True, "invalid_type", "'max_tokens' must be an integer"),
    (CHAT, "top_k", 2.5, "invalid_type", "'top_k' must be an integer"),
    (CHAT, "n", "2", "invalid_type", "'n' must be an integer"),
    (CHAT, "stream", "true", "invalid_type", "'stream' must be a boolean (got 'true')"),
    (CHAT, "stream", 1, "invalid_type", "'stream' must be a boolean (got 1)"),
    (CHAT, "stop", 5, "invalid_type", "'stop' must be a string or an array of strings"),
    (CHAT, "stop", ["END", 1], "invalid_type", "'stop' must be a string or an array of strings"),
    (CHAT, "model", 7, "invalid_type", "'model' must be a string (got 7)"),
    (CHAT, "messages", "hi", "invalid_type", "'messages' must be a non-empty array of objects with a string 'role'"),
    (CHAT, "messages", [], "invalid_value", "(got an empty array)"),
    (CHAT, "messages", [*USER, {"content": "no role"}], "invalid_type", "(messages[1] has no 'role')"),
    (CHAT, "messages", [*USER, "hi"], "invalid_type", "(messages[1] is 'hi')"),
    (CHAT, "messages", [{"role": 1, "content": "x"}], "invalid_type", "(messages[0].role is 1)"),
    ("/v1/completions", "prompt", {"text": "hi"}, "invalid_type", "'prompt' must be a string, an array of strings"),
    ("/v1/completions", "prompt", ["a", 1], "invalid_type", "'prompt' must be a string, an array of strings"),
    ("/v1/completions", "temperature", False, "invalid_type", "'temperature' must be a number"),
    ("/v1/embeddings", "input", 42, "invalid_type", "'input' must be a string, an array of strings"),
    ("/v1/embeddings", "input", [[1, 2], ["a"]], "invalid_type", "an array of token-id arrays"),
    ("/v1/embeddings", "input", [1, True], "invalid_type", "an array of token ids"),
    ("/v1/embeddings", "encoding_format", 1, "invalid_type", "(got 1)"),
    ("/v1/embeddings", "dimensions", "8", "invalid_type", "'dimensions' must be an integer"),
    ("/v1/rerank", "query", ["capital"], "invalid_type", "'query' must be a string"),
    ("/v1/rerank", "documents", "Paris", "invalid_type", "'documents' must be a non-empty array"),
    ("/v1/rerank", "documents", [], "invalid_value", "(got an empty array)"),
    ("/v1/rerank", "documents", ["Paris", 5], "invalid_type", "(documents[1] is 5)"),
    ("/v1/rerank", "documents", [{"title": "Paris"}], "invalid_type", "(documents[0] has no string 'text')"),
    ("/v1/rerank", "top_n", 2.0, "invalid_type", "'top_n' must be an integer"),
    ("/v1/rerank", "return_documents", "yes", "invalid_type", "'return_documents' must be a boolean"),
    ("/v1/audio/speech", "input", "", "invalid_value", "'input' must be a non-empty string (got '')"),
    ("/v1/audio/speech", "input", ["hello"], "invalid_type", "'input' must be a non-empty string"),
    ("/v1/audio/speech", "voice", 5, "invalid_type", "'voice' must be a string or an object with a string 'id'"),
    ("/v1/audio/speech", "speed", "fast", "invalid_type", "'speed' must be a number"),
    ("/v1/images/generations", "prompt", 5, "invalid_type", "'prompt' must be a string"),
    ("/v1/images/generations", "n", 1.5, "invalid_type", "(got 1.5, a decimal number)"),
    ("/v1/images/generations", "model", 5, "invalid_type", "'model' must be a string"),
]


@pytest.mark.parametrize("validate", [True, False], ids=["ranges-on", "ranges-off"])
@pytest.mark.parametrize(("path", "field", "value", "code", "says"), TYPES)
def test_a_value_of_the_wrong_type_or_shape_is_400_whatever_the_switch(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    validate: bool,
    path: str,
    field: str,
    value: Any,
    code: str,
    says: str,
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(config(validate=validate, url=url))
    message = refused(post(gw, path, {**VALID[path], field: value}), field, code)
    assert says in message
    assert fake.requests == []


@pytest.mark.parametrize("validate", [True, False], ids=["ranges-on", "ranges-off"])
@pytest.mark.parametrize(
    ("path", "field", "text", "says"),
    [
        ("/v1/audio/transcriptions", "temperature", "hot", "(got 'hot')"),
        ("/v1/audio/translations", "temperature", "nan", "(got 'nan')"),
        ("/v1/images/edits", "n", "1.0", "(got 1.0, a decimal number)"),
        ("/v1/images/edits", "n", "two", "'n' must be an integer"),
    ],
)
def test_a_multipart_field_that_is_no_number_is_400_whatever_the_switch(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    validate: bool,
    path: str,
    field: str,
    text: str,
    says: str,
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(config(validate=validate, url=url))
    fields = {"model": "m-image_edit" if "images" in path else "m-stt", "prompt": "add a hat", field: text}
    assert says in refused(post_form(gw, path, fields), field, "invalid_type")
    assert fake.requests == []


def test_a_long_refused_value_is_shown_cut_short(strict: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = strict
    message = refused(post(gw, CHAT, {**VALID[CHAT], "temperature": "x" * 10_000}), "temperature", "invalid_type")
    assert len(message) < 150
    assert "xxx…'" in message
    assert fake.requests == []


def test_accepted_token_arrays_and_document_objects_reach_the_upstream(
    strict: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = strict
    for path, field, value in [
        ("/v1/embeddings", "input", [[1, 2, 3], [4]]),
        ("/v1/embeddings", "input", [1, 2, 3]),
        ("/v1/embeddings", "input", ["a", "b"]),
        ("/v1/completions", "prompt", [[1, 2], [3]]),
        ("/v1/completions", "prompt", ["a", "b"]),
    ]:
        resp = post(gw, path, {**VALID[path], field: value})
        assert resp.status_code == 200, resp.text
        assert fake.last.json[field] == value
    docs = [{"text": "Paris"}, "Berlin"]
    resp = post(gw, "/v1/rerank", {**VALID["/v1/rerank"], "documents": docs})
    assert resp.status_code == 200, resp.text
    resp = post(gw, "/v1/audio/speech", {**VALID["/v1/audio/speech"], "voice": {"id": "voice_1234"}})
    assert resp.status_code == 200, resp.text
    assert fake.last.json["voice"] == {"id": "voice_1234"}


# ------------------------------------------------------------------------------------------------ required fields


def test_a_missing_model_is_answered_exactly_as_the_document_shows(strict: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = strict
    resp = post(gw, CHAT, {"messages": USER})
    assert resp.status_code == 400
    assert resp.json() == {
        "error": {
            "message": "Invalid request: missing required parameter 'model'",
            "type": "invalid_request_error",
            "param": "model",
            "code": "missing_parameter",
        }
    }
    assert fake.requests == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (CHAT, "messages"),
        ("/v1/completions", "prompt"),
        ("/v1/embeddings", "input"),
        ("/v1/rerank", "query"),
        ("/v1/rerank", "documents"),
        ("/v1/audio/speech", "input"),
        ("/v1/audio/speech", "voice"),
        ("/v1/images/generations", "prompt"),
    ],
)
@pytest.mark.parametrize("how", ["absent", "null"])
def test_a_missing_required_field_is_400_missing_parameter(
    lenient: tuple[FakeOpenAI, GatewayServer], path: str, field: str, how: str
) -> None:
    """Required fields are checked with ranges off too (null is "not given")."""
    fake, gw = lenient
    body = {k: v for k, v in VALID[path].items() if k != field}
    if how == "null":
        body[field] = None
    message = refused(post(gw, path, body), field, "missing_parameter")
    assert message == f"Invalid request: missing required parameter '{field}'"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        ("/v1/audio/transcriptions", {"language": "en"}, "model"),
        ("/v1/audio/translations", {"language": "en"}, "model"),
        ("/v1/images/edits", {"model": "m-image_edit"}, "prompt"),
    ],
)
def test_a_missing_multipart_field_is_400_missing_parameter(
    strict: tuple[FakeOpenAI, GatewayServer], path: str, fields: dict[str, str], param: str
) -> None:
    fake, gw = strict
    message = refused(post_form(gw, path, fields), param, "missing_parameter")
    assert message == f"Invalid request: missing required parameter '{param}'"
    resp = httpx2.post(gw.url + path, files={"model": (None, "m-stt"), "prompt": (None, "p")}, timeout=10)
    file = "image" if "images" in path else "file"
    assert refused(resp, file, "missing_parameter") == f"Invalid request: missing required parameter '{file}'"
    assert fake.requests == []


# ------------------------------------------------------------------------------------------------ what passes through


def test_the_documents_chat_example_reaches_the_upstream_unchanged(strict: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = strict
    resp = post(gw, CHAT, DOCUMENT_CHAT_EXAMPLE)
    assert resp.status_code == 200, resp.text
    assert fake.last.json == DOCUMENT_CHAT_EXAMPLE  # the instance has no upstream_model: the name stays


def test_null_optional_fields_mean_not_given(strict: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = strict
    nulls = dict.fromkeys(
        ["stream", "temperature", "top_p", "top_k", "n", "max_tokens", "max_completion_tokens", "stop"]
    )
    resp = post(gw, CHAT, {**VALID[CHAT], **nulls})
    assert resp.status_code == 200, resp.text
    assert fake.last.json == {**VALID[CHAT], **nulls}


def test_unknown_fields_pass_through_unchanged(strict: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = strict
    extras = {
        "repetition_penalty": 9.5,  # a vendor field with a range of its own: not ours to check
        "min_p": -1,
        "logit_bias": {"50256": -100},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "vendor": {"nested": [1, None, "x"], "temperature": 99},
    }
    resp = post(gw, CHAT, {**VALID[CHAT], **extras})
    assert resp.status_code == 200, resp.text
    assert fake.last.json == {**VALID[CHAT], **extras}


# ------------------------------------------------------------------------------------------------ the switch


def test_with_ranges_off_values_out_of_range_reach_the_upstream_unchanged(
    lenient: tuple[FakeOpenAI, GatewayServer],
) -> None:
    fake, gw = lenient
    for path, field, value, _wants, _shown in RANGES:
        resp = post(gw, path, {**VALID[path], field: value})
        assert resp.status_code == 200, (path, field, resp.text)
        assert fake.last.json[field] == value
        assert type(fake.last.json[field]) is type(value)
    for path, field, text, _wants in MULTIPART_RANGES:
        fields = {"model": "m-image_edit" if "images" in path else "m-stt", "prompt": "add a hat", field: text}
        resp = post_form(gw, path, fields)
        assert resp.status_code == 200, (path, field, resp.text)
        assert fake.last.fields[field] == text
    # The type is still checked, and the message then names no range.
    message = refused(post(gw, CHAT, {**VALID[CHAT], "temperature": True}), "temperature", "invalid_type")
    assert message == "Invalid request: 'temperature' must be a number (got true)"


def test_turning_the_checks_off_and_on_by_a_reload_takes_effect(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fake, url = start_upstream("a")
    gw = start_gateway(config(url=url))
    hot = {**VALID[CHAT], "temperature": 3.5}
    refused(post(gw, CHAT, hot), "temperature", "invalid_value")

    gw.reload(config(validate=False, url=url))
    assert post(gw, CHAT, hot).status_code == 200
    assert fake.last.json["temperature"] == 3.5
    refused(post(gw, CHAT, {**VALID[CHAT], "temperature": "hot"}), "temperature", "invalid_type")

    gw.reload(config(url=url))  # the setting removed: back to the default, checked
    refused(post(gw, CHAT, hot), "temperature", "invalid_value")
    assert len(fake.requests) == 1


# ------------------------------------------------------------------------------------------------ the openai SDK


def test_the_sdk_raises_bad_request_naming_the_param(strict: tuple[FakeOpenAI, GatewayServer]) -> None:
    fake, gw = strict
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m-chat", messages=[{"role": "user", "content": "hi"}], temperature=2.5)
    assert info.value.status_code == 400
    assert info.value.param == "temperature"
    assert info.value.code == "invalid_value"
    assert info.value.type == "invalid_request_error"
    assert "between 0 and 2" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m-embedding", input="text", dimensions=0)
    assert info.value.param == "dimensions"
    assert "at least 1" in info.value.message
    assert fake.requests == []
