"""The monitoring files under deploy/: Prometheus scrape config, alert rules and the Grafana dashboard.

They only use the metric families the gateway exports (``modelrouter.metrics`` and the gauges read at scrape
time). When ``promtool`` is on PATH the config, the rules, the rules' unit tests (``alerts_test.yml``) and the
dashboard's PromQL are also checked by Prometheus' own parser.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST_YML = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD_JSON = DEPLOY / "grafana" / "modelrouter-dashboard.json"

COUNTERS = (
    "modelrouter_requests",
    "modelrouter_tokens",
    "modelrouter_retries",
    "modelrouter_fallbacks",
    "modelrouter_rate_limited",
    "modelrouter_usage_records_dropped",
    "modelrouter_state_errors",
)
HISTOGRAMS = (
    "modelrouter_request_duration_seconds",
    "modelrouter_upstream_duration_seconds",
    "modelrouter_upstream_ttft_seconds",
)
GAUGES = (
    "modelrouter_instance_in_flight",
    "modelrouter_instance_healthy",
    "modelrouter_instance_breaker_state",
    "modelrouter_active_requests",
    "modelrouter_config_version",
    "modelrouter_build_info",
    "modelrouter_replica_info",
)
ALLOWED_METRICS = frozenset(
    [f"{name}_total" for name in COUNTERS]
    + [f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
    + list(GAUGES)
    + ["up"]
)

EXPECTED_ALERTS = {
    "ModelrouterGatewayDown",
    "ModelrouterNoModelsServing",
    "ModelrouterBackendDown",
    "ModelrouterBreakerOpen",
    "ModelrouterHighErrorRate",
    "ModelrouterLatencySLO",
    "ModelrouterRateLimiting",
    "ModelrouterUsageRecordsDropped",
    "ModelrouterSharedStateErrors",
}
SEVERITIES = {"critical", "warning", "info"}

# PromQL words that are neither metric names nor followed by "(": keywords and binary operators.
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"atan2", "inf", "nan"}
)
GRAFANA_BUILTINS = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"})
# Values substituted for Grafana variables to turn a dashboard query into plain PromQL.
VARIABLE_VALUES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "model": ".*", "instance": ".*"}


# --- helpers ------------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD_JSON.open(encoding="utf-8") as f:
        return json.load(f)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS_YML)["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included; row panels themselves are left out."""
    out = []
    for panel in load_dashboard()["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) of every panel query."""
    return [
        (f"panel {panel['id']} {panel['title']!r} target {target.get('refId')}", target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def template_queries() -> list[tuple[str, str]]:
    out = []
    for var in load_dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"variable {var['name']}", query))
    return out


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"modelrouter_[a-z_]+", expr))


