"""The admin API (``modelrouter.admin``): login and tokens, roles, key management, the audit log, login
throttling, the first admin at startup, and above all that client API keys never open an admin route.

Most tests call the ASGI app in-process (``Client`` below, a few lines of raw ASGI) on a SQLite store in a temp
dir, with a fake clock shared by the store and the app so tokens expire and throttles clear without sleeping.
One test mounts the app on a real gateway under uvicorn, as production does."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from modelrouter.access.keys import hash_secret
from modelrouter.admin import PASSWORD_ENV, ROUTES, AdminApp, ensure_first_admin
from modelrouter.admin.ratelimit import AttemptLimiter
from modelrouter.config.model import AdminConfig, StoreConfig
from modelrouter.store import Role, Store

from .fakes import FakeOpenAI
from .servers import BackgroundLoop, GatewayServer

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.json["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return error


class Client:
    """Raw ASGI calls into the admin app; each request may come from its own client IP."""

    def __init__(self, app: AdminApp) -> None:
        self.app = app

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        ip: str = "127.0.0.1",
    ) -> Reply:
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if token is not None:
            raw_headers.append((b"authorization", f"Bearer {token}".encode()))
        if json is not None:
            body = orjson.dumps(json)
            raw_headers.append((b"content-type", b"application/json"))
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query.encode(),
            "headers": raw_headers,
            "client": (ip, 50000),
        }
        messages = [{"type": "http.request", "body": body or b"", "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start, *chunks = sent
        assert start["type"] == "http.response.start"
        return Reply(
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(c.get("body", b"") for c in chunks),
        )

    async def attempt(self, username: str, password: str, ip: str = "127.0.0.1") -> Reply:
        return await self.request("POST", "/admin/api/login", json={"username": username, "password": password}, ip=ip)

    async def login(self, username: str, password: str = PASSWORD, ip: str = "127.0.0.1") -> str:
        reply = await self.attempt(username, password, ip)
        assert reply.status == 200, reply.body
        token: str = reply.json["token"]
        return token


class Settings:
    """The config getter's answer, changeable by a test."""

    def __init__(self) -> None:
        self.admin = AdminConfig()

    def __call__(self) -> AdminConfig:
        return self.admin


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    store = await Store.open(StoreConfig(data_dir=str(tmp_path)), clock=clock)
    yield store
    await store.close()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def client(store: Store, settings: Settings, clock: Clock) -> Client:
    return Client(AdminApp(lambda: store, settings, clock=clock))


@pytest.fixture
async def users(store: Store, client: Client) -> dict[Role, str]:
    """One admin user per role, logged in: role -> token."""
    tokens: dict[Role, str] = {}
    for role in ("admin", "operator", "viewer"):
        await store.create_admin(role, PASSWORD, role)
        # Each from its own address, so that the login throttle (5 a minute per IP) leaves the test its own tries.
        tokens[role] = await client.login(role, ip=f"10.0.0.{len(tokens) + 1}")
    return tokens


# --- login, tokens, logout -----------------------------------------------------------------------------------


async def test_login_gives_a_token_that_works_on_me(store: Store, client: Client, clock: Clock) -> None:
    await store.create_admin("root", PASSWORD, "operator")
    reply = await client.request("POST", "/admin/api/login", json={"username": "root", "password": PASSWORD})
    assert reply.status == 200
    assert reply.headers["cache-control"] == "no-store"
    login = reply.json
    assert login["role"] == "operator"
    assert login["expires_at"] == pytest.approx(clock.now + AdminConfig().token_ttl)
    assert login["token"].startswith("mrt-")
    me = await client.request("GET", "/admin/api/me", token=login["token"])
    assert me.status == 200
    assert (me.json["username"], me.json["role"], me.json["disabled"]) == ("root", "operator", False)


async def test_wrong_password_unknown_user_and_disabled_user_get_the_same_answer(store: Store, client: Client) -> None:
    await store.create_admin("root", PASSWORD)
    await store.create_admin("gone", PASSWORD)
    await store.set_admin_disabled("gone", True)
    replies = [
        await client.attempt("root", "wrong password"),
        await client.attempt("nobody", PASSWORD),
        await client.attempt("gone", PASSWORD),
    ]
    for reply in replies:
        assert reply.status == 401
        assert reply.error == {
            "message": "Incorrect username or password",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_credentials",
        }
    assert len({r.body for r in replies}) == 1


