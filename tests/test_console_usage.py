"""The console's Usage and Audit pages in a real headless Chromium against a real gateway (client keys on, usage in
a SQLite store, two chat models on a loopback FakeOpenAI upstream), the requests sent with the openai SDK: after
requests with two keys on two models the table's rows and totals match what the SDK was answered, per the
browser's local day; grouping by model and filtering by key or a custom range change them; the CSV export
downloads a file (Chromium's real download) whose rows are the table's. The audit log shows what was done in the
page, filtered by action prefix, exact action, target and actor; "Load more" pages through more entries than a
page holds."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from .console_admin import Admin, chat, css, every, keys_gateway, ready, type_into
from .console_browser import go_to, log_in, screenshot, wait
from .fakes import FakeOpenAI
from .servers import GatewayServer

TODAY = (
    "const d = new Date(); const p = (n) => String(n).padStart(2, '0');"
    "return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate());"
)


@pytest.fixture
def gateway(
    start_upstream: Callable[..., tuple[FakeOpenAI, str]], start_gateway: Callable[..., GatewayServer], tmp_path: Any
) -> GatewayServer:
    return keys_gateway(start_upstream, start_gateway, tmp_path)[1]


def select(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(css(driver, "#" + element_id)).select_by_value(value)


def queried(driver: Any, page: str, **expected: str | bool | None) -> None:
    """Wait until the page shows the answer of a query (its data-query) with these parameters: a value, True for
    any value, None for none."""

    def matches() -> bool:
        query = dict(parse_qsl(css(driver, "#" + page).get_attribute("data-query") or "", keep_blank_values=True))
        return all((name in query) if value is True else query.get(name) == value for name, value in expected.items())

    wait(matches, f"the answer to {expected}")


def table(driver: Any) -> list[dict[str, str]]:
    """The usage table's rows: their day, key and model (data attributes), key shown and every number."""
    out = []
    for row in every(driver, "#usage-table tbody tr[data-model]"):
        item = {"day": row.get_attribute("data-day"), "key_id": row.get_attribute("data-key-id")}
        item["model"] = row.get_attribute("data-model")
        for td in row.find_elements("css selector", "td[data-field]"):
            field = td.get_attribute("data-field")
            item[field] = td.get_attribute("data-value") if td.get_attribute("data-value") is not None else td.text
        out.append(item)
    return out


def totals(driver: Any) -> dict[str, int]:
    return {
        td.get_attribute("data-field"): int(td.get_attribute("data-value"))
        for td in every(driver, "#usage-table tfoot td[data-value]")
    }