def bare_identifiers(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that can only be metric names.

    Drops string literals, label matchers ``{...}``, ranges ``[...]``, grouping clauses ``by (...)`` and the like,
    then keeps identifiers that are not called (no ``(`` after them) and are not keywords.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"#[^\n]*", "", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, called = match.group(1), match.group(2)
        if not called and word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def variables_used(text: str) -> set[str]:
    return set(re.findall(r"\$\{?(\w+)", text))


def substitute_variables(expr: str) -> str:
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: VARIABLE_VALUES[m.group(1) or m.group(2)], expr)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not on PATH (install Prometheus, e.g. `apt-get install prometheus`, to run this)")
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


# --- (a) structure of the Prometheus files ------------------------------------------------------------------------


def test_prometheus_config_structure() -> None:
    config = load_yaml(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_YML.parent / "alerts.yml").is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["modelrouter"]
    # The gateway's own `instance` label (an upstream instance) must win over the target's address.
    assert job["honor_labels"] is True
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:8080"]
    # Replicas stay apart although honor_labels drops the target address from upstream series.
    assert {"source_labels": ["__address__"], "target_label": "replica"} in job["relabel_configs"]


def test_alert_rules_structure() -> None:
    groups = load_yaml(ALERTS_YML)["groups"]
    assert [group["name"] for group in groups] == ["modelrouter"]
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        name = rule["alert"]
        assert isinstance(rule["expr"], str), name
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_alert_annotations_name_what_is_affected() -> None:
    wanted = {
        "ModelrouterBackendDown": ("$labels.instance", "$labels.service"),
        "ModelrouterBreakerOpen": ("$labels.instance", "$labels.service"),
        "ModelrouterNoModelsServing": ("$labels.service",),
        "ModelrouterHighErrorRate": ("$labels.model",),
        "ModelrouterLatencySLO": ("$labels.endpoint",),
        "ModelrouterRateLimiting": ("$labels.scope",),
        "ModelrouterGatewayDown": ("$labels.instance",),
        "ModelrouterSharedStateErrors": ("$labels.instance",),
    }
    for rule in alert_rules():
        for label in wanted.get(rule["alert"], ()):
            assert label in rule["annotations"]["summary"], (rule["alert"], label)


def test_alert_thresholds() -> None:
    rules = alert_rules()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        by_name.setdefault(rule["alert"], []).append(rule)
    [backend] = by_name["ModelrouterBackendDown"]
    assert "modelrouter_instance_healthy" in backend["expr"]
    assert backend["expr"].rstrip().endswith("== 0")
    assert backend["for"] == "2m"
    [breaker] = by_name["ModelrouterBreakerOpen"]
    assert "modelrouter_instance_breaker_state" in breaker["expr"]
    assert breaker["expr"].rstrip().endswith("== 2")
    assert breaker["for"] == "1m"
    [errors] = by_name["ModelrouterHighErrorRate"]
    assert 'status=~"5.."' in errors["expr"]
    assert "[5m]" in errors["expr"]
    assert "> 0.05" in errors["expr"]
    assert ">= 1" in errors["expr"]
    latency = {rule["labels"]["slo"]: rule for rule in by_name["ModelrouterLatencySLO"]}
    assert set(latency) == {"2s", "30s"}
    assert 'endpoint=~"embeddings|rerank"' in latency["2s"]["expr"]
    assert latency["2s"]["expr"].rstrip().endswith("> 2")
    assert 'endpoint="chat"' in latency["30s"]["expr"]
    assert latency["30s"]["expr"].rstrip().endswith("> 30")
    for rule in latency.values():
        assert "histogram_quantile(0.95" in rule["expr"]
        assert "[10m]" in rule["expr"]
    [limited] = by_name["ModelrouterRateLimiting"]
    assert limited["labels"]["severity"] == "info"
    assert "by (job, scope)" in limited["expr"]
    [dropped] = by_name["ModelrouterUsageRecordsDropped"]
    assert "increase(modelrouter_usage_records_dropped_total[10m])" in dropped["expr"]
    [down] = by_name["ModelrouterGatewayDown"]
    assert 'up{job="modelrouter"} == 0' in down["expr"]
    [state] = by_name["ModelrouterSharedStateErrors"]
    assert "increase(modelrouter_state_errors_total[5m])" in state["expr"]
    assert "by (job, instance)" in state["expr"]  # per replica: the one that cannot reach Redis


# --- (b) only the gateway's metrics -------------------------------------------------------------------------------


def all_exprs() -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()] + dashboard_exprs()


def test_exprs_use_only_exported_metrics() -> None:
    exprs = all_exprs() + template_queries()
    assert len(exprs) > 20
    for where, expr in exprs:
        unknown = metric_names(expr) - ALLOWED_METRICS
        assert not unknown, f"{where}: unknown metric(s) {sorted(unknown)} in {expr!r}"


def test_exprs_have_no_other_metric_names() -> None:
    """Stricter: no bare identifier other than an allowed metric (catches e.g. a misspelt `up` or foreign metric)."""
    for where, expr in all_exprs():
        unknown = bare_identifiers(expr) - ALLOWED_METRICS
        assert not unknown, f"{where}: unknown identifier(s) {sorted(unknown)} in {expr!r}"