async def test_logout_revokes_the_token(store: Store, client: Client) -> None:
    await store.create_admin("root", PASSWORD)
    token = await client.login("root")
    other = await client.login("root")
    assert (await client.request("POST", "/admin/api/logout", token=token)).json == {"logged_out": True}
    after = await client.request("GET", "/admin/api/me", token=token)
    assert after.status == 401
    assert after.error["type"] == "authentication_error"
    assert after.headers["www-authenticate"].startswith("Bearer")
    assert (await client.request("POST", "/admin/api/logout", token=token)).status == 401
    # Only the token presented: another session of the same user goes on.
    assert (await client.request("GET", "/admin/api/me", token=other)).status == 200


async def test_token_expires_after_token_ttl(store: Store, client: Client, settings: Settings, clock: Clock) -> None:
    settings.admin = AdminConfig(token_ttl=30)
    await store.create_admin("root", PASSWORD)
    token = await client.login("root")
    clock.advance(29)
    assert (await client.request("GET", "/admin/api/me", token=token)).status == 200
    clock.advance(2)
    assert (await client.request("GET", "/admin/api/me", token=token)).status == 401


async def test_admin_token_only_as_bearer(store: Store, client: Client) -> None:
    await store.create_admin("root", PASSWORD)
    token = await client.login("root")
    for headers in ({"X-API-Key": token}, {"Authorization": token}, {"Authorization": f"Basic {token}"}):
        assert (await client.request("GET", "/admin/api/me", headers=headers)).status == 401, headers
    assert (await client.request("GET", "/admin/api/me", headers={"Authorization": f"bearer  {token}"})).status == 200


# --- roles ---------------------------------------------------------------------------------------------------


async def test_viewer_may_only_read(client: Client, users: dict[Role, str]) -> None:
    viewer = users["viewer"]
    for path in ("/admin/api/me", "/admin/api/keys", "/admin/api/admins", "/admin/api/audit"):
        assert (await client.request("GET", path, token=viewer)).status == 200, path
    denied = await client.request("POST", "/admin/api/keys", json={"name": "k"}, token=viewer)
    assert denied.status == 403
    assert denied.error["type"] == "permission_error"
    assert denied.error["code"] == "insufficient_role"
    new_admin = {"username": "x", "password": PASSWORD, "role": "viewer"}
    assert (await client.request("POST", "/admin/api/admins", json=new_admin, token=viewer)).status == 403


async def test_operator_manages_keys_but_not_admins(client: Client, users: dict[Role, str]) -> None:
    operator = users["operator"]
    created = await client.request("POST", "/admin/api/keys", json={"name": "team"}, token=operator)
    assert created.status == 201
    key_id = created.json["id"]
    for action in ("disable", "enable", "rotate", "revoke"):
        assert (await client.request("POST", f"/admin/api/keys/{key_id}/{action}", token=operator)).status == 200
    assert (await client.request("DELETE", f"/admin/api/keys/{key_id}", token=operator)).status == 200
    new_admin = {"username": "x", "password": PASSWORD, "role": "viewer"}
    denied = await client.request("POST", "/admin/api/admins", json=new_admin, token=operator)
    assert denied.status == 403
    assert denied.error["type"] == "permission_error"