def test_usage_by_key_model_and_day_matches_what_was_sent_and_exports_as_csv(
    browser: Any, gateway: GatewayServer, tmp_path: Path
) -> None:
    gw, admin = gateway, Admin(gateway)
    alpha, alpha_secret = admin.create_key("alpha")
    beta, beta_secret = admin.create_key("beta")
    ready(gw, alpha_secret)
    ready(gw, beta_secret)
    sent: Counter[tuple[str, str]] = Counter()
    tokens: Counter[str] = Counter()
    for name, secret, model in [("alpha", alpha_secret, "qwen")] * 3 + [
        ("alpha", alpha_secret, "llama"),
        ("beta", beta_secret, "llama"),
        ("beta", beta_secret, "llama"),
    ]:
        answer = chat(gw, secret, model)
        sent[(name, model)] += 1
        tokens["prompt_tokens"] += answer.usage.prompt_tokens
        tokens["completion_tokens"] += answer.usage.completion_tokens
        tokens["total_tokens"] += answer.usage.total_tokens
    wait(lambda: sum(r["requests"] for r in admin.usage(group_by="none")) == 6, "the usage recorded")

    log_in(browser, gw)
    go_to(browser, "usage")
    today = browser.execute_script(TODAY)
    queried(browser, "usage", group_by="key_model", per="day", utc_offset=True, since=True, key_id=None)
    rows = wait(lambda: len(table(browser)) == 3 and table(browser), "three rows")
    ids = {alpha["id"]: "alpha", beta["id"]: "beta"}
    shown = {(r["key"], r["model"]): int(r["requests"]) for r in rows}
    assert shown == dict(sent)
    assert {r["day"] for r in rows} == {today}
    assert {r["key_id"] for r in rows} == {f"store:{i}" for i in ids}
    assert all(int(r["errors"]) == 0 for r in rows)
    assert totals(browser)["requests"] == 6
    assert {name: totals(browser)[name] for name in tokens} == dict(tokens)
    # The chart: a line per key and model over the 7 days, today's point the last.
    legend = [li.text for li in every(browser, "#usage-chart ul.chart-legend li")]
    assert sorted(legend) == ["alpha · llama", "alpha · qwen", "beta · llama"]
    for index, group in enumerate(every(browser, "#usage-chart svg.line-chart g.series")):
        points = group.find_elements("css selector", "circle")
        assert len(points) == 7
        key, model = legend[index].split(" · ")
        assert [float(p.get_attribute("data-y")) for p in points] == [0.0] * 6 + [float(sent[(key, model)])]
    screenshot(browser, "usage")

    # Tokens instead of requests: the chart only.
    select(browser, "usage-metric", "tokens")
    wait(lambda: css(browser, "#usage-chart").get_attribute("data-metric") == "total_tokens", "the tokens chart")
    tops = [
        float(g.find_elements("css selector", "circle")[-1].get_attribute("data-y"))
        for g in every(browser, "#usage-chart g.series")
    ]
    assert sum(tops) == tokens["total_tokens"]

    # By model: two rows.
    select(browser, "usage-group", "model")
    queried(browser, "usage", group_by="model")
    wait(lambda: {(r["model"], r["requests"]) for r in table(browser)} == {("qwen", "3"), ("llama", "3")}, "by model")
    # One key, not per day: its one model, no day column.
    select(browser, "usage-key", f"store:{beta['id']}")
    queried(browser, "usage", group_by="model", key_id=f"store:{beta['id']}")
    css(browser, "#usage-per-day").click()
    queried(browser, "usage", group_by="model", key_id=f"store:{beta['id']}", per=None, utc_offset=None)
    assert [(r["day"], r["model"], r["requests"]) for r in table(browser)] == [("", "llama", "2")]
    assert "Day" not in [th.text for th in every(browser, "#usage-table thead th")]
    assert len(every(browser, "#usage-chart svg.bar-chart rect[data-x]")) == 1
    # A custom range of yesterday only: nothing.
    select(browser, "usage-range", "custom")
    yesterday = browser.execute_script(
        "const d = new Date(); d.setDate(d.getDate() - 1); const p = (n) => String(n).padStart(2, '0');"
        "return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate());"
    )
    for field in ("usage-from", "usage-to"):
        browser.execute_script("arguments[0].value = arguments[1]", css(browser, "#" + field), yesterday)
    css(browser, "#usage-show").click()
    queried(browser, "usage", until=True)
    wait(lambda: css(browser, "#usage-table tbody").text == "No usage for these filters.", "no usage")
    assert totals(browser)["requests"] == 0

    # Back to every key per day over 7 days; the CSV downloads the same rows.
    select(browser, "usage-range", "7d")
    select(browser, "usage-key", "")
    select(browser, "usage-group", "key_model")
    css(browser, "#usage-per-day").click()
    queried(browser, "usage", group_by="key_model", per="day", key_id=None, until=None)
    wait(lambda: len(table(browser)) == 3, "three rows again")
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    css(browser, "#usage-export").click()
    saved = tmp_path / "usage.csv"
    wait(lambda: saved.exists() and saved.stat().st_size > 0, "the CSV downloaded")
    wait(lambda: css(browser, "#usage-status").text.startswith("Saved usage.csv"), "the export told")
    lines = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [(r["day"], r["key_name"], r["model"], r["requests"], r["total_tokens"]) for r in lines] == [
        (r["day"], r["key"], r["model"], r["requests"], r["total_tokens"]) for r in table(browser)
    ]
    assert sum(int(r["prompt_tokens"]) for r in lines) == tokens["prompt_tokens"]


