"""The admin API's key changes (``PATCH /admin/api/keys/{id}``), usage totals per day and as CSV, and the audit
log's filters and pages - what the console's Keys, Usage and Audit pages are built on. In-process on a SQLite store
with a fake clock (the SQL of days and filters runs on PostgreSQL too in test_store.py), and one test through a
real gateway: a change made here is what the next request is judged by."""

# The fixtures come from test_admin (imported below), so taking them as parameters "redefines" the imports.
# ruff: noqa: F811

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from modelrouter.store import Role, Store, UsageRecord

from .fakes import FakeOpenAI
from .servers import GatewayServer
from .test_admin import PASSWORD, Client, Clock, client, clock, settings, store, users  # noqa: F401

T0 = 1_700_000_000.0  # the fake clock's start: 2023-11-14 22:13:20 UTC


async def test_patch_changes_only_what_is_sent_and_is_audited(
    store: Store, client: Client, users: dict[Role, str], clock: Clock
) -> None:
    token = users["operator"]
    made = await client.request(
        "POST",
        "/admin/api/keys",
        json={"name": "team", "models": ["a"], "expires_at": T0 + 3600, "quotas": {"daily_requests": 5}},
        token=token,
    )
    key_id, prefix = made.json["id"], made.json["prefix"]
    path = f"/admin/api/keys/{key_id}"
    limit = {"scope": "key", "rate": 10, "period": 60}
    reply = await client.request(
        "PATCH",
        path,
        json={"models": ["a", "b"], "quotas": {"tokens_per_minute": 1000}, "limits": [limit]},
        token=token,
    )
    assert reply.status == 200, reply.body
    changed = reply.json
    assert (changed["name"], changed["models"], changed["prefix"]) == ("team", ["a", "b"], prefix)
    assert changed["quotas"] == {"tokens_per_minute": 1000}  # the whole set replaced: daily_requests is gone
    assert changed["limits"] == [{"scope": "key", "rate": 10}]  # as stored: the defaults (period 60) left out
    assert changed["expires_at"] == pytest.approx(T0 + 3600)  # not sent: kept
    assert not {"secret", "hash"} & set(changed)
    never = await client.request("PATCH", path, json={"expires_at": None, "name": "team-2"}, token=token)
    assert (never.json["expires_at"], never.json["name"]) == (None, "team-2")
    record = await store.get_key(key_id)
    assert record is not None
    assert (record.name, record.models, record.expires_at, record.quotas.tokens_per_minute) == (
        "team-2",
        ("a", "b"),
        None,
        1000,
    )
    listed = (await client.request("GET", "/admin/api/keys", token=token)).json["data"]
    assert listed[0]["limits"] == [{"scope": "key", "rate": 10}]
    [latest, first] = (await client.request("GET", "/admin/api/audit?action=key.update", token=token)).json["data"]
    assert (latest["actor"], latest["target"]) == ("operator", f"key:{key_id}")
    assert (latest["detail"]["new_name"], latest["detail"]["expires_at"]) == ("team-2", None)
    assert (first["detail"]["models"], first["detail"]["limits"]) == (["a", "b"], 1)


async def test_patch_refusals(store: Store, client: Client, users: dict[Role, str], clock: Clock) -> None:
    token = users["operator"]
    key_id = (await client.request("POST", "/admin/api/keys", json={"name": "k"}, token=token)).json["id"]
    await client.request("POST", "/admin/api/keys", json={"name": "other"}, token=token)
    path = f"/admin/api/keys/{key_id}"
    cases: list[tuple[Any, str, str]] = [
        ({}, "missing_parameter", "name"),
        ({"name": None}, "invalid_value", "name"),
        ({"expires_at": T0 - 1}, "invalid_value", "expires_at"),
        ({"quotas": {"daily_requests": 0}}, "invalid_value", "quotas.daily_requests"),
        ({"quotas": {"daily_request": 5}}, "unknown_parameter", "quotas.daily_request"),
        ({"services": ["chat", "nope"]}, "invalid_value", "services"),
        ({"limits": [{"scope": "key", "rate": -1}]}, "invalid_value", "limits"),
        ({"name": "12"}, "invalid_request_error", ""),
    ]
    before = await store.get_key(key_id)
    for body, code, param in cases:
        reply = await client.request("PATCH", path, json=body, token=token)
        assert reply.status == 400, (body, reply.body)
        error = reply.error
        assert error["type"] == "invalid_request_error", body
        if param:
            assert (error["code"], error["param"]) == (code, param), (body, error)
    assert await store.get_key(key_id) == before  # nothing was half-done
    taken = await client.request("PATCH", path, json={"name": "other"}, token=token)
    assert (taken.status, taken.error["type"]) == (409, "invalid_request_error")
    assert (await client.request("PATCH", path, json={"name": "k"}, token=token)).status == 200  # its own name
    viewer = await client.request("PATCH", path, json={"name": "v"}, token=users["viewer"])
    assert (viewer.status, viewer.error["type"]) == (403, "permission_error")
    assert (await client.request("PATCH", "/admin/api/keys/999", json={"name": "x"}, token=token)).status == 404
    await client.request("POST", path + "/revoke", token=token)
    revoked = await client.request("PATCH", path, json={"models": []}, token=token)
    assert revoked.status == 409