async def test_admin_creates_admin_users(store: Store, client: Client, users: dict[Role, str]) -> None:
    new_admin = {"username": "carol", "password": PASSWORD, "role": "operator"}
    created = await client.request("POST", "/admin/api/admins", json=new_admin, token=users["admin"])
    assert created.status == 201
    assert (created.json["username"], created.json["role"]) == ("carol", "operator")
    assert PASSWORD not in created.body.decode()
    assert await store.verify_admin("carol", PASSWORD) is not None
    listing = await client.request("GET", "/admin/api/admins", token=users["admin"])
    assert [a["username"] for a in listing.json["data"]] == ["admin", "operator", "viewer", "carol"]
    again = await client.request("POST", "/admin/api/admins", json=new_admin, token=users["admin"])
    assert again.status == 409
    for bad, param in (
        ({"username": "d", "password": "short", "role": "viewer"}, "password"),
        ({"username": "d", "password": PASSWORD, "role": "root"}, "role"),
        ({"username": " d", "password": PASSWORD, "role": "viewer"}, "username"),
        ({"username": "d", "password": PASSWORD}, "role"),
    ):
        reply = await client.request("POST", "/admin/api/admins", json=bad, token=users["admin"])
        assert (reply.status, reply.error["param"]) == (400, param), bad


# --- keys ------------------------------------------------------------------------------------------------------


async def test_key_secret_is_shown_once_and_never_listed(
    store: Store, client: Client, users: dict[Role, str], clock: Clock
) -> None:
    token = users["operator"]
    request = {
        "name": "team-a",
        "models": ["gpt-4o"],
        "services": ["chat", "embedding"],
        "expires_at": clock.now + 86400,
        "quotas": {"requests_per_minute": 60, "daily_tokens": 100000},
    }
    created = await client.request("POST", "/admin/api/keys", json=request, token=token)
    assert created.status == 201
    key = created.json
    secret = key.pop("secret")
    assert secret.startswith("mr-")
    assert key["prefix"] == secret[:12]
    assert (key["name"], key["models"], key["services"], key["enabled"], key["active"]) == (
        "team-a",
        ["gpt-4o"],
        ["chat", "embedding"],
        True,
        True,
    )
    assert key["quotas"] == {"requests_per_minute": 60, "daily_tokens": 100000}
    assert key["expires_at"] == request["expires_at"]
    record = await store.get_key(key["id"])
    assert record is not None
    assert record.hash == hash_secret(secret)

    listing = await client.request("GET", "/admin/api/keys", token=token)
    assert listing.json["data"] == [key]
    assert secret not in listing.body.decode()
    assert record.hash not in listing.body.decode()
    assert all("secret" not in k and "hash" not in k for k in listing.json["data"])

    rotated = await client.request("POST", f"/admin/api/keys/{key['id']}/rotate", token=token)
    new_secret = rotated.json["secret"]
    assert new_secret != secret
    assert rotated.json["prefix"] == new_secret[:12]
    assert await store.get_key_by_hash(hash_secret(secret)) is None
    listing = await client.request("GET", "/admin/api/keys", token=token)
    assert new_secret not in listing.body.decode()


async def test_key_lifecycle(store: Store, client: Client, users: dict[Role, str]) -> None:
    token = users["operator"]
    key_id = (await client.request("POST", "/admin/api/keys", json={"name": "k"}, token=token)).json["id"]
    path = f"/admin/api/keys/{key_id}"
    assert (await client.request("POST", path + "/disable", token=token)).json["enabled"] is False
    assert (await client.request("POST", path + "/enable", token=token)).json["enabled"] is True
    revoked = await client.request("POST", path + "/revoke", token=token)
    assert (revoked.json["revoked_at"] is not None, revoked.json["active"]) == (True, False)
    # A revoked key stays revoked.
    assert (await client.request("POST", path + "/enable", token=token)).status == 409
    assert (await client.request("POST", path + "/rotate", token=token)).status == 409
    deleted = await client.request("DELETE", path, token=token)
    assert deleted.json == {"id": key_id, "deleted": True}
    assert await store.get_key(key_id) is None
    for method, url in (("DELETE", path), ("POST", path + "/disable"), ("POST", "/admin/api/keys/999/rotate")):
        missing = await client.request(method, url, token=token)
        assert missing.status == 404, url
        assert missing.error["type"] == "not_found_error"


