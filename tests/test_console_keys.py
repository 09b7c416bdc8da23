"""The console's Keys page in a real headless Chromium against a real gateway (client keys on, a SQLite store, two
chat models on a loopback FakeOpenAI upstream), the keys used with the openai SDK: a key created in the page with
models and a quota works; its models edited there (PATCH, only the changed field) make the other model refused;
rotated there (after a confirmation) the old secret is refused and the new one, shown once, works; disabled and
enabled; its usage panel shows the requests sent, per day and per model; deleted, it is gone. Every field of the
create form reaches the API (services, expiry, each quota), an edit clears the expiry and the quotas; the API's
errors are shown next to their fields; a viewer sees no edit controls but does see a key's usage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from .console_admin import (
    Admin,
    accept,
    chat,
    css,
    every,
    honoured,
    keys_gateway,
    ready,
    refused,
    refused_calls_only,
    type_into,
)
from .console_browser import PASSWORD, go_to, log_in, screenshot, wait
from .fakes import FakeOpenAI
from .servers import GatewayServer

QUOTAS = {
    "requests_per_minute": ("rpm", 600),
    "tokens_per_minute": ("tpm", 50000),
    "max_concurrent": ("max-concurrent", 4),
    "daily_requests": ("daily-requests", 1000),
    "daily_tokens": ("daily-tokens", 200000),
    "monthly_requests": ("monthly-requests", 30000),
    "monthly_tokens": ("monthly-tokens", 6000000),
}


@pytest.fixture
def gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> GatewayServer:
    return keys_gateway(start_upstream, start_gateway, tmp_path)[1]


def row(name: str) -> str:
    return f'#key-list tr[data-key="{name}"]'


def open_keys(driver: Any, gw: GatewayServer, username: str = "ops") -> None:
    log_in(driver, gw, username)
    go_to(driver, "keys")
    wait(lambda: css(driver, "#key-list tbody tr"), "the key list")


def click_action(driver: Any, name: str, action: str) -> None:
    css(driver, row(name) + f' button[data-action="{action}"]').click()


def cell_text(driver: Any, name: str, field: str) -> str:
    return str(css(driver, row(name) + f' td[data-field="{field}"]').text)


def key_state(driver: Any, name: str) -> str:
    return str(css(driver, row(name) + " td[data-state]").get_attribute("data-state"))


def set_expiry(driver: Any, prefix: str, local: str) -> None:
    """Untick "never" and put a local "YYYY-MM-DDTHH:MM" into the datetime input (typing into one depends on the
    locale's segment order; a user's picker sets the same value)."""
    never = css(driver, f"#{prefix}-never")
    if never.is_selected():
        never.click()
    field = css(driver, f"#{prefix}-expires")
    set_value = "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))"
    driver.execute_script(set_value, field, local)


def saved(driver: Any, name: str) -> None:
    wait(lambda: css(driver, "#keys-status").text == f"Saved the key “{name}”.", "the key saved")


def test_create_use_edit_rotate_disable_see_usage_and_delete_a_key(browser: Any, gateway: GatewayServer) -> None:
    gw, admin = gateway, Admin(gateway)
    open_keys(browser, gw)
    type_into(browser, "#new-key-name", "team-a")
    type_into(browser, "#new-key-models", "qwen, llama")
    type_into(browser, "#new-key-daily-requests", "100")
    css(browser, "#new-key-save").click()
    secret = wait(lambda: css(browser, "#new-secret").text, "the one-time secret")
    assert css(browser, "#new-secret-label").text == "The secret of “team-a”, shown this once:"
    wait(lambda: every(browser, row("team-a")), "the key in the list")
    assert key_state(browser, "team-a") == "active"
    assert cell_text(browser, "team-a", "models") == "qwen, llama"
    assert cell_text(browser, "team-a", "services") == "all"
    assert cell_text(browser, "team-a", "quotas") == "Requests per day: 100"
    assert cell_text(browser, "team-a", "expires") == "never"
    assert css(browser, "#new-key-name").get_attribute("value") == ""  # the form is empty for the next one
    assert admin.key("team-a")["quotas"] == {"daily_requests": 100}
    screenshot(browser, "keys")

    served: Counter[str] = Counter()  # what the gateway served the key, by model
    honoured(gw, secret, "qwen", served)
    for model in ("qwen", "llama", "llama"):
        assert chat(gw, secret, model, served).choices[0].message.content

    # Edit its models: only qwen now. The PATCH carries the changed field alone.
    click_action(browser, "team-a", "edit")
    wait(lambda: css(browser, "#edit-key").is_displayed(), "the edit form")
    assert css(browser, "#edit-key-models").get_attribute("value") == "qwen, llama"
    assert css(browser, "#edit-key-daily-requests").get_attribute("value") == "100"
    type_into(browser, "#edit-key-models", "qwen")
    screenshot(browser, "keys-edit")
    css(browser, "#edit-key-save").click()
    saved(browser, "team-a")
    assert not every(browser, "#edit-key")
    wait(lambda: cell_text(browser, "team-a", "models") == "qwen", "the models shown")
    assert admin.key("team-a")["models"] == ["qwen"]
    assert admin.key("team-a")["quotas"] == {"daily_requests": 100}  # untouched
    wait(lambda: refused(gw, secret, "llama", served) in (403, 404), "llama refused to the key")
    assert chat(gw, secret, "qwen", served).choices[0].message.content

    # Rotate, after a confirmation: the old secret is refused, the new one (shown once) works.
    click_action(browser, "team-a", "rotate")
    assert "team-a" in accept(browser)
    wait(lambda: css(browser, "#new-secret").text not in ("", secret), "the new secret")
    rotated = css(browser, "#new-secret").text
    assert css(browser, "#new-secret-label").text == "The new secret of “team-a”, shown this once:"
    assert rotated[:8] == admin.key("team-a")["prefix"][:8]
    wait(lambda: refused(gw, secret, "qwen", served) == 401, "the old secret refused")
    honoured(gw, rotated, "qwen", served)

    # Disable and enable.
    click_action(browser, "team-a", "disable")
    wait(lambda: key_state(browser, "team-a") == "disabled", "disabled")
    wait(lambda: refused(gw, rotated, "qwen", served) == 401, "the disabled key refused")
    click_action(browser, "team-a", "enable")
    wait(lambda: key_state(browser, "team-a") == "active", "enabled")
    honoured(gw, rotated, "qwen", served)

    # Its usage: what was served (refusals count as errors), per model and on today's bar. The records reach the
    # store within a flush.
    key_id = admin.key("team-a")["id"]

    def recorded() -> dict[str, int]:
        rows = admin.usage(key_id=f"store:{key_id}", group_by="model")
        return {r["model"]: r["requests"] - r["errors"] for r in rows}

    wait(lambda: recorded() == dict(served), "the usage recorded")
    css(browser, row("team-a") + " a.key-usage-link").click()
    wait(lambda: css(browser, "#key-usage").is_displayed(), "the usage panel")
    assert css(browser, "#key-usage-title").text == "Usage of “team-a”: the last 30 days"
    wait(lambda: css(browser, "#key-usage").get_attribute("data-loaded"), "the usage loaded")
    rows = wait(lambda: every(browser, "#key-usage-table tbody tr[data-model]"), "the usage by model")
    by_model = {
        r.get_attribute("data-model"): (
            int(css(r, 'td[data-field="requests"]').get_attribute("data-value")),
            int(css(r, 'td[data-field="errors"]').get_attribute("data-value")),
        )
        for r in rows
    }
    assert {model: requests - errors for model, (requests, errors) in by_model.items()} == dict(served)
    total = int(css(browser, '#key-usage-table tfoot td[data-field="requests"]').get_attribute("data-value"))
    assert total == sum(requests for requests, _ in by_model.values())
    bars = every(browser, "#key-usage-chart svg.bar-chart rect[data-x]")
    assert len(bars) == 30
    heights = {int(b.get_attribute("data-x")): float(b.get_attribute("data-y")) for b in bars}
    assert heights[29] == total  # today is the last of the 30 days
    assert sum(heights.values()) == total
    screenshot(browser, "keys-usage")

    # Delete, after a confirmation.
    click_action(browser, "team-a", "delete")
    assert "team-a" in accept(browser)
    wait(lambda: not every(browser, row("team-a")), "the key gone")
    wait(lambda: css(browser, "#keys-status").text == "Deleted the key “team-a”.", "the deletion told")
    assert not css(browser, "#key-usage").is_displayed()  # its usage panel closed with it
    wait(lambda: refused(gw, rotated) == 401, "the deleted key refused")
    refused_calls_only(browser, set())


def test_every_field_of_the_forms_reaches_the_api(browser: Any, gateway: GatewayServer) -> None:
    gw, admin = gateway, Admin(gateway)
    open_keys(browser, gw)
    type_into(browser, "#new-key-name", "batch")
    css(browser, '#new-key-services input[data-service="chat"]').click()
    css(browser, '#new-key-services input[data-service="embedding"]').click()
    for _, (short, value) in QUOTAS.items():
        type_into(browser, f"#new-key-{short}", str(value))
    expiry = browser.execute_script(
        "const d = new Date(Date.now() + 3 * 86400e3); d.setSeconds(0, 0);"
        "const p = (n) => String(n).padStart(2, '0');"
        "return [d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':'"
        " + p(d.getMinutes()), d.getTime() / 1000]"
    )
    set_expiry(browser, "new-key", expiry[0])
    css(browser, "#new-key-save").click()
    wait(lambda: every(browser, row("batch")), "the key in the list")
    key = admin.key("batch")
    assert key["services"] == ["chat", "embedding"]
    assert key["models"] == []
    assert key["expires_at"] == expiry[1]
    assert key["quotas"] == {name: value for name, (_, value) in QUOTAS.items()}
    assert cell_text(browser, "batch", "services") == "chat, embedding"
    assert cell_text(browser, "batch", "expires") != "never"
    assert cell_text(browser, "batch", "limits") == "0"
    assert "Concurrent requests: 4" in cell_text(browser, "batch", "quotas")

    # The edit form shows all of it; "never" and empty quotas clear them.
    click_action(browser, "batch", "edit")
    wait(lambda: css(browser, "#edit-key").is_displayed(), "the edit form")
    assert css(browser, "#edit-key-expires").get_attribute("value") == expiry[0]
    assert css(browser, '#edit-key-services input[data-service="embedding"]').is_selected()
    assert css(browser, "#edit-key-monthly-tokens").get_attribute("value") == "6000000"
    css(browser, "#edit-key-save").click()
    wait(lambda: css(browser, "#edit-key .key-form-error").text == "Nothing changed.", "nothing to save")
    css(browser, "#edit-key-never").click()
    for _, (short, _) in QUOTAS.items():
        css(browser, f"#edit-key-{short}").clear()
    css(browser, '#edit-key-services input[data-service="embedding"]').click()
    css(browser, "#edit-key-save").click()
    saved(browser, "batch")
    key = admin.key("batch")
    assert (key["expires_at"], key["quotas"], key["services"]) == (None, {}, ["chat"])
    wait(lambda: cell_text(browser, "batch", "expires") == "never", "no expiry shown")
    assert cell_text(browser, "batch", "quotas") == "none"
    audit = admin.call("GET", "/audit", params={"action": "key.update", "limit": 5}).json()["data"]
    assert [entry["target"] for entry in audit[:1]] == [f"key:{key['id']}"]


def test_the_apis_errors_are_shown_next_to_their_fields(browser: Any, gateway: GatewayServer) -> None:
    gw, admin = gateway, Admin(gateway)
    admin.create_key("taken")
    admin.create_key("mine", quotas={"daily_tokens": 500})
    open_keys(browser, gw)
    wait(lambda: every(browser, row("mine")), "the keys")

    # Create (its form folded away while there are keys to look at): a name already taken.
    assert not css(browser, "#new-key-name").is_displayed()
    css(browser, "#new-key-box summary").click()
    type_into(browser, "#new-key-name", "taken")
    css(browser, "#new-key-save").click()
    wait(lambda: css(browser, '#new-key [data-error-for="name"]').text, "the name's error")

    # Edit: a quota out of range, then an expiry in the past, then a name taken; nothing is saved meanwhile.
    click_action(browser, "mine", "edit")
    wait(lambda: css(browser, "#edit-key").is_displayed(), "the edit form")
    type_into(browser, "#edit-key-daily-tokens", "0")
    css(browser, "#edit-key-save").click()
    slot = '#edit-key [data-error-for="quotas.daily_tokens"]'
    wait(lambda: css(browser, slot).text, "the quota's error")
    assert "greater than or equal to 1" in css(browser, slot).text
    assert css(browser, '#edit-key [data-error-for="name"]').text == ""
    screenshot(browser, "keys-invalid")
    type_into(browser, "#edit-key-daily-tokens", "700")
    set_expiry(browser, "edit-key", "2001-01-01T00:00")
    css(browser, "#edit-key-save").click()
    wait(lambda: css(browser, '#edit-key [data-error-for="expires_at"]').text, "the expiry's error")
    assert css(browser, slot).text == ""  # the earlier error is gone
    css(browser, "#edit-key-never").click()
    type_into(browser, "#edit-key-name", "taken")
    css(browser, "#edit-key-save").click()
    wait(lambda: css(browser, '#edit-key [data-error-for="name"]').text, "the taken name's error")
    assert admin.key("mine")["quotas"] == {"daily_tokens": 500}
    type_into(browser, "#edit-key-name", "mine")
    css(browser, "#edit-key-save").click()
    saved(browser, "mine")
    assert admin.key("mine")["quotas"] == {"daily_tokens": 700}
    refused_calls_only(browser, {"400", "409"})


def test_a_viewer_sees_no_edit_controls_and_sees_a_keys_usage(browser: Any, gateway: GatewayServer) -> None:
    gw, admin = gateway, Admin(gateway)
    _, secret = admin.create_key("existing", models=["qwen"])
    ready(gw, secret)
    chat(gw, secret)
    key_id = admin.key("existing")["id"]
    wait(lambda: admin.usage(key_id=f"store:{key_id}"), "the usage recorded")
    open_keys(browser, gw, "watcher")
    wait(lambda: every(browser, row("existing")), "the key")
    assert "watcher (viewer)" in css(browser, "#who").text
    assert not css(browser, "#new-key").is_displayed()
    assert every(browser, "#key-list button") == []
    assert [th.text for th in every(browser, "#key-list thead th")][-1] == "Expires"  # no Actions column
    css(browser, row("existing") + " a.key-usage-link").click()
    wait(lambda: every(browser, '#key-usage-table tbody tr[data-model="qwen"]'), "the key's usage")
    assert css(browser, '#key-usage-table tfoot td[data-field="requests"]').get_attribute("data-value") == "1"
    # A PATCH by a viewer is refused by the server too.
    login = admin.call("POST", "/login", json={"username": "watcher", "password": PASSWORD})
    viewer = {"Authorization": f"Bearer {login.json()['token']}"}
    patched = httpx2.patch(admin.url + f"/keys/{key_id}", json={"name": "x"}, headers=viewer, timeout=10)
    assert patched.status_code == 403


def test_the_page_in_chinese(browser: Any, gateway: GatewayServer) -> None:
    from selenium.webdriver.support.ui import Select

    Admin(gateway).create_key("zh-key", quotas={"requests_per_minute": 60})
    open_keys(browser, gateway)
    wait(lambda: every(browser, row("zh-key")), "the key")
    Select(css(browser, "#lang")).select_by_value("zh")
    wait(lambda: css(browser, "#keys h2").text == "密钥", "the Chinese page")
    assert cell_text(browser, "zh-key", "quotas") == "每分钟请求数: 60"
    assert css(browser, "#nav-usage").text == "用量"
    assert css(browser, "#nav-audit").text == "审计"
    assert css(browser, row("zh-key") + ' button[data-action="rotate"]').text == "轮换"


def test_a_keys_own_rate_limit_added_and_removed_in_the_page(browser: Any, gateway: GatewayServer) -> None:
    """A limit of 2 requests a minute added to a key in its edit form refuses the SDK's third request (429); the
    form shows the rule when opened again; removed there, requests are served again."""
    gw, admin = gateway, Admin(gateway)
    _, secret = admin.create_key("metered")
    ready(gw, secret)
    open_keys(browser, gw)
    wait(lambda: every(browser, row("metered")), "the key in the list")
    click_action(browser, "metered", "edit")
    css(browser, "#edit-key-add-limit").click()
    limit = "#edit-key-limits [data-limit-row]"
    type_into(browser, limit + ' [data-limit="rate"]', "0")
    css(browser, "#edit-key-save").click()
    wait(lambda: "greater than 0" in css(browser, '#edit-key [data-error-for="limits"]').text, "the bad rate told")
    type_into(browser, limit + ' [data-limit="rate"]', "2")
    css(browser, "#edit-key-save").click()
    saved(browser, "metered")
    assert admin.key("metered")["limits"] == [{"scope": "key", "rate": 2}]
    wait(lambda: cell_text(browser, "metered", "limits") == "1", "one limit shown")
    wait(lambda: refused(gw, secret) == 429, "the limit to refuse a request", timeout=15)

    click_action(browser, "metered", "edit")
    assert css(browser, limit + ' [data-limit="rate"]').get_attribute("value") == "2"
    assert css(browser, limit + ' [data-limit="period"]').get_attribute("value") == "60"
    css(browser, "#edit-key-save").click()
    wait(lambda: css(browser, "#edit-key .key-form-error").text == "Nothing changed.", "the defaults compared")
    css(browser, limit + " .key-limit-remove").click()
    css(browser, "#edit-key-save").click()
    saved(browser, "metered")
    assert admin.key("metered")["limits"] == []
    honoured(gw, secret)
    refused_calls_only(browser, {"400"})
