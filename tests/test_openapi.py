"""The OpenAPI document: valid OpenAPI 3.1, complete (every admin route, every /v1 endpoint), served at
GET /openapi.json without credentials, and true enough that schemathesis, fuzzing every admin operation from it
against a real store-mode gateway, never gets a 5xx."""

from __future__ import annotations

import collections
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from modelrouter import _version
from modelrouter.admin import PASSWORD_ENV, ROUTES, ensure_first_admin
from modelrouter.admin.schema import PATH_PARAMETERS
from modelrouter.control.openapi import build_openapi, model_schema, openapi_json
from modelrouter.endpoints import ENDPOINTS

from .fakes import FakeOpenAI
from .servers import GatewayServer
from .test_control_plane import PASSWORD, Admin

# Examples per admin operation (positive: valid per the document; negative: violating it). Together at most 25.
POSITIVE_EXAMPLES = 15
NEGATIVE_EXAMPLES = 10


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)  # openapi-spec-validator picks the 3.1 validator from the "openapi" field
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {**document["info"], "title": "modelrouter", "version": _version.__version__}
    assert "servers" not in document  # relative to wherever it was fetched from
    schemes = document["components"]["securitySchemes"]
    assert schemes["clientKey"] == {**schemes["clientKey"], "type": "http", "scheme": "bearer"}
    assert schemes["clientApiKey"] == {**schemes["clientApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["adminToken"] == {**schemes["adminToken"], "type": "http", "scheme": "bearer"}
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]


def test_every_admin_route_is_described_where_it_is_declared() -> None:
    """Each route says, at its handler, what the document needs: a summary (the docstring), a reply, and the
    models of what it reads - which must refuse unknown fields, as every admin handler does."""
    assert len({(route.method, route.template) for route in ROUTES}) == len(ROUTES), "a route declared twice"
    for route in ROUTES:
        assert route.summary, route.template
        assert route.reply, route.template
        if route.body is not None:
            assert route.body.model_config.get("extra") == "forbid", route.template


def test_every_admin_route_appears_with_its_method(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    for route in ROUTES:
        operation = document["paths"][route.template][route.method.lower()]
        assert operation["operationId"] == f"admin_{route.handler.__name__}"
        assert operation["summary"] == route.summary
        if route.role is None:
            assert operation["security"] == []  # login
            assert "429" in operation["responses"]
        else:
            assert operation["security"] == [{"adminToken": []}]
            assert {"401", "503"} <= set(operation["responses"])
        assert {"200", "201"} & set(operation["responses"])
        names = re.findall(r"\{(\w+)\}", route.template)
        path_parameters = [p for p in operation.get("parameters", []) if p["in"] == "path"]
        assert [p["name"] for p in path_parameters] == names
        for parameter in path_parameters:
            assert parameter["required"] is True
            expected = "integer" if parameter["name"] in ("id", "version") else "string"
            assert parameter["schema"]["type"] == expected, route.template
        if route.body is not None:
            definitions: dict[str, Any] = {}
            body = model_schema(route.body, definitions)
            assert operation["requestBody"]["content"]["application/json"]["schema"] == body
            assert body["additionalProperties"] is False  # every admin handler refuses unknown fields
            assert all(components[name] == schema for name, schema in definitions.items())
            assert {"400", "415"} <= set(operation["responses"])
        else:
            assert "requestBody" not in operation
        query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        expected_query = [] if route.query is None else [f.alias or n for n, f in route.query.model_fields.items()]
        assert query == expected_query, route.template
    assert set(PATH_PARAMETERS) >= {name for r in ROUTES for name in re.findall(r"\{(\w+)\}", r.template)}


def test_v1_endpoints_appear_with_their_bodies(document: dict[str, Any]) -> None:
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path]["post"]
        media_type = "application/json" if endpoint.body == "json" else "multipart/form-data"
        schema = operation["requestBody"]["content"][media_type]["schema"]
        assert schema["required"] == [name for name, _kind in endpoint.required]
        for name, kind in endpoint.required:
            if kind == "file":
                assert schema["properties"][name]["contentMediaType"] == "application/octet-stream"
        assert {"400", "401", "403", "404", "413", "415", "429", "5XX"} <= set(operation["responses"])
        assert {"clientKey": []} in operation["security"]
        assert {"clientApiKey": []} in operation["security"]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert (
        "model"
        not in document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
            "required"
        ]
    )
    assert document["paths"]["/v1/models"]["get"]["responses"]["200"]
    assert document["components"]["responses"]["Error400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_served_without_credentials(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer]
) -> None:
    _fake, url = start_upstream("a")
    gw = start_gateway(
        {"auth": {"enabled": True}, "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}}}
    )
    reply = httpx2.get(gw.url + "/openapi.json", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == orjson.loads(openapi_json())
    assert reply.json()["paths"]["/admin/api/keys"]["post"]
    assert httpx2.get(gw.url + "/v1/models", timeout=10).status_code == 401  # the API itself still needs a key
    wrong = httpx2.post(gw.url + "/openapi.json", timeout=10)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"


# --- fuzzing the admin API ----------------------------------------------------------------------------------------


class Credentials:
    """The admin token the fuzzer sends. Setting the first admin's own password (a route it fuzzes) revokes that
    token; it is then replaced by one made in the store, so the rest of the run is not a string of 401s."""

    def __init__(self, gw: GatewayServer) -> None:
        self.gw = gw
        self.headers = Admin(gw).headers

    def recover(self) -> None:
        if httpx2.get(self.gw.url + "/admin/api/me", headers=self.headers, timeout=10).status_code != 401:
            return  # the 401 was the case's own doing (a negative case), not a revoked token
        store = self.gw.gateway.store
        assert store is not None
        self.gw.bg.run(ensure_first_admin(store, env={PASSWORD_ENV: PASSWORD}))
        self.gw.bg.run(store.set_password("admin", PASSWORD))
        admin = self.gw.bg.run(store.verify_admin("admin", PASSWORD))
        assert admin is not None
        token = self.gw.bg.run(store.create_token(admin.id, 3600))
        self.headers = {"Authorization": f"Bearer {token}"}


def _fuzz_order(schema: Any) -> list[Any]:
    """Every admin operation but logout (it would revoke the token mid-run), with login last: its fuzzing fills the
    login throttle, which nothing after it then meets."""
    operations = [result.ok() for result in schema.get_all_operations()]
    admin = [op for op in operations if op.path.startswith("/admin/api/") and op.path != "/admin/api/logout"]
    return sorted(admin, key=lambda op: op.path == "/admin/api/login")


def _newest_version(gw: GatewayServer, credentials: Credentials) -> int:
    reply = httpx2.get(gw.url + "/admin/api/config", headers=credentials.headers, timeout=10)
    version: int = reply.json()["version"]
    return version


def _on_newest_version(case: Any, version: int) -> None:
    """Half the config edits are made from the newest version, so they get past the 409 to validation and, when
    valid, are saved and applied live - where a server error would hide."""
    if isinstance(case.body, dict) and "version" in case.body:
        case.body["version"] = version
    if isinstance(case.query, dict) and "version" in case.query and case.method == "DELETE":
        case.query["version"] = version


def test_fuzzing_the_admin_api_gives_no_server_error(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _fake, url = start_upstream("a")
    config = {
        # Login is fuzzed too: room for its examples, so they reach the password check instead of the throttle.
        "admin": {"login_attempts_per_minute": 1000},
        "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
    }
    gw = start_gateway(config, config_source="store")
    credentials = Credentials(gw)
    # Failures are reported with the request as sent: no "[Filtered]" in place of fields named like secrets.
    fuzz_config = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json", config=fuzz_config, timeout=10)
    operations = _fuzz_order(schema)
    assert len(operations) == len(ROUTES) - 1  # all but logout

    session = requests.Session()
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = collections.defaultdict(Counter)
    caplog.set_level(logging.ERROR, logger="modelrouter")

    def run(operation: Any, mode: schemathesis.GenerationMode, examples: int) -> None:
        secured = operation.path != "/admin/api/login"

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), newest=st.booleans())
        def fuzz(case: Any, newest: bool) -> None:
            if newest:
                _on_newest_version(case, _newest_version(gw, credentials))
            headers = credentials.headers if secured else None
            response = case.call(base_url=gw.url, session=session, headers=headers, timeout=30)
            statuses[operation.label][response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error], headers=headers)
            except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
                curl = case.as_curl_command(headers=headers, base_url=gw.url)
                for value in (headers or {}).values():
                    curl = curl.replace(value, "Bearer $ADMIN_TOKEN")
                failures.append(f"{operation.label} ({mode}) -> {response.status_code}: {type(exc).__name__}\n{curl}")
            if response.status_code == 401 and secured:
                credentials.recover()

        fuzz()

    started = time.monotonic()
    for operation in operations:
        run(operation, schemathesis.GenerationMode.POSITIVE, POSITIVE_EXAMPLES)
        run(operation, schemathesis.GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)
    elapsed = time.monotonic() - started

    assert failures == [], _report(failures, caplog.records, statuses)
    sent = {label: sum(counts.values()) for label, counts in statuses.items()}
    assert all(sent.get(op.label, 0) > 0 for op in operations), sent
    assert max(sent.values()) <= POSITIVE_EXAMPLES + NEGATIVE_EXAMPLES
    # The gateway came through it: still serving its admin API with the token of the run.
    assert httpx2.get(gw.url + "/admin/api/me", headers=credentials.headers, timeout=10).status_code == 200
    print(f"\nfuzzed {len(operations)} admin operations with {sum(sent.values())} requests in {elapsed:.1f}s")
    for label, counts in statuses.items():
        print(f"  {label}: {dict(sorted(counts.items()))}")


def _report(failures: list[str], records: list[logging.LogRecord], statuses: dict[str, Counter[int]]) -> str:
    """The server errors, each with its request, then the gateway's tracebacks (each distinct one once)."""
    formatter = logging.Formatter()
    tracebacks: dict[str, str] = {}  # by the exception's own line, which is the same for the same bug
    for record in records:
        if record.exc_info:
            text = formatter.formatException(record.exc_info)
            tracebacks.setdefault(f"{record.getMessage()}: {text.splitlines()[-1][:100]}", text)
    return "\n\n".join(
        [
            f"{len(failures)} server error(s) in {sum(sum(c.values()) for c in statuses.values())} requests:",
            *failures,
            "tracebacks in the gateway's log:",
            *tracebacks.values(),
        ]
    )