async def test_key_names_are_unique_so_commands_can_take_them(client: Client, users: dict[Role, str]) -> None:
    token = users["operator"]
    first = await client.request("POST", "/admin/api/keys", json={"name": "team-a"}, token=token)
    assert first.status == 201
    again = await client.request("POST", "/admin/api/keys", json={"name": "team-a"}, token=token)
    assert again.status == 409
    assert (again.error["type"], again.error["code"]) == ("invalid_request_error", "conflict")
    assert f"id {first.json['id']}" in again.error["message"]
    digits = await client.request("POST", "/admin/api/keys", json={"name": "123"}, token=token)
    assert digits.status == 400
    assert "only digits" in digits.error["message"]


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "k", "services": ["chat", "nope"]}, "services"),
        ({"name": "k", "models": "gpt-4o"}, "models"),
        ({"name": "k", "expires_at": 1}, "expires_at"),
        ({"name": "k", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "k", "expires_at": 253402300800}, "expires_at"),  # after 9999-12-31: no timestamp column holds it
        ({"name": "k", "expires_at": 1e17}, "expires_at"),
        ({"name": "k", "quotas": {"daily_tokens": 0}}, "quotas.daily_tokens"),
        ({"name": "k", "quotas": {"per_fortnight": 3}}, "quotas.per_fortnight"),
        ({"name": "k", "expires": 2_000_000_000}, "expires"),
    ],
)
async def test_bad_key_requests_are_400(
    client: Client, users: dict[Role, str], request_body: dict[str, Any], param: str
) -> None:
    reply = await client.request("POST", "/admin/api/keys", json=request_body, token=users["operator"])
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["param"] == param


async def test_bad_input_is_named_in_the_documents_words(client: Client, users: dict[Role, str]) -> None:
    """Bodies and queries are validated from the models the OpenAPI document is built from; each problem is a 400
    invalid_request_error whose code says what kind it is and whose param names the field."""
    token = users["admin"]
    cases: list[tuple[str, str, dict[str, Any] | None, str, str]] = [
        # unknown fields first, all of them named (a misspelt field explains the "missing" error it causes)
        ("POST", "/admin/api/keys", {"nam": "k", "expire": 1}, "unknown_parameter", "nam"),
        ("POST", "/admin/api/keys", {}, "missing_parameter", "name"),
        ("POST", "/admin/api/keys", {"name": ["k"]}, "invalid_type", "name"),
        ("POST", "/admin/api/keys", {"name": "k", "expires_at": True}, "invalid_type", "expires_at"),
        ("POST", "/admin/api/keys", {"name": "   "}, "invalid_value", "name"),
        ("POST", "/admin/api/keys", {"name": "k", "models": ["a", ""]}, "invalid_value", "models"),
        ("POST", "/admin/api/admins", {"username": "d", "password": "x" * 8, "role": "root"}, "invalid_value", "role"),
        ("PATCH", "/admin/api/admins/viewer", {"disabled": "yes"}, "invalid_type", "disabled"),
        ("GET", "/admin/api/audit?limit=abc", None, "invalid_value", "limit"),
        ("GET", "/admin/api/usage?group_by=day", None, "invalid_value", "group_by"),
        ("GET", "/admin/api/usage?modle=m", None, "unknown_parameter", "modle"),
    ]
    for method, path, body, code, param in cases:
        reply = await client.request(method, path, json=body, token=token)
        assert reply.status == 400, (path, body, reply.body)
        error = reply.error
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param), (path, body)
        assert param in error["message"], error
    unknown = await client.request("POST", "/admin/api/keys", json={"nam": "k", "expire": 1}, token=token)
    assert unknown.error["message"] == "unknown field(s): nam, expire"
    # A valid request after all of that still works: nothing was half-done.
    assert (await client.request("POST", "/admin/api/keys", json={"name": "k"}, token=token)).status == 201


async def test_bad_bodies_urls_and_methods(client: Client, users: dict[Role, str]) -> None:
    token = users["admin"]
    headers = {"content-type": "application/json"}
    for body in (b"{not json", b"[1, 2]"):
        reply = await client.request("POST", "/admin/api/keys", body=body, headers=headers, token=token)
        assert reply.status == 400, body
    plain = {"content-type": "text/plain"}
    reply = await client.request("POST", "/admin/api/keys", body=b"name=k", headers=plain, token=token)
    assert reply.status == 415
    for path in ("/admin/api/nope", "/admin/", "/admin/api/keys/abc/disable", "/admin/api/keys/1/explode"):
        reply = await client.request("GET", path, token=token)
        assert (reply.status, reply.error["code"]) == (404, "unknown_url"), path
    reply = await client.request("PUT", "/admin/api/keys", token=token)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, POST"
    assert (await client.request("GET", "/admin/api/login")).status == 405
    assert (await client.request("GET", "/admin/api/audit?limit=0", token=token)).error["param"] == "limit"