async def _usage(store: Store) -> None:
    """Two keys (one stored, one from the config file), two models, records on two UTC days."""
    late, next_day = T0 + 4_600, T0 + 8_200  # 23:30 on the 14th and 00:30 on the 15th, UTC
    await store.insert_usage(
        [
            UsageRecord(ts=late, key_id="store:1", model="gpt", endpoint="chat", status=200, prompt_tokens=10),
            UsageRecord(ts=late + 1, key_id="store:1", model="emb", endpoint="embeddings", status=200, prompt_tokens=4),
            UsageRecord(ts=next_day, key_id="store:1", model="gpt", endpoint="chat", status=502),
            UsageRecord(
                ts=next_day + 5, key_id="config:ci", model="gpt", endpoint="chat", status=200, completion_tokens=7
            ),
            UsageRecord(ts=next_day + 6, model="=HYPERLINK(1)", endpoint="chat", status=404),
        ]
    )


async def test_usage_per_day_in_the_readers_time_zone(store: Store, client: Client, users: dict[Role, str]) -> None:
    token = users["viewer"]
    await client.request("POST", "/admin/api/keys", json={"name": "team"}, token=users["operator"])  # store:1
    await _usage(store)
    utc = (await client.request("GET", "/admin/api/usage?per=day&group_by=key", token=token)).json
    assert (utc["per"], utc["group_by"]) == ("day", "key")
    rows = [(r["day"], r["key_id"], r["key_name"], r["requests"], r["errors"], r["total_tokens"]) for r in utc["data"]]
    assert rows == [
        ("2023-11-14", "store:1", "team", 2, 0, 14),
        ("2023-11-15", None, None, 1, 1, 0),
        ("2023-11-15", "config:ci", "ci", 1, 0, 7),
        ("2023-11-15", "store:1", "team", 1, 1, 0),
    ]
    assert utc["data"][0]["last_used"] == pytest.approx(T0 + 4_601, abs=1e-3)
    east = (await client.request("GET", "/admin/api/usage?per=day&group_by=none&utc_offset=480", token=token)).json
    assert [(r["day"], r["requests"], r["key_id"], r["model"]) for r in east["data"]] == [("2023-11-15", 5, None, None)]
    whole = (await client.request("GET", "/admin/api/usage?group_by=model&key_id=store:1", token=token)).json
    assert [(r["model"], r["requests"], "day" in r) for r in whole["data"]] == [("emb", 1, False), ("gpt", 2, False)]
    for bad in ("utc_offset=900", "utc_offset=x", "per=week", "format=xml"):
        reply = await client.request("GET", "/admin/api/usage?" + bad, token=token)
        assert (reply.status, reply.error["param"]) == (400, bad.split("=")[0]), bad


async def test_usage_as_csv(store: Store, client: Client, users: dict[Role, str]) -> None:
    await client.request("POST", "/admin/api/keys", json={"name": "team"}, token=users["operator"])
    await _usage(store)
    reply = await client.request("GET", "/admin/api/usage?per=day&format=csv", token=users["viewer"])
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert reply.headers["content-disposition"] == 'attachment; filename="usage.csv"'
    assert reply.headers["cache-control"] == "no-store"
    table = list(csv.DictReader(io.StringIO(reply.body.decode())))
    json_rows = (await client.request("GET", "/admin/api/usage?per=day", token=users["viewer"])).json["data"]
    assert len(table) == len(json_rows) == 5
    for row, same in zip(table, json_rows, strict=True):
        assert (row["day"], row["key_name"], int(row["requests"]), int(row["total_tokens"])) == (
            same["day"],
            same["key_name"] or "",
            same["requests"],
            same["total_tokens"],
        )
    assert table[0]["last_used"] == "2023-11-14T23:30:01Z"
    # A model name a client made up cannot become a formula in the operator's spreadsheet.
    assert [row["model"] for row in table if "HYPERLINK" in row["model"]] == ["'=HYPERLINK(1)"]