def test_identifier_extraction() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (endpoint, le) "
        '(rate(modelrouter_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval]))) > 2 '
        'and on (job) up{job="x"} == 1 or absent(foo_bar) unless 1e3 > bogus'
    )
    assert bare_identifiers(expr) == {"modelrouter_request_duration_seconds_bucket", "up", "foo_bar", "bogus"}
    assert metric_names("modelrouter_tokens_total + modelrouter_nope") == {
        "modelrouter_tokens_total",
        "modelrouter_nope",
    }


def test_every_metric_family_is_used() -> None:
    """The dashboard shows every family the gateway exports."""
    used = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    families = set(COUNTERS) | set(HISTOGRAMS) | set(GAUGES)
    for family in families:
        assert any(name == family or name.startswith(family + "_") for name in used), family


# --- (c) the dashboard --------------------------------------------------------------------------------------------


def test_dashboard_is_importable() -> None:
    dashboard = load_dashboard()
    assert dashboard["id"] is None
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] == 39
    assert dashboard["time"] == {"from": "now-1h", "to": "now"}
    assert dashboard["refresh"] == "30s"
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("model", "instance"):
        assert variables[name]["type"] == "query"
        query = variables[name]["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert re.fullmatch(rf"label_values\(modelrouter_\w+, {name}\)", query), query


def test_dashboard_panels() -> None:
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert len(panels) >= 15
    for panel in panels:
        title = panel["title"]
        assert panel["type"] in {"timeseries", "stat", "state-timeline", "table", "bargauge"}, title
        assert panel["description"].strip(), title
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(grid), title
        assert grid["x"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, title
        assert grid["h"] > 0, title
        targets = panel["targets"]
        assert any(target.get("expr", "").strip() for target in targets), f"{title}: no target with an expr"
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        for source in [panel["datasource"]] + [target["datasource"] for target in targets]:
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, title


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_has_the_panels_asked_for() -> None:
    panels = dashboard_panels()
    text = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in panels}

    def find(title_part: str) -> dict[str, Any]:
        [panel] = [panel for panel in panels if title_part.lower() in panel["title"].lower()]
        return panel

    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (endpoint, le)" in text[find("request duration")["title"]]
    assert "modelrouter_upstream_ttft_seconds_bucket" in text[find("first token")["title"]]
    assert "modelrouter_upstream_duration_seconds_bucket" in text[find("upstream duration")["title"]]
    breaker = find("breaker")
    assert breaker["type"] == "state-timeline"
    [mapping] = breaker["fieldConfig"]["defaults"]["mappings"]
    assert {key: value["text"] for key, value in mapping["options"].items()} == {
        "0": "closed",
        "1": "half-open",
        "2": "open",
    }
    assert find("instance health")["type"] in {"stat", "state-timeline"}
    assert "topk(10" in text[find("top 10 keys")["title"]]
    for title in ("config version", "active requests", "build version"):
        assert find(title)["type"] == "stat"
    assert "modelrouter_build_info" in text[find("build version")["title"]]


def test_dashboard_variables_are_defined() -> None:
    dashboard = load_dashboard()
    defined = {var["name"] for var in dashboard["templating"]["list"]}
    for where, expr in dashboard_exprs():
        undefined = variables_used(expr) - defined - GRAFANA_BUILTINS
        assert not undefined, f"{where}: undefined variable(s) {sorted(undefined)} in {expr!r}"
    used = {name for _, expr in dashboard_exprs() for name in variables_used(expr)}
    assert {"model", "instance"} <= used
    datasource_refs = set(re.findall(r"\$\{?(\w+)", json.dumps([p["datasource"] for p in dashboard_panels()])))
    assert datasource_refs <= defined


# --- (d) promtool -------------------------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    run_promtool("check", "config", PROMETHEUS_YML)


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", ALERTS_YML)
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_rule_unit_tests() -> None:
    """The alerts fire (and stay quiet) as alerts_test.yml says, on synthetic series."""
    run_promtool("test", "rules", ALERTS_TEST_YML.name, cwd=ALERTS_TEST_YML.parent)


def test_promtool_parses_dashboard_queries(tmp_path: Path) -> None:
    """Each dashboard query, variables filled in, is valid PromQL (checked as a recording rule)."""
    exprs = dashboard_exprs()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute_variables(expr)} for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run_promtool("check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