async def test_no_store_is_503(settings: Settings, clock: Clock) -> None:
    client = Client(AdminApp(lambda: None, settings, clock=clock))
    reply = await client.attempt("a", "b")
    assert reply.status == 503
    assert reply.error["type"] == "overloaded_error"
    assert (await client.request("GET", "/admin/api/keys")).status == 503


# --- audit -----------------------------------------------------------------------------------------------------


async def test_every_write_is_audited_without_secrets(store: Store, client: Client, users: dict[Role, str]) -> None:
    operator, admin = users["operator"], users["admin"]
    before = len(await store.list_audit(1000))
    created = await client.request("POST", "/admin/api/keys", json={"name": "k"}, token=operator)
    key_id = created.json["id"]
    secrets_shown = [created.json["secret"]]
    for action in ("disable", "enable", "rotate", "revoke"):
        reply = await client.request("POST", f"/admin/api/keys/{key_id}/{action}", token=operator)
        secrets_shown += [reply.json["secret"]] if action == "rotate" else []
    await client.request("DELETE", f"/admin/api/keys/{key_id}", token=operator)
    new_admin = {"username": "dave", "password": "dave's password", "role": "viewer"}
    await client.request("POST", "/admin/api/admins", json=new_admin, token=admin)
    await client.attempt("dave", "wrong!", ip="10.1.1.1")
    await client.request("POST", "/admin/api/logout", token=admin)

    entries = list(reversed(await store.list_audit(1000)))[before:]
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("operator", "key.create", f"key:{key_id}"),
        ("operator", "key.disable", f"key:{key_id}"),
        ("operator", "key.enable", f"key:{key_id}"),
        ("operator", "key.rotate", f"key:{key_id}"),
        ("operator", "key.revoke", f"key:{key_id}"),
        ("operator", "key.delete", f"key:{key_id}"),
        ("admin", "admin.create", "admin:dave"),
        ("anonymous", "admin.login_failed", "admin:dave"),
        ("admin", "admin.logout", "admin:admin"),
    ]
    assert entries[-2].detail["ip"] == "10.1.1.1"
    # The logins of the fixture were audited too.
    all_entries = await store.list_audit(1000)
    assert {("admin.login", f"admin:{role}") for role in users} <= {(e.action, e.target) for e in all_entries}

    listing = await client.request("GET", "/admin/api/audit?limit=3", token=operator)
    assert [e["action"] for e in listing.json["data"]] == ["admin.logout", "admin.login_failed", "admin.create"]
    text = orjson.dumps([e.detail for e in all_entries]).decode()
    for secret in [*secrets_shown, PASSWORD, "dave's password", "wrong!", *users.values()]:
        assert secret not in text


# --- login throttling ------------------------------------------------------------------------------------------


async def test_login_is_throttled_per_ip(store: Store, client: Client, settings: Settings, clock: Clock) -> None:
    settings.admin = AdminConfig(login_attempts_per_minute=3)
    await store.create_admin("root", PASSWORD)
    # 4 x 3 a minute from one address, over any usernames (so several admins behind one NAT each get their 3).
    for n in range(12):
        assert (await client.attempt(f"user{n}", "x")).status == 401
    clock.advance(10)
    throttled = await client.attempt("root", PASSWORD)
    assert throttled.status == 429
    assert throttled.error["type"] == "rate_limit_error"
    assert throttled.headers["retry-after"] == "50"
    assert (await client.attempt("root", PASSWORD, ip="10.9.9.9")).status == 200  # another address is not affected
    clock.advance(50)
    assert (await client.attempt("root", PASSWORD)).status == 200


