"""The web console in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium; no
browser download) against a real gateway, store and loopback upstream: the page is served offline under a strict
CSP, an admin logs in, the dashboard's request counter moves after requests sent with the openai SDK, an instance
whose upstream fails shows its breaker open, the language switches to Chinese and back, a wrong password is told,
logging out returns to the form — and the browser logs no error during any of it. ``/`` redirects to the console;
``console.enabled: false`` answers 404."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from .console_browser import PASSWORD, go_to, log_in, page_errors, screenshot, wait
from .fakes import FakeOpenAI
from .servers import GatewayServer


@pytest.fixture
def console_gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> tuple[FakeOpenAI, FakeOpenAI, GatewayServer]:
    good, good_url = start_upstream("good")
    bad, bad_url = start_upstream("bad")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "usage": {"enabled": True},  # the store opens (the admin API lives on it)
            "health_check": {"enabled": False},
            "breaker": {"consecutive_failures": 2, "open_for": 60},
            "observability": {"history_interval": 0.5},  # a chart point every half second
            "retry": {"attempts": 2},
            "services": {
                "chat": {
                    "instances": [
                        {"name": "qwen", "id": "qwen-good", "base_url": good_url},
                        {"name": "broken", "id": "broken-1", "base_url": bad_url},
                    ]
                }
            },
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD))
    return good, bad, gw


def test_log_in_watch_traffic_and_a_breaker_open(
    browser: Any, console_gateway: tuple[FakeOpenAI, FakeOpenAI, GatewayServer]
) -> None:
    from selenium.webdriver.common.by import By

    _, bad, gw = console_gateway
    log_in(browser, gw)
    wait(lambda: browser.find_element(By.ID, "dashboard").is_displayed(), "the dashboard")
    assert "ops (admin)" in browser.find_element(By.ID, "who").text
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#instances tbody tr[data-instance]"), "the instances")
    assert browser.find_element(By.ID, "recent-requests").text == "0"

    bad.fail("/v1/chat/completions", 500, {"error": {"message": "down", "type": "server_error"}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(6):
        client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    wait(lambda: int(browser.find_element(By.ID, "recent-requests").text) >= 6, "the request counter to move")
    breaker = '#instances tr[data-instance="broken-1"] td[data-breaker]'
    wait(lambda: browser.find_element(By.CSS_SELECTOR, breaker).get_attribute("data-breaker") == "open", "the breaker")
    good_breaker = '#instances tr[data-instance="qwen-good"] td[data-breaker]'
    assert browser.find_element(By.CSS_SELECTOR, good_breaker).get_attribute("data-breaker") == "closed"

    # The charts: the requests/s chart has a series per model with a point above zero, and the error-rate
    # chart's "broken" series reached 100 %.
    def plotted(chart: str) -> dict[str, list[float]]:
        figure = browser.find_element(By.ID, "chart-" + chart)
        names = [item.text for item in figure.find_elements(By.CSS_SELECTOR, "ul.chart-legend li")]
        series = figure.find_elements(By.CSS_SELECTOR, "g.series")
        return {
            name: [float(c.get_attribute("data-y")) for c in group.find_elements(By.CSS_SELECTOR, "circle")]
            for name, group in zip(names, series, strict=True)
        }

    wait(lambda: max(plotted("rps").get("qwen", [0])) > 0, "a requests/s point for qwen")
    wait(lambda: max(plotted("errors").get("broken", [0])) == 100, "the broken model's error rate")
    assert max(plotted("errors").get("qwen", [0])) == 0
    assert "all models" in plotted("rps")
    assert not browser.find_element(By.ID, "chart-ttft").is_displayed()  # per instance only

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "traffic-by")).select_by_value("instance")
    wait(lambda: max(plotted("ttft").get("qwen-good", [0])) > 0, "qwen-good's time to first token")
    assert not browser.find_element(By.ID, "chart-tokens").is_displayed()  # per model only
    Select(browser.find_element(By.ID, "traffic-by")).select_by_value("model")
    screenshot(browser, "dashboard")

    Select(browser.find_element(By.ID, "lang")).select_by_value("zh")
    wait(lambda: browser.find_element(By.CSS_SELECTOR, "#dashboard h2").text == "仪表盘", "the Chinese page")
    screenshot(browser, "dashboard-zh")
    assert browser.find_element(By.ID, "logout").text == "退出"
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")
    wait(lambda: browser.find_element(By.CSS_SELECTOR, "#dashboard h2").text == "Dashboard", "English again")

    browser.find_element(By.ID, "logout").click()
    wait(lambda: browser.find_element(By.ID, "login-page").is_displayed(), "the login form again")


def test_a_wrong_password_is_told(browser: Any, console_gateway: tuple[FakeOpenAI, FakeOpenAI, GatewayServer]) -> None:
    from selenium.webdriver.common.by import By

    _, _, gw = console_gateway
    log_in(browser, gw, password="not-the-password")
    wait(lambda: browser.find_element(By.ID, "login-error").text == "Incorrect user name or password", "the error")
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    # The one error the browser logs is the refused login's 401 (its network log); nothing from the page itself.
    errors = page_errors(browser)
    assert [(e["source"], "/admin/api/login" in e["message"] and "401" in e["message"]) for e in errors] == [
        ("network", True)
    ]


def test_the_console_is_served_offline_with_a_strict_policy(
    console_gateway: tuple[FakeOpenAI, FakeOpenAI, GatewayServer], start_gateway: Callable[..., GatewayServer]
) -> None:
    _, _, gw = console_gateway
    root = httpx2.get(gw.url + "/", timeout=5)
    assert root.status_code == 302
    assert root.headers["location"] == "/console/"
    page = httpx2.get(gw.url + "/console/", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere
    script = httpx2.get(gw.url + "/console/console.js", timeout=5)
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx2.get(gw.url + "/console/nope.js", timeout=5).status_code == 404
    off = start_gateway(
        {
            "console": {"enabled": False},
            "services": {"chat": {"instances": [{"name": "m", "base_url": "http://127.0.0.1:9"}]}},
        }
    )
    assert httpx2.get(off.url + "/console/", timeout=5).status_code == 404
    assert httpx2.get(off.url + "/", timeout=5).status_code == 404


@pytest.fixture
def keyed_gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> GatewayServer:
    _, url = start_upstream("a")
    gw = start_gateway(
        {
            "store": {"data_dir": str(tmp_path / "data")},
            "auth": {"enabled": True},
            "services": {"chat": {"instances": [{"name": "qwen", "base_url": url}]}},
        }
    )
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD))
    gw.bg.run(store.create_admin("watcher", PASSWORD, "viewer"))
    return gw


def test_create_a_key_in_the_console_use_it_and_disable_it(browser: Any, keyed_gateway: GatewayServer) -> None:
    from selenium.webdriver.common.by import By

    gw = keyed_gateway
    log_in(browser, gw)
    go_to(browser, "keys")
    wait(lambda: browser.find_element(By.ID, "new-key").is_displayed(), "the key form")
    browser.find_element(By.ID, "new-key-name").send_keys("team-a")
    browser.find_element(By.ID, "new-key-rpm").send_keys("100")
    browser.find_element(By.CSS_SELECTOR, "#new-key button[type=submit]").click()
    secret = wait(lambda: browser.find_element(By.ID, "new-secret").text, "the one-time secret")
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#key-list tr[data-key="team-a"]'), "the key in the list")
    screenshot(browser, "keys")

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    wait(
        lambda: client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}]),
        "the key to work",
    )

    browser.find_element(By.CSS_SELECTOR, '#key-list tr[data-key="team-a"] button[data-action="disable"]').click()
    state = '#key-list tr[data-key="team-a"] td[data-state]'
    wait(lambda: browser.find_element(By.CSS_SELECTOR, state).get_attribute("data-state") == "disabled", "disabled")

    def refused() -> bool:
        try:
            client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
        except openai.AuthenticationError:
            return True
        return False

    wait(refused, "the disabled key to be refused", timeout=3)


def test_a_viewer_sees_no_edit_controls(browser: Any, keyed_gateway: GatewayServer) -> None:
    from selenium.webdriver.common.by import By

    gw = keyed_gateway
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_key("existing"))
    driver = browser
    driver.get(gw.url + "/console/")
    wait(lambda: driver.find_element(By.ID, "username").is_displayed(), "the login form")
    driver.find_element(By.ID, "username").send_keys("watcher")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(lambda: driver.find_element(By.ID, "nav-keys").is_displayed(), "the navigation")
    assert "watcher (viewer)" in driver.find_element(By.ID, "who").text
    driver.find_element(By.ID, "nav-keys").click()
    wait(lambda: driver.find_elements(By.CSS_SELECTOR, '#key-list tr[data-key="existing"]'), "the key list")
    assert not driver.find_element(By.ID, "new-key").is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "#key-list button") == []
