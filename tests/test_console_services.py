"""The console's Services and Versions pages in a real headless Chromium against a real gateway in store mode (its
config in the store), with two loopback upstreams as two instances of one model: a weight edited in the page
shifts the traffic the upstreams get, a rollback in the Versions page brings it back and the diff shows the
change; a bad value is told next to its field; a change made behind the page's back (409) is told, reloaded and
saved again; instances added and removed and an alias added work for the openai SDK; a failing instance's
breaker shows open with its reason; a viewer and file mode get no edit controls. Also the admin API additions the
pages use: the breaker's reason in the live state, and every problem of a refused config by path."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from .console_admin import Admin
from .console_browser import PASSWORD, go_to, log_in, page_errors, screenshot, wait
from .fakes import FakeOpenAI
from .servers import GatewayServer, free_port

Started = tuple[FakeOpenAI, FakeOpenAI, GatewayServer]


def _config(a_url: str, b_url: str, tmp_path: Any, **extra: Any) -> dict[str, Any]:
    return {
        "store": {"data_dir": str(tmp_path / "data")},
        "breaker": {"consecutive_failures": 2, "open_for": 60},
        "services": {
            "chat": {
                "instances": [
                    {"name": "qwen", "id": "qwen-a", "base_url": a_url, "weight": 1},
                    {"name": "qwen", "id": "qwen-b", "base_url": b_url, "weight": 1},
                ]
            }
        },
        **extra,
    }


def _users(gw: GatewayServer) -> None:
    store = gw.gateway.store
    assert store is not None
    gw.bg.run(store.create_admin("ops", PASSWORD))
    gw.bg.run(store.create_admin("watcher", PASSWORD, "viewer"))


@pytest.fixture
def store_gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> Started:
    a, a_url = start_upstream("a")
    b, b_url = start_upstream("b")
    gw = start_gateway(_config(a_url, b_url, tmp_path), config_source="store")
    _users(gw)
    return a, b, gw


def _send(gw: GatewayServer, a: FakeOpenAI, b: FakeOpenAI, n: int = 30, model: str = "qwen") -> tuple[int, int]:
    """``n`` chat requests through the gateway; how many of them each upstream got."""
    before = len(a.requests), len(b.requests)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(n):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return len(a.requests) - before[0], len(b.requests) - before[1]


def _css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _row(instance: str) -> str:
    return f'#services tr[data-instance="{instance}"]'


def _type(driver: Any, selector: str, text: str) -> None:
    field = _css(driver, selector)
    field.clear()
    field.send_keys(text)


def _accept_confirmation(driver: Any) -> None:
    wait(lambda: driver.switch_to.alert, "the confirmation").accept()


def _refused_calls_only(driver: Any, statuses: set[str]) -> None:
    """The browser logs each refused admin call (its network log); those, and nothing from the page itself."""
    for entry in page_errors(driver):
        assert entry["source"] == "network", entry
        assert "/admin/api/" in entry["message"], entry
        assert any(status in entry["message"] for status in statuses), entry


def test_a_weight_edited_shifts_traffic_and_a_rollback_brings_it_back(browser: Any, store_gateway: Started) -> None:
    from selenium.webdriver.support.ui import Select

    a, b, gw = store_gateway
    assert _send(gw, a, b) == (15, 15)  # 1:1, round robin
    log_in(browser, gw)
    go_to(browser, "services")
    wait(lambda: _css(browser, _row("qwen-b")).is_displayed(), "the instances")
    assert "Store mode" in _css(browser, "#svc-mode").text
    wait(lambda: _css(browser, _row("qwen-b") + " td[data-breaker]").text == "closed", "the live state")
    _css(browser, _row("qwen-b") + ' button[data-action="edit"]').click()
    _type(browser, "#svc-f-weight", "9")
    screenshot(browser, "services-edit")
    _css(browser, "#svc-save").click()
    wait(lambda: _css(browser, "#svc-status").text == "Saved as config version 2", "the edit saved")
    wait(lambda: _css(browser, _row("qwen-b") + ' td[data-field="weight"]').text == "9", "the new weight shown")
    assert _css(browser, "#svc-editor").is_displayed() is False
    got_a, got_b = _send(gw, a, b)
    assert got_b >= 24, (got_a, got_b)  # 1:9
    assert got_a <= 6, (got_a, got_b)
    screenshot(browser, "services")

    go_to(browser, "versions")
    wait(lambda: _all(browser, '#ver-list tr[data-version="2"].ver-serving'), "the versions, 2 serving")
    Select(_css(browser, "#ver-from")).select_by_value("1")
    Select(_css(browser, "#ver-to")).select_by_value("2")
    _css(browser, "#ver-show-diff").click()
    wait(lambda: _css(browser, "#ver-diff-table").is_displayed(), "the diff")
    removed = [cell.text for cell in _all(browser, "#ver-diff-table td.ver-del")]
    added = [cell.text for cell in _all(browser, "#ver-diff-table td.ver-add")]
    assert [line.strip() for line in removed] == ["weight: 1"], removed
    assert [line.strip() for line in added] == ["weight: 9"], added
    # Side by side: the old line and the new one on the same row.
    changed = _css(browser, "#ver-diff-table td.ver-del").find_element("xpath", "..")
    assert "weight: 9" in changed.text
    screenshot(browser, "versions")

    assert _css(browser, '#ver-list tr[data-version="1"] button[data-action="apply"]').text == "Roll back to this"
    _css(browser, '#ver-list tr[data-version="1"] button[data-action="apply"]').click()
    _accept_confirmation(browser)
    wait(lambda: _css(browser, "#ver-status").text == "Version 3 now serves (a copy of version 1).", "the rollback")
    wait(lambda: _all(browser, '#ver-list tr[data-version="3"].ver-serving'), "version 3 serving")
    assert _send(gw, a, b) == (15, 15)  # 1:1 again
    assert [i["weight"] for i in Admin(gw).instances()] == [1, 1]


def test_a_bad_value_is_told_at_its_field_and_a_conflict_is_reloaded_and_saved_again(
    browser: Any, store_gateway: Started
) -> None:
    a, b, gw = store_gateway
    admin = Admin(gw)
    log_in(browser, gw)
    go_to(browser, "services")
    wait(lambda: _css(browser, _row("qwen-a")).is_displayed(), "the instances")
    _css(browser, _row("qwen-a") + ' button[data-action="edit"]').click()
    _type(browser, "#svc-f-weight", "-1")
    _type(browser, "#svc-f-base_url", "ftp://x")
    _css(browser, "#svc-save").click()
    weight_error = '#svc-form [data-error-for="weight"]'
    wait(lambda: _css(browser, weight_error).text, "the weight's error")
    assert "greater than 0" in _css(browser, weight_error).text
    assert _css(browser, '#svc-form [data-error-for="base_url"]').text
    assert _css(browser, '#svc-form [data-error-for="name"]').text == ""
    screenshot(browser, "services-invalid")
    assert admin.call("GET", "/config").json()["version"] == 1  # nothing saved

    # Someone else changes the config while the form is open.
    behind = admin.call(
        "PATCH",
        "/services/chat/instances/qwen",
        params={"base_url": admin.instances()[1]["base_url"]},
        json={"version": 1, "changes": {"weight": 2}},
    )
    assert behind.status_code == 200, behind.text
    _type(browser, "#svc-f-weight", "5")
    _type(browser, "#svc-f-base_url", admin.instances()[0]["base_url"])
    _css(browser, "#svc-save").click()
    conflict = wait(lambda: _css(browser, "#svc-conflict").text, "the conflict told")
    assert "now version 2" in conflict
    # The page reloaded (the other change shows) and the form kept the user's input for another try.
    wait(lambda: _css(browser, _row("qwen-b") + ' td[data-field="weight"]').text == "2", "the reloaded config")
    assert _css(browser, "#svc-f-weight").get_attribute("value") == "5"
    assert _css(browser, weight_error).text == ""
    _css(browser, "#svc-save").click()
    wait(lambda: _css(browser, "#svc-status").text == "Saved as config version 3", "saved on the second try")
    assert [i["weight"] for i in admin.instances()] == [5, 2]  # neither change undone
    assert _send(gw, a, b, 35) == (25, 10)
    _refused_calls_only(browser, {"400", "409"})


def test_add_an_instance_an_alias_and_remove_the_instance(
    browser: Any, store_gateway: Started, start_upstream: Callable[..., tuple[FakeOpenAI, str]]
) -> None:
    a, b, gw = store_gateway
    c, c_url = start_upstream("c")
    log_in(browser, gw)
    go_to(browser, "services")
    wait(lambda: _css(browser, _row("qwen-a")).is_displayed(), "the instances")
    _css(browser, '#services [data-service="chat"] button[data-action="add-instance"]').click()
    _type(browser, "#svc-f-name", "llama")
    _type(browser, "#svc-f-base_url", c_url)
    _type(browser, "#svc-f-upstream_model", "llama-3")
    _css(browser, "#svc-save").click()
    wait(lambda: _css(browser, _row("llama#1")).is_displayed(), "the new instance")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "hi"}])
    assert c.last.json["model"] == "llama-3"

    _css(browser, '#services [data-service="chat"] button[data-action="edit-aliases"]').click()
    _css(browser, "#svc-add-alias").click()
    _type(browser, "#svc-alias-form [data-alias-row] .svc-alias-name", "gpt-4o")
    _type(browser, "#svc-alias-form [data-alias-row] .svc-alias-target", "nope")
    _css(browser, "#svc-save").click()
    alias_error = '#svc-alias-form [data-error-for="alias:gpt-4o"]'
    wait(lambda: "unknown model" in _css(browser, alias_error).text, "the alias's error at its row")
    _type(browser, "#svc-alias-form [data-alias-row] .svc-alias-target", "llama")
    _css(browser, "#svc-save").click()
    wait(lambda: "gpt-4o → llama" in _css(browser, '[data-aliases="chat"]').text, "the alias shown")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert len(c.requests) == 2

    # The alias points at the instance about to go: the config would refuse that, so the alias goes first.
    _css(browser, '#services [data-service="chat"] button[data-action="edit-aliases"]').click()
    _css(browser, "#svc-alias-form [data-alias-row] button").click()
    _css(browser, "#svc-save").click()
    wait(lambda: _css(browser, '[data-aliases="chat"]').text == "none", "the alias removed")
    _css(browser, _row("llama#1") + ' button[data-action="remove"]').click()
    _accept_confirmation(browser)
    wait(lambda: not _all(browser, _row("llama#1")), "the instance removed")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "hi"}])
    assert _send(gw, a, b, 4) == (2, 2)
    _refused_calls_only(browser, {"400"})


def test_an_instance_added_with_an_api_key_from_the_environment(
    browser: Any,
    store_gateway: Started,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hosted backend needs a key: a literal one is refused at its field (the store keeps no secret), a ${ENV}
    reference is saved, shown as written when the form opens again, and sent upstream as the environment has it."""
    _, _, gw = store_gateway
    c, c_url = start_upstream("c")
    monkeypatch.setenv("HOSTED_KEY", "sk-hosted-0123456789")
    log_in(browser, gw)
    go_to(browser, "services")
    wait(lambda: _css(browser, _row("qwen-a")).is_displayed(), "the instances")
    _css(browser, '#services [data-service="chat"] button[data-action="add-instance"]').click()
    _type(browser, "#svc-f-name", "hosted")
    _type(browser, "#svc-f-base_url", c_url)
    _type(browser, "#svc-f-api_key", "sk-literal-secret")
    _css(browser, "#svc-save").click()
    wait(lambda: "${ENV}" in _css(browser, '[data-error-for="api_key"]').text, "the literal key refused at its field")
    _type(browser, "#svc-f-api_key", "${HOSTED_KEY}")
    _css(browser, "#svc-save").click()
    wait(lambda: _css(browser, _row("hosted#1")).is_displayed(), "the new instance")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(model="hosted", messages=[{"role": "user", "content": "hi"}])
    assert c.last.headers["Authorization"] == "Bearer sk-hosted-0123456789"
    _css(browser, _row("hosted#1") + ' button[data-action="edit"]').click()
    assert _css(browser, "#svc-f-api_key").get_attribute("value") == "${HOSTED_KEY}"
    assert "sk-hosted" not in browser.page_source
    _refused_calls_only(browser, {"400"})