async def test_login_is_throttled_per_username_and_address(
    store: Store, client: Client, settings: Settings, clock: Clock
) -> None:
    settings.admin = AdminConfig(login_attempts_per_minute=2)
    await store.create_admin("root", PASSWORD)
    for _ in range(2):
        assert (await client.attempt("root", "x", ip="10.0.0.1")).status == 401
    # That address, even with the right password: it is guessing at this account.
    throttled = await client.attempt("root", PASSWORD, ip="10.0.0.1")
    assert throttled.status == 429
    assert throttled.headers["retry-after"] == "60"
    # The same answer for a username that does not exist: throttling tells nothing about who exists.
    for _ in range(2):
        await client.attempt("ghost", "x", ip="10.1.0.1")
    ghost = await client.attempt("ghost", "x", ip="10.1.0.1")
    assert (ghost.status, ghost.error) == (429, throttled.error)
    # The address may still try other usernames (up to its own limit).
    assert (await client.attempt("other", "x", ip="10.0.0.1")).status == 401
    clock.advance(60)
    assert (await client.login("root", ip="10.0.0.1")).startswith("mrt-")


async def test_bad_passwords_from_anywhere_do_not_lock_the_admin_out(
    store: Store, client: Client, settings: Settings, clock: Clock
) -> None:
    settings.admin = AdminConfig(login_attempts_per_minute=5)
    await store.create_admin("admin", PASSWORD)
    # Anyone, from a few addresses, guessing at `admin` as fast as they are let.
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        for _ in range(6):
            assert (await client.attempt("admin", "guess", ip=ip)).status in (401, 429)
    # The real admin, from an address of its own, gets in.
    assert (await client.login("admin", ip="10.0.0.7")).startswith("mrt-")


async def test_login_password_checks_have_a_global_cap(
    store: Store, client: Client, settings: Settings, clock: Clock
) -> None:
    # The password hash is the expensive part: many addresses together get at most 20 x the limit a minute.
    settings.admin = AdminConfig(login_attempts_per_minute=2)
    await store.create_admin("root", PASSWORD)
    for n in range(40):
        assert (await client.attempt(f"user{n % 7}", "x", ip=f"10.2.{n}.1")).status == 401
    clock.advance(30)
    capped = await client.attempt("root", PASSWORD, ip="10.3.0.1")
    assert capped.status == 429
    assert capped.headers["retry-after"] == "30"
    clock.advance(30)
    assert (await client.login("root", ip="10.3.0.1")).startswith("mrt-")


def test_login_throttle_forgets_quiet_clients() -> None:
    clock = Clock()
    limiter = AttemptLimiter(clock)
    for n in range(100):  # a guesser trying many usernames
        assert limiter.check((f"user:{n}", 5)) is None
    assert len(limiter) == 100
    clock.advance(61)
    assert limiter.check(("ip:10.0.0.1", 5)) is None
    assert len(limiter) == 1


# --- client keys never open an admin route ----------------------------------------------------------------------

EVERY_ROUTE = [
    ("POST", "/admin/api/login"),
    ("POST", "/admin/api/logout"),
    ("GET", "/admin/api/me"),
    ("GET", "/admin/api/keys"),
    ("POST", "/admin/api/keys"),
    ("PATCH", "/admin/api/keys/{id}"),
    ("POST", "/admin/api/keys/{id}/disable"),
    ("POST", "/admin/api/keys/{id}/enable"),
    ("POST", "/admin/api/keys/{id}/revoke"),
    ("POST", "/admin/api/keys/{id}/rotate"),
    ("DELETE", "/admin/api/keys/{id}"),
    ("GET", "/admin/api/admins"),
    ("POST", "/admin/api/admins"),
    ("PATCH", "/admin/api/admins/{username}"),
    ("POST", "/admin/api/admins/{username}/password"),
    ("GET", "/admin/api/audit"),
    ("GET", "/admin/api/config"),
    ("PUT", "/admin/api/config"),
    ("GET", "/admin/api/config/export"),
    ("GET", "/admin/api/config/versions"),
    ("GET", "/admin/api/config/versions/{version}"),
    ("POST", "/admin/api/config/versions/{version}/apply"),
    ("GET", "/admin/api/config/diff"),
    ("GET", "/admin/api/config/sections/{section}"),
    ("PUT", "/admin/api/config/sections/{section}"),
    ("GET", "/admin/api/services"),
    ("GET", "/admin/api/services/{service}"),
    ("PUT", "/admin/api/services/{service}"),
    ("PATCH", "/admin/api/services/{service}"),
    ("DELETE", "/admin/api/services/{service}"),
    ("POST", "/admin/api/services/{service}/instances"),
    ("PUT", "/admin/api/services/{service}/instances/{name}"),
    ("PATCH", "/admin/api/services/{service}/instances/{name}"),
    ("DELETE", "/admin/api/services/{service}/instances/{name}"),
    ("GET", "/admin/api/state"),
    ("GET", "/admin/api/metrics/history"),
    ("GET", "/admin/api/usage"),
    ("GET", "/admin/api/usage/records"),
    ("GET", "/admin/api/endpoints"),
]