def test_the_audit_log_filters_and_pages(browser: Any, gateway: GatewayServer) -> None:
    gw, admin = gateway, Admin(gateway)
    log_in(browser, gw)
    go_to(browser, "keys")
    # Done in the page: a key created and disabled.
    type_into(browser, "#new-key-name", "audited")
    css(browser, "#new-key-save").click()
    wait(lambda: every(browser, '#key-list tr[data-key="audited"]'), "the key")
    css(browser, '#key-list tr[data-key="audited"] button[data-action="disable"]').click()
    wait(lambda: every(browser, '#key-list tr[data-key="audited"] td[data-state="disabled"]'), "disabled")
    key = admin.key("audited")
    target = f"key:{key['id']}"

    go_to(browser, "audit")
    wait(lambda: every(browser, "#audit-table tbody tr[data-id]"), "the audit log")
    newest = every(browser, "#audit-table tbody tr[data-id]")[:2]
    assert [(r.get_attribute("data-action"), r.get_attribute("data-target")) for r in newest] == [
        ("key.disable", target),
        ("key.create", target),
    ]
    cells = [td.text for td in newest[0].find_elements("css selector", "td")]
    assert cells[1:4] == ["ops", "key.disable", target]
    assert cells[4] == '{"name":"audited","ip":"127.0.0.1"}'  # compact JSON
    actions = {r.get_attribute("data-action") for r in every(browser, "#audit-table tbody tr[data-id]")}
    assert "admin.login" in actions
    assert not css(browser, "#audit-more").is_displayed()
    screenshot(browser, "audit")

    # A prefix: key actions only. A target: that key's. An exact action typed. An actor nobody is.
    select(browser, "audit-action-kind", "key")
    queried(browser, "audit", action="key")
    wait(
        lambda: (
            {r.get_attribute("data-action") for r in every(browser, "#audit-table tbody tr[data-id]")}
            == {"key.create", "key.disable"}
        ),
        "key actions only",
    )
    type_into(browser, "#audit-target", target + "\n")
    queried(browser, "audit", action="key", target=target)
    assert [r.get_attribute("data-target") for r in every(browser, "#audit-table tbody tr[data-id]")] == [target] * 2
    select(browser, "audit-action-kind", "*")
    type_into(browser, "#audit-action", "key.create\n")
    queried(browser, "audit", action="key.create", target=target)
    wait(
        lambda: (
            [r.get_attribute("data-action") for r in every(browser, "#audit-table tbody tr[data-id]")] == ["key.create"]
        ),
        "the exact action",
    )
    css(browser, "#audit-target").clear()
    type_into(browser, "#audit-actor", "nobody\n")
    queried(browser, "audit", action="key.create", target=None, actor="nobody")
    wait(lambda: css(browser, "#audit-table tbody").text == "No audit entries for these filters.", "nothing")

    # More entries than a page holds (50): Load more pages through all of them, newest first, none twice.
    for n in range(60):
        admin.create_key(f"bulk-{n}")
    css(browser, "#audit-actor").clear()
    select(browser, "audit-action-kind", "key")
    css(browser, "#audit-show").click()
    queried(browser, "audit", action="key", limit="50", actor=None, target=None)
    wait(lambda: len(every(browser, "#audit-table tbody tr[data-id]")) == 50, "the first page")
    assert css(browser, "#audit-count").text == "50 entries shown; there are more."
    css(browser, "#audit-more").click()
    wait(lambda: len(every(browser, "#audit-table tbody tr[data-id]")) == 62, "the second page")
    ids = [int(r.get_attribute("data-id")) for r in every(browser, "#audit-table tbody tr[data-id]")]
    assert ids == sorted(set(ids), reverse=True)
    assert not css(browser, "#audit-more").is_displayed()
    assert css(browser, "#audit-count").text == "62 entries shown."


def test_a_viewer_reads_usage_and_audit_in_chinese(browser: Any, gateway: GatewayServer) -> None:
    gw, admin = gateway, Admin(gateway)
    _, secret = admin.create_key("zh")
    ready(gw, secret)
    chat(gw, secret)
    wait(lambda: admin.usage(group_by="none"), "the usage recorded")
    log_in(browser, gw, "watcher")
    select(browser, "lang", "zh")
    go_to(browser, "usage")
    wait(lambda: css(browser, "#usage h2").text == "用量", "the Chinese page")
    wait(lambda: len(table(browser)) == 1, "the row")
    assert css(browser, "#usage-export").text == "导出 CSV"
    assert [th.text for th in every(browser, "#usage-table thead th")][:3] == ["日期", "密钥", "模型"]
    go_to(browser, "audit")
    wait(lambda: every(browser, '#audit-table tbody tr[data-action="key.create"]'), "the audit log")
    assert css(browser, "#audit h2").text == "审计"
