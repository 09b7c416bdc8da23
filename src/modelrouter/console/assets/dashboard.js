// The dashboard: the gateway's live state (GET /admin/api/state) — replica, config version, models, and per
// instance its health, breaker, load, latency and recent errors.
"use strict";

import { api, cell, el, formatNumber, showError, t } from "./core.js";
import * as traffic from "./traffic.js";

const strings = {
  en: {
    dashboard: "Dashboard", replica: "Replica", config_version: "Config version", recent_requests: "Recent requests",
    models: "Models", instances: "Instances", instance: "Instance", service: "Service", healthy: "Healthy",
    breaker: "Breaker", in_flight: "In flight", latency: "EWMA latency (ms)", requests: "Recent requests",
    error_rate: "Error rate", cooldown: "Cool-down (s)", closed: "closed", open: "open", half_open: "half open",
  },
  zh: {
    dashboard: "仪表盘", replica: "副本", config_version: "配置版本", recent_requests: "近期请求",
    models: "模型", instances: "实例", instance: "实例", service: "服务", healthy: "健康",
    breaker: "熔断器", in_flight: "进行中", latency: "EWMA 延迟（毫秒）", requests: "近期请求",
    error_rate: "错误率", cooldown: "冷却（秒）", closed: "关闭", open: "打开", half_open: "半开",
  },
};

const COLUMNS = ["instance", "service", "healthy", "breaker", "in_flight", "latency", "requests", "error_rate", "cooldown",
  "tr_rps", "tr_p50", "tr_p99", "tr_ttft"];

function build(section) {
  section.append(
    el("h2", { dataset: { i18n: "dashboard" } }),
    el("dl", { class: "facts" },
      el("dt", { dataset: { i18n: "replica" } }), el("dd", { id: "replica" }),
      el("dt", { dataset: { i18n: "config_version" } }), el("dd", { id: "config-version" }),
      el("dt", { dataset: { i18n: "recent_requests" } }), el("dd", { id: "recent-requests" }, "0"),
      el("dt", { dataset: { i18n: "models" } }), el("dd", { id: "models" })),
    el("h3", { dataset: { i18n: "instances" } }),
    el("table", { id: "instances" },
      el("thead", {}, el("tr", {}, COLUMNS.map((name) => el("th", { dataset: { i18n: name } })))),
      el("tbody")),
    el("p", { id: "refresh-error", class: "error", role: "alert" }),
  );
  traffic.build(section);
}

function render(live, point) {
  document.getElementById("replica").textContent = live.replica || "";
  document.getElementById("config-version").textContent = live.config_version == null ? "—" : String(live.config_version);
  document.getElementById("models").textContent = (live.models || []).join(", ");
  let total = 0;
  const body = document.querySelector("#instances tbody");
  body.replaceChildren();
  for (const inst of live.instances || []) {
    total += inst.recent_requests || 0;
    const row = el("tr", { dataset: { instance: inst.instance } });
    cell(row, inst.instance);
    cell(row, inst.service);
    cell(row, inst.healthy ? t("yes") : t("no"), inst.healthy ? "good" : "bad");
    cell(row, t(inst.breaker), inst.breaker === "closed" ? "good" : "bad").dataset.breaker = inst.breaker;
    cell(row, inst.in_flight);
    cell(row, inst.ewma_latency_ms);
    cell(row, inst.recent_requests);
    cell(row, (100 * inst.recent_error_rate).toFixed(1) + " %");
    cell(row, inst.cooldown_s);
    // The newest history point: this instance's traffic over the last sample.
    const recent = point ? point.instances[inst.instance] || {} : {};
    cell(row, formatNumber(recent.rps, 2));
    cell(row, formatNumber(recent.p50_ms, 1));
    cell(row, formatNumber(recent.p99_ms, 1));
    cell(row, formatNumber(recent.ttft_p50_ms, 1));
    body.appendChild(row);
  }
  document.getElementById("recent-requests").textContent = String(total);
}

async function refresh() {
  const error = document.getElementById("refresh-error");
  try {
    const [live, point] = await Promise.all([api("GET", "/admin/api/state"), traffic.refresh()]);
    render(live, point);
    error.textContent = "";
  } catch (failure) {
    showError(error, failure);
    if (error.textContent) error.textContent = t("refresh_failed") + error.textContent;
  }
}

for (const lang of ["en", "zh"]) Object.assign(strings[lang], traffic.strings[lang]);

export default { id: "dashboard", strings, build, refresh, language: traffic.draw };