# What each path parameter is replaced with when a test calls every route.
PATH_VALUES = {"{username}": "admin", "{version}": "1", "{section}": "aliases", "{service}": "chat", "{name}": "m"}


def concrete(template: str, key_id: int = 1) -> str:
    path = template.replace("{id}", str(key_id))
    for name, value in PATH_VALUES.items():
        path = path.replace(name, value)
    return path


def test_the_route_list_below_is_every_route() -> None:
    assert [(r.method, r.template) for r in ROUTES] == EVERY_ROUTE


@pytest.mark.parametrize("credentials", ["bearer client key", "x-api-key client key", "none"])
@pytest.mark.parametrize(("method", "template"), EVERY_ROUTE)
async def test_client_api_keys_never_work_on_admin_routes(
    store: Store, client: Client, clock: Clock, method: str, template: str, credentials: str
) -> None:
    await store.create_admin("admin", PASSWORD)
    key, secret = await store.create_key("client", services=["chat"])
    assert key.is_active(clock.now)  # a key the data plane would accept
    headers = {
        "bearer client key": {"Authorization": f"Bearer {secret}"},
        "x-api-key client key": {"X-API-Key": secret},
        "none": {},
    }[credentials]
    # A body that would be valid for the route, so only the credentials can be what is refused; on login, the
    # client key tried as the admin's password.
    body = {
        "/admin/api/login": {"username": "admin", "password": secret},
        "/admin/api/keys": {"name": "sneaky"},
        "/admin/api/admins": {"username": "sneaky", "password": PASSWORD, "role": "admin"},
    }.get(template)
    body = body if method in ("POST", "PUT", "PATCH") else None
    reply = await client.request(method, concrete(template, key.id), json=body, headers=headers)
    assert reply.status == 401, reply.body
    assert reply.error["type"] == "authentication_error"
    # Nothing changed.
    assert [a.username for a in await store.list_admins()] == ["admin"]
    assert await store.list_keys() == [key]


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if r.role in ("operator", "admin")], ids=lambda r: f"{r.method} {r.template}"
)
async def test_a_role_below_the_routes_is_refused_and_nothing_is_written(
    store: Store, client: Client, users: dict[Role, str], route: Any
) -> None:
    weaker = ["viewer"] if route.role == "operator" else ["viewer", "operator"]
    audit_before = await store.list_audit(1000)
    for role in weaker:
        reply = await client.request(route.method, concrete(route.template), json={}, token=users[role])
        assert reply.status == 403, (role, reply.body)
        assert reply.error["code"] == "insufficient_role"
    assert await store.list_audit(1000) == audit_before


