"""The control plane end to end: a real gateway in store or file mode, the admin API over HTTP, real loopback
upstreams and the official openai SDK as the client. Config changes - add an instance, change weights, remove
one, roll back to version 1 - are made while a bounded load loop runs, and must fail no request while traffic
shifts as each version says."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from modelrouter.admin import PASSWORD_ENV, ensure_first_admin
from modelrouter.config.model import StoreConfig

from .fakes import FakeOpenAI
from .servers import GatewayServer

PASSWORD = "correct horse battery"


class Admin:
    """An admin API client logged in as the first admin."""

    def __init__(self, gw: GatewayServer) -> None:
        store = gw.gateway.store
        assert store is not None
        # The gateway's first start created "admin" with a generated password (logged once); set a known one.
        gw.bg.run(ensure_first_admin(store, env={PASSWORD_ENV: PASSWORD}))
        gw.bg.run(store.set_password("admin", PASSWORD))
        self.url = gw.url + "/admin/api"
        login = httpx2.post(self.url + "/login", json={"username": "admin", "password": PASSWORD}, timeout=10)
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['token']}"}

    def call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return httpx2.request(method, self.url + path, headers=self.headers, timeout=10, **kwargs)

    def version(self) -> int:
        reply = self.call("GET", "/config")
        assert reply.status_code == 200, reply.text
        version: int = reply.json()["version"]
        return version


class Load:
    """Chat requests in a loop from a thread until stopped (at most ``limit`` requests or ``seconds``), recording
    which upstream answered each and every failure."""

    def __init__(self, gw: GatewayServer, *, limit: int = 20_000, seconds: float = 60) -> None:
        self.client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._limit, self._deadline = limit, time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.answers) < self._limit and time.monotonic() < self._deadline:
            try:
                reply = self.client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
                self.answers.append(reply.choices[0].message.content or "")
            except Exception as exc:  # recorded, asserted on at the end
                self.failures.append(repr(exc))

    def mark(self) -> int:
        return len(self.answers)

    def since(self, mark: int, at_least: int = 60) -> collections.Counter[str]:
        """Which upstreams answered the requests after ``mark``, once at least ``at_least`` more came back."""
        deadline = time.monotonic() + 10
        while len(self.answers) < mark + at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        return collections.Counter(a.removeprefix("hello from ") for a in self.answers[mark:])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.fixture
def upstreams(start_upstream: Callable[..., tuple[FakeOpenAI, str]]) -> dict[str, str]:
    return {name: start_upstream(name)[1] for name in ("a", "b", "c")}


def _chat_config(*instances: dict[str, Any]) -> dict[str, Any]:
    return {"services": {"chat": {"load_balance": "round_robin", "instances": list(instances)}}}


def test_store_mode_edits_and_rollback_under_load(
    upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    gw = start_gateway(_chat_config({"name": "m", "base_url": upstreams["a"]}), config_source="store")
    admin = Admin(gw)
    assert admin.version() == 1  # the seed
    load = Load(gw)
    try:
        assert set(load.since(load.mark())) == {"a"}

        # Add an instance: traffic now splits between a and b.
        added = admin.call(
            "POST",
            "/services/chat/instances",
            json={"version": 1, "instance": {"name": "m", "base_url": upstreams["b"]}, "comment": "add b"},
        )
        assert added.status_code == 200, added.text
        assert added.json()["version"] == 2
        seen = load.since(load.mark(), 200)
        assert set(seen) == {"a", "b"}, seen
        assert abs(seen["a"] - seen["b"]) <= 0.25 * sum(seen.values()), seen

        # Change weights: b gets three times a's share (smooth weighted round robin is exact over a cycle).
        weighted = admin.call(
            "PATCH",
            "/services/chat/instances/m",
            params={"base_url": upstreams["b"]},
            json={"version": 2, "changes": {"weight": 3}},
        )
        assert weighted.status_code == 200, weighted.text
        seen = load.since(load.mark(), 400)
        assert 2.4 <= seen["b"] / max(seen["a"], 1) <= 3.6, seen

        # Replace a with c, then remove b: only c answers.
        admin.call(
            "POST",
            "/services/chat/instances",
            json={"version": 3, "instance": {"name": "m", "base_url": upstreams["c"]}},
        )
        removed = admin.call("DELETE", "/services/chat/instances/m", params={"base_url": upstreams["a"], "version": 4})
        assert removed.status_code == 200, removed.text
        removed = admin.call("DELETE", "/services/chat/instances/m", params={"base_url": upstreams["b"], "version": 5})
        assert removed.status_code == 200, removed.text
        assert set(load.since(load.mark())) == {"c"}

        # Roll back to version 1: a alone again, as a new version 7.
        rolled = admin.call("POST", "/config/versions/1/apply", json={"version": 6})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["version"] == 7
        assert rolled.json()["current"] is True
        assert set(load.since(load.mark())) == {"a"}
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert len(load.answers) >= 500

    versions = admin.call("GET", "/config/versions").json()
    assert [v["version"] for v in versions["data"]] == [7, 6, 5, 4, 3, 2, 1]
    assert versions["current"] == 7
    diff = admin.call("GET", "/config/diff", params={"from": 1, "to": 2}).json()
    added = [line for line in diff["diff"].splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert diff["changed"]
    assert added == ["+    - name: m", f"+      base_url: {upstreams['b']}"], diff["diff"]
    assert not admin.call("GET", "/config/diff", params={"from": 1, "to": 7}).json()["changed"]
    # Every write is in the audit log, with who and from which version.
    audit = admin.call("GET", "/audit").json()["data"]
    changes = [(e["action"], e["detail"].get("based_on")) for e in audit if e["action"].startswith("config.")]
    assert changes == [("config.rollback", 6), *(("config.change", v) for v in (5, 4, 3, 2, 1))]
    assert all(e["actor"] == "admin" for e in audit if e["action"].startswith("config."))


def test_stale_and_invalid_changes_are_refused(
    upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    gw = start_gateway(_chat_config({"name": "m", "base_url": upstreams["a"]}), config_source="store")
    admin = Admin(gw)
    ok = admin.call("PATCH", "/services/chat", json={"version": 1, "changes": {"load_balance": "random"}})
    assert ok.status_code == 200, ok.text
    # A second admin still looking at version 1.
    stale = admin.call("PATCH", "/services/chat", json={"version": 1, "changes": {"load_balance": "least_connections"}})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "version_conflict"
    missing = admin.call("PATCH", "/services/chat", json={"changes": {"load_balance": "random"}})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "version"
    bad = admin.call(
        "PATCH", "/services/chat/instances/m", json={"version": 2, "changes": {"weight": -1, "base_url": "ftp://x"}}
    )
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["code"] == "invalid_config"
    assert "services.chat.instances[0].weight" in error["message"]
    assert "base_url" in error["message"]
    assert error["param"].startswith("services.chat.instances[0].")
    alias = admin.call("PUT", "/config/sections/aliases", json={"version": 2, "value": {"gpt-4o": "nope"}})
    assert alias.status_code == 400
    assert "aliases.gpt-4o: unknown model 'nope'" in alias.json()["error"]["message"]
    for query in ({"since": "253402300800"}, {"until": "1e17"}, {"since": "-1"}, {"until": "soon"}):
        for path in ("/usage", "/usage/records"):
            refused = admin.call("GET", path, params=query)
            assert refused.status_code == 400, (path, query, refused.text)
    assert admin.call("GET", "/services/nope").status_code == 404
    assert admin.call("GET", "/config/versions/99").status_code == 404
    assert admin.call("PATCH", "/services/chat/instances/zz", json={"version": 2, "changes": {}}).status_code == 404
    # Nothing above changed the config: still version 2, still served.
    assert admin.version() == 2
    assert gw.gateway.config.services["chat"].load_balance == "random"


def test_deeply_nested_admin_bodies_are_400(
    upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    # Deep values used to reach the config edit (a deep copy, the YAML text) and fail there: a 500. The admin
    # API's bodies have the same depth limit as the /v1 API's.
    gw = start_gateway(_chat_config({"name": "m", "base_url": upstreams["a"]}), config_source="store")
    admin = Admin(gw)
    for depth in (129, 500, 1024):
        deep = b'{"a":' * depth + b"1" + b"}" * depth
        body = b'{"version": 1, "value": {"gpt-4o": ' + deep + b"}}"
        reply = admin.call("PUT", "/config/sections/aliases", content=body)
        assert reply.status_code == 400, (depth, reply.text)
        error = reply.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "json_too_deep")
    assert admin.version() == 1


def test_aliases_and_limits_apply_live(upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer]) -> None:
    gw = start_gateway(_chat_config({"name": "m", "base_url": upstreams["a"]}), config_source="store")
    admin = Admin(gw)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert (
        admin.call("PUT", "/config/sections/aliases", json={"version": 1, "value": {"gpt-4o": "m"}}).status_code == 200
    )
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from a"
    limits = [{"scope": "global", "rate": 1, "period": 3600}]
    assert admin.call("PUT", "/config/sections/limits", json={"version": 2, "value": limits}).status_code == 200
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    state = admin.call("GET", "/state").json()
    assert state["config_version"] == 3
    assert state["limits"][0]["rule"]["rate"] == 1
    assert state["limits"][0]["live_buckets"] == 1
    (instance,) = state["instances"]
    assert instance["name"] == "m"
    assert instance["healthy"]
    assert instance["breaker"] == "closed"
    assert instance["recent_requests"] >= 2
    assert instance["in_flight"] == 0


def test_file_mode_records_versions_and_refuses_writes(
    upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    gw = start_gateway(_chat_config({"name": "m", "base_url": upstreams["a"]}), config_source="file")
    admin = Admin(gw)
    current = admin.call("GET", "/config").json()
    assert (current["mode"], current["version"]) == ("file", 1)
    for method, path, body in (
        ("PATCH", "/services/chat", {"version": 1, "changes": {"load_balance": "random"}}),
        ("PUT", "/config/sections/aliases", {"version": 1, "value": {}}),
        ("POST", "/config/versions/1/apply", {"version": 1}),
    ):
        refused = admin.call(method, path, json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "config_read_only"
    # A reload of the file is a new version; the same file again is not.
    control = gw.gateway.control
    assert control is not None
    changed = _chat_config({"name": "m", "base_url": upstreams["b"]})
    from modelrouter.control.source import dump_document, parse_text

    text = dump_document({**changed, "health_check": {"enabled": False}})
    gw.gateway.reload(parse_text(text))
    gw.bg.run(control.file_loaded(text))
    gw.bg.run(control.file_loaded(text))
    assert [v["version"] for v in admin.call("GET", "/config/versions").json()["data"]] == [2, 1]


def test_secrets_are_masked_in_views_and_kept_through_edits(
    upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer]
) -> None:
    # Store mode refuses a literal credential header (tests/test_config_secrets.py); views still mask every literal
    # header value, one that is not a credential by its name too.
    instance = {"name": "m", "base_url": upstreams["a"], "headers": {"OpenAI-Organization": "org-upstream-secret"}}
    gw = start_gateway(_chat_config(instance), config_source="store")
    admin = Admin(gw)
    view = admin.call("GET", "/config").json()
    assert "org-upstream-secret" not in str(view)
    assert view["config"]["services"]["chat"]["instances"][0]["headers"]["OpenAI-Organization"] == "********"
    # Whole config back with the mask in it, one other change: the secret stays what it was.
    doc = view["config"]
    doc["services"]["chat"]["load_balance"] = "random"
    assert admin.call("PUT", "/config", json={"version": 1, "config": doc}).status_code == 200
    export = admin.call("GET", "/config/export").json()  # admins only: the text as stored
    assert "org-upstream-secret" in export["config"]
    assert gw.gateway.config.services["chat"].instances[0].headers["OpenAI-Organization"] == "org-upstream-secret"


def test_store_mode_restart_keeps_the_stored_config(
    upstreams: dict[str, str], start_gateway: Callable[..., GatewayServer], store_config: StoreConfig
) -> None:
    """On SQLite and on PostgreSQL: the gateway runs against both."""
    store = store_config.model_dump(exclude_defaults=True)
    seed = {**_chat_config({"name": "m", "base_url": upstreams["a"]}), "store": store}
    gw = start_gateway(seed, config_source="store")
    admin = Admin(gw)
    reply = admin.call(
        "PATCH", "/services/chat/instances/m", json={"version": 1, "changes": {"base_url": upstreams["b"]}}
    )
    assert reply.status_code == 200, reply.text
    gw.stop()
    # Started again from the same seed file: the store wins, the file does not silently override it.
    again = start_gateway(seed, config_source="store")
    client = openai.OpenAI(base_url=again.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello from b"
    assert again.gateway.control is not None
    assert again.gateway.control.version == 2