async def test_audit_filters_and_pages(store: Store, client: Client, users: dict[Role, str]) -> None:
    token = users["operator"]
    for n in range(7):
        await client.request("POST", "/admin/api/keys", json={"name": f"k{n}"}, token=token)
    await client.request("POST", "/admin/api/keys/3/disable", token=token)
    await store.audit("admin", "config.apply", "config")
    viewer = users["viewer"]
    page = (await client.request("GET", "/admin/api/audit?action=key&limit=3", token=viewer)).json
    assert [e["action"] for e in page["data"]] == ["key.disable", "key.create", "key.create"]
    assert page["has_more"] is True
    seen = page["data"]
    while page["has_more"]:
        page = (
            await client.request("GET", f"/admin/api/audit?action=key&limit=3&before_id={seen[-1]['id']}", token=viewer)
        ).json
        seen += page["data"]
    assert len({e["id"] for e in seen}) == len(seen) == 8
    assert [e["target"] for e in seen if e["action"] == "key.create"] == [f"key:{n}" for n in range(7, 0, -1)]
    on_three = (await client.request("GET", "/admin/api/audit?target=key:3", token=viewer)).json["data"]
    assert [e["action"] for e in on_three] == ["key.disable", "key.create"]
    mine = (await client.request("GET", "/admin/api/audit?actor=admin&action=config", token=viewer)).json
    assert ([e["action"] for e in mine["data"]], mine["has_more"]) == (["config.apply"], False)
    logins = (await client.request("GET", "/admin/api/audit?actor=admin", token=viewer)).json["data"]
    assert [e["action"] for e in logins] == ["config.apply", "admin.login"]
    bad = await client.request("GET", "/admin/api/audit?actr=x", token=viewer)
    assert (bad.status, bad.error["code"], bad.error["param"]) == (400, "unknown_parameter", "actr")


def test_a_patched_key_is_what_the_gateway_judges_next(
    tmp_path: Any,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[[dict[str, Any]], GatewayServer],
) -> None:
    """Through the gateway, as the console does it: a key allowed one model, widened to two, then its quota
    lowered to what it has used - each change honoured by the next request without a restart."""
    import httpx2

    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data"), "refresh_interval": 0.2},
            "auth": {"enabled": True},
            "usage": {"enabled": True, "flush_interval": 0.1},
            "services": {"chat": {"instances": [{"name": "a", "base_url": url}, {"name": "b", "base_url": url}]}},
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD, "operator"))
    login = httpx2.post(gw.url + "/admin/api/login", json={"username": "ops", "password": PASSWORD}, timeout=10)
    admin = {"Authorization": "Bearer " + login.json()["token"]}
    made = httpx2.post(gw.url + "/admin/api/keys", json={"name": "team", "models": ["a"]}, headers=admin, timeout=10)
    key = made.json()
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=key["secret"], max_retries=0)
    hello = [{"role": "user", "content": "hi"}]

    def eventually(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 5
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    def allowed(model: str) -> bool:
        """Whether the key may use ``model``; it may also not be known yet (401) right after its creation."""
        try:
            sdk.chat.completions.create(model=model, messages=hello)  # type: ignore[arg-type]
        except (openai.PermissionDeniedError, openai.AuthenticationError):
            return False
        return True

    eventually(lambda: allowed("a"), "the new key works")
    assert not allowed("b")
    path = f"{gw.url}/admin/api/keys/{key['id']}"
    widened = httpx2.patch(path, json={"models": ["a", "b"]}, headers=admin, timeout=10)
    assert widened.status_code == 200
    eventually(lambda: allowed("b"), "the widened key reaches b")
    assert httpx2.patch(path, json={"quotas": {"daily_requests": 1}}, headers=admin, timeout=10).status_code == 200

    def refused() -> bool:
        try:
            sdk.chat.completions.create(model="a", messages=hello)
        except openai.RateLimitError:
            return True
        return False

    eventually(refused, "the lowered quota refuses")
    usage = httpx2.get(gw.url + "/admin/api/usage?group_by=key&per=day", headers=admin, timeout=10).json()
    assert [r["key_name"] for r in usage["data"]] == ["team"]
    assert usage["data"][0]["requests"] >= 2
