"""What the Keys, Usage and Audit pages' browser tests share: a gateway with client keys on, usage recorded in a
SQLite store and two chat models on one loopback FakeOpenAI upstream; the admin API as a script uses it; the
openai SDK with a key; finding things in the page; and the browser's log of refused admin calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from .console_browser import PASSWORD, page_errors, wait
from .fakes import FakeOpenAI
from .servers import GatewayServer

__all__ = [
    "MODELS",
    "Admin",
    "accept",
    "chat",
    "css",
    "every",
    "honoured",
    "keys_gateway",
    "ready",
    "refused",
    "refused_calls_only",
    "type_into",
]

MODELS = ("qwen", "llama")


def keys_gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> tuple[FakeOpenAI, GatewayServer]:
    """A gateway with keys on, usage recorded (flushed every 0.2 s) and admins ops (admin) and watcher (viewer)."""
    fake, url = start_upstream("a")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data"), "refresh_interval": 0.2},
            "auth": {"enabled": True},
            "usage": {"enabled": True, "flush_interval": 0.2},
            "health_check": {"enabled": False},
            "services": {"chat": {"instances": [{"name": name, "base_url": url} for name in MODELS]}},
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD))
    gw.bg.run(store.create_admin("watcher", PASSWORD, "viewer"))
    return fake, gw


class Admin:
    """The admin API as a script uses it, logged in as ops."""

    def __init__(self, gw: GatewayServer) -> None:
        self.url = gw.url + "/admin/api"
        login = httpx2.post(self.url + "/login", json={"username": "ops", "password": PASSWORD}, timeout=10)
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['token']}"}

    def call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return httpx2.request(method, self.url + path, headers=self.headers, timeout=10, **kwargs)

    def key(self, name: str) -> dict[str, Any]:
        found = [k for k in self.call("GET", "/keys").json()["data"] if k["name"] == name]
        assert len(found) == 1, found
        return found[0]

    def create_key(self, name: str, **fields: Any) -> tuple[dict[str, Any], str]:
        reply = self.call("POST", "/keys", json={"name": name, **fields})
        assert reply.status_code == 201, reply.text
        body = reply.json()
        return body, body["secret"]

    def instances(self, service: str = "chat") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", f"/services/{service}").json()["instances"]
        return found

    def usage(self, **query: Any) -> list[dict[str, Any]]:
        reply = self.call("GET", "/usage", params=query)
        assert reply.status_code == 200, reply.text
        rows: list[dict[str, Any]] = reply.json()["data"]
        return rows


def chat(gw: GatewayServer, secret: str, model: str = "qwen", served: Counter[str] | None = None) -> Any:
    """One chat completion with the openai SDK and the key ``secret``: the SDK's answer (or its error raised);
    counted in ``served`` by model when it was served."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    if served is not None:
        served[model] += 1
    return answer


def refused(gw: GatewayServer, secret: str, model: str = "qwen", served: Counter[str] | None = None) -> int | None:
    """The HTTP status the gateway refuses a chat with ``secret`` with, or None when it serves it."""
    try:
        chat(gw, secret, model, served)
    except openai.APIStatusError as exc:
        return exc.status_code
    return None


def honoured(gw: GatewayServer, secret: str, model: str = "qwen", served: Counter[str] | None = None) -> None:
    """Wait until the gateway serves ``secret`` (a key made in the store reaches it within refresh_interval)."""
    wait(lambda: refused(gw, secret, model, served) is None, f"the key to be served {model}")


def ready(gw: GatewayServer, secret: str) -> None:
    """Wait until the gateway knows ``secret`` (GET /v1/models: no usage recorded for it)."""
    auth = {"Authorization": f"Bearer {secret}"}
    wait(lambda: httpx2.get(gw.url + "/v1/models", headers=auth, timeout=10).status_code == 200, "the key known")


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def every(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def type_into(driver: Any, selector: str, text: str) -> None:
    field = css(driver, selector)
    field.clear()
    field.send_keys(text)


def accept(driver: Any) -> str:
    """Accept the page's confirmation; its text."""
    alert = wait(lambda: driver.switch_to.alert, "the confirmation")
    text = str(alert.text)
    alert.accept()
    return text


def refused_calls_only(driver: Any, statuses: set[str]) -> None:
    """The browser logs each refused call (its network log); those, and nothing from the page itself."""
    for entry in page_errors(driver):
        assert entry["source"] == "network", entry
        assert "/admin/api/" in entry["message"] or "/v1/" in entry["message"], entry
        assert any(status in entry["message"] for status in statuses), entry