def test_a_failing_instance_shows_its_breaker_open_and_why(
    browser: Any,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Any,
) -> None:
    _, a_url = start_upstream("a")
    bad, bad_url = start_upstream("bad")
    config = _config(a_url, bad_url, tmp_path)
    config["services"]["chat"]["instances"][1] = {"name": "broken", "id": "broken-1", "base_url": bad_url}
    gw = start_gateway(config, config_source="store")
    _users(gw)
    bad.fail("/v1/chat/completions", 500, {"error": {"message": "down", "type": "server_error"}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for _ in range(3):
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    log_in(browser, gw)
    go_to(browser, "services")
    breaker = _row("broken-1") + " td[data-breaker]"
    wait(lambda: _css(browser, breaker).get_attribute("data-breaker") == "open", "the breaker open")
    assert _css(browser, breaker + " .svc-reason").text == "HTTP 500"
    assert _css(browser, _row("qwen-a") + " td[data-breaker]").get_attribute("data-breaker") == "closed"
    assert not _all(browser, _row("qwen-a") + " .svc-reason")
    screenshot(browser, "services-breaker")

    from selenium.webdriver.support.ui import Select

    Select(_css(browser, "#lang")).select_by_value("zh")
    wait(lambda: _css(browser, "#services h2").text == "服务", "the page in Chinese")
    assert _css(browser, breaker).text.startswith("打开")
    assert "存储模式" in _css(browser, "#svc-mode").text
    Select(_css(browser, "#lang")).select_by_value("en")
    wait(lambda: _css(browser, breaker).text.startswith("open"), "English again")


def test_a_viewer_sees_no_edit_controls_on_either_page(browser: Any, store_gateway: Started) -> None:
    _, _, gw = store_gateway
    Admin(gw).call("PATCH", "/services/chat", json={"version": 1, "changes": {"load_balance": "random"}})
    log_in(browser, gw, "watcher")
    go_to(browser, "services")
    wait(lambda: _css(browser, _row("qwen-b") + " td[data-breaker]").text == "closed", "the services")
    assert "watcher (viewer)" in _css(browser, "#who").text
    assert _all(browser, "#services button") == []
    go_to(browser, "versions")
    wait(lambda: len(_all(browser, "#ver-list tr[data-version]")) == 2, "the versions")
    assert _all(browser, "#ver-list button") == []
    assert _css(browser, "#ver-show-diff").is_displayed()  # reading a diff is not an edit


def test_file_mode_is_read_only_with_a_notice(
    browser: Any,
    start_upstream: Callable[..., tuple[FakeOpenAI, str]],
    start_gateway: Callable[..., GatewayServer],
    tmp_path: Any,
) -> None:
    _, a_url = start_upstream("a")
    _, b_url = start_upstream("b")
    gw = start_gateway(_config(a_url, b_url, tmp_path), config_source="file")
    _users(gw)
    log_in(browser, gw)
    go_to(browser, "services")
    wait(lambda: _css(browser, _row("qwen-b")).is_displayed(), "the instances")
    notice = _css(browser, "#svc-mode")
    assert notice.get_attribute("data-mode") == "file"
    assert "the config file is the truth" in notice.text
    assert _all(browser, "#services button") == []
    screenshot(browser, "services-file-mode")
    go_to(browser, "versions")
    wait(lambda: _all(browser, '#ver-list tr[data-version="1"]'), "the versions")
    assert "File mode" in _css(browser, "#ver-mode").text
    assert _all(browser, "#ver-list button") == []
    # What the page does not offer, the API refuses too.
    refused = Admin(gw).call("POST", "/config/versions/1/apply", json={"version": 1})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "config_read_only")


# --- the admin API additions the pages use ------------------------------------------------------------------------


def test_live_state_says_why_and_when_a_breaker_opened(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> None:
    _, a_url = start_upstream("a")
    bad, bad_url = start_upstream("bad")
    config = _config(a_url, bad_url, tmp_path)
    config["services"]["chat"]["instances"] = [
        {"name": "qwen", "id": "qwen-a", "base_url": a_url},
        {"name": "broken", "id": "broken-1", "base_url": bad_url},
        {"name": "gone", "id": "gone-1", "base_url": f"http://127.0.0.1:{free_port()}"},
    ]
    gw = start_gateway(config, config_source="store")
    _users(gw)
    bad.fail("/v1/chat/completions", 502, {"error": {"message": "bad", "type": "server_error"}})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    admin = Admin(gw)

    def by_name() -> dict[str, dict[str, Any]]:
        reply = admin.call("GET", "/state")
        assert reply.status_code == 200, reply.text
        return {inst["instance"]: inst for inst in reply.json()["instances"]}

    client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
    with contextlib.suppress(openai.APIStatusError):
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    # One failure does not open it (two in a row do): nothing to say yet.
    first = by_name()["broken-1"]
    assert (first["breaker"], first["breaker_reason"], first["breaker_opened_at"]) == ("closed", None, None)
    started = time.time()
    for model in ("broken", "gone", "gone"):
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    live = by_name()
    assert (live["broken-1"]["breaker"], live["broken-1"]["breaker_reason"]) == ("open", "HTTP 502")
    assert started - 1 <= live["broken-1"]["breaker_opened_at"] <= time.time() + 1
    assert live["gone-1"]["breaker"] == "open"
    assert live["gone-1"]["breaker_reason"].startswith("cannot connect to the backend"), live["gone-1"]
    assert (live["qwen-a"]["breaker_reason"], live["qwen-a"]["breaker_opened_at"]) == (None, None)


def test_a_refused_config_lists_every_problem_by_path(store_gateway: Started) -> None:
    _, _, gw = store_gateway
    admin = Admin(gw)
    url = admin.instances()[0]["base_url"]
    bad = admin.call(
        "PATCH",
        "/services/chat/instances/qwen",
        params={"base_url": url},
        json={"version": 1, "changes": {"weight": -1, "base_url": "ftp://x"}},
    )
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_config")
    params = [problem["param"] for problem in error["problems"]]
    assert sorted(params) == ["services.chat.instances[0].base_url", "services.chat.instances[0].weight"]
    assert error["param"] == params[0]
    assert all(problem["message"] and problem["message"] in error["message"] for problem in error["problems"])
    assert admin.call("GET", "/config").json()["version"] == 1