def test_a_client_key_that_works_on_v1_is_refused_on_admin_through_the_gateway(
    bg: BackgroundLoop,
    tmp_path: Path,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[[dict[str, Any]], GatewayServer],
) -> None:
    """As in production: the front door forwards /admin/ to the admin app, and a key good for /v1 gets 401."""
    client_key = "mr-client-key-0123456789abcdefghijklmn"
    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "auth": {"enabled": True, "keys": [{"name": "team", "key": client_key}]},
            "services": {"chat": {"instances": [{"name": "m", "base_url": url}]}},
        }
    )
    store = bg.run(Store.open(StoreConfig(data_dir=str(tmp_path))))  # on the gateway's loop, which will use it
    try:
        assert bg.run(ensure_first_admin(store, env={PASSWORD_ENV: PASSWORD})) == "admin"
        gw.gateway.admin = AdminApp(lambda: store, lambda: gw.gateway.config.admin)
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        ok = httpx2.post(gw.url + "/v1/chat/completions", json=chat, headers={"X-API-Key": client_key}, timeout=10)
        assert ok.status_code == 200
        for headers in ({"Authorization": f"Bearer {client_key}"}, {"X-API-Key": client_key}, {}):
            reply = httpx2.get(gw.url + "/admin/api/keys", headers=headers, timeout=10)
            assert reply.status_code == 401
            assert reply.json()["error"]["type"] == "authentication_error"
        login = httpx2.post(gw.url + "/admin/api/login", json={"username": "admin", "password": PASSWORD}, timeout=10)
        token = login.json()["token"]
        keys = httpx2.get(gw.url + "/admin/api/keys", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert (keys.status_code, keys.json()["data"]) == (200, [])
    finally:
        gw.gateway.admin = None
        bg.run(store.close())


def test_importing_the_admin_api_leaves_the_store_unloaded() -> None:
    """A gateway without a store mounts the admin API (answering 503) without paying for SQLAlchemy."""
    code = "import sys, modelrouter.app, modelrouter.admin; print('sqlalchemy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# --- the first admin ---------------------------------------------------------------------------------------------


async def test_first_admin_with_the_password_from_the_environment(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelrouter.admin")
    assert await ensure_first_admin(store, env={PASSWORD_ENV: PASSWORD}) == "admin"
    admins = await store.list_admins()
    assert [(a.username, a.role) for a in admins] == [("admin", "admin")]
    assert await store.verify_admin("admin", PASSWORD) is not None
    assert PASSWORD not in caplog.text
    # A second start changes nothing, even with another password in the environment.
    assert await ensure_first_admin(store, env={PASSWORD_ENV: "another password"}) is None
    assert await store.list_admins() == admins
    assert await store.verify_admin("admin", PASSWORD) is not None
    audit = await store.list_audit()
    assert [(e.actor, e.action, e.target) for e in audit] == [("system", "admin.create", "admin:admin")]


async def test_first_admin_with_a_generated_password_shown_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelrouter.admin")
    assert await ensure_first_admin(store, env={}) == "admin"
    [record] = [r for r in caplog.records if "password" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "first start" in message
    assert "modelrouter admin reset-password admin" in message
    found = re.search(r"with password (\S+)", message)
    assert found is not None
    password = found.group(1)
    assert len(password) >= 20
    assert await store.verify_admin("admin", password) is not None
    caplog.clear()
    assert await ensure_first_admin(store, env={}) is None
    assert caplog.records == []
    assert await store.count_admins() == 1


async def test_first_admin_passwords_differ_between_installs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="modelrouter.admin")
    for name in ("one", "two"):
        async with await Store.open(StoreConfig(data_dir=str(tmp_path / name))) as store:
            await ensure_first_admin(store, env={})
    passwords = re.findall(r"with password (\S+)", caplog.text)
    assert len(passwords) == 2
    assert passwords[0] != passwords[1]


async def test_first_admin_password_reaches_stderr_when_warnings_are_not_logged(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = logging.getLogger("test.quiet.admin")
    quiet.setLevel(logging.ERROR)
    await ensure_first_admin(store, env={}, log=quiet)
    err = capsys.readouterr().err
    assert err.count("with password ") == 1
    password = err.split("with password ")[1].split()[0]
    assert await store.verify_admin("admin", password) is not None


async def test_first_admin_refuses_a_short_password(store: Store) -> None:
    with pytest.raises(ValueError, match=PASSWORD_ENV):
        await ensure_first_admin(store, env={PASSWORD_ENV: "short"})
    assert await store.count_admins() == 0
