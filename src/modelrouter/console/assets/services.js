// Services and instances: the config's services (GET /admin/api/config: mode, version and the config in one
// snapshot, so what is shown and the version an edit is based on always match) joined with the live state (GET
// /admin/api/state: health, breaker and why it opened, in flight, latency, errors, cool-down). In store mode an
// editor adds, edits and removes instances and edits a service's aliases (services_edit.js); in file mode the page
// is read-only, since the file is the truth there.
"use strict";

import { api, el, formatNumber, formatTime, isEditor, showError, t } from "./core.js";
import { editStrings, openAliasForm, openInstanceForm, removeInstance } from "./services_edit.js";

const strings = {
  en: {
    services: "Services", svc_instance: "Instance", svc_models: "Models", svc_base_url: "Base URL", svc_weight: "Weight",
    svc_healthy: "Healthy", svc_breaker: "Breaker", svc_in_flight: "In flight", svc_latency: "EWMA latency (ms)",
    svc_error_rate: "Error rate", svc_cooldown: "Cool-down (s)", svc_actions: "Actions", svc_closed: "closed",
    svc_open: "open", svc_half_open: "half open", svc_not_live: "not serving", svc_edit: "Edit", svc_remove: "Remove",
    svc_add_instance: "Add instance", svc_aliases: "Aliases", svc_no_aliases: "none", svc_edit_aliases: "Edit aliases",
    svc_file_mode: "File mode: the config file is the truth, so this page is read-only (the admin API refuses edits " +
      "with 409). Edit the file, or run the gateway with --config-source store to edit here.",
    svc_store_mode: "Store mode: edits are validated, saved as a new config version and applied at once.",
    svc_version: "Config version", svc_no_services: "The config has no services.", svc_since: "since",
    svc_saved: "Saved as config version ",
    svc_conflict: "Someone else changed the config meanwhile (it is now version {v}). The page shows it again: check " +
      "and save once more.",
  },
  zh: {
    services: "服务", svc_instance: "实例", svc_models: "模型", svc_base_url: "基础 URL", svc_weight: "权重",
    svc_healthy: "健康", svc_breaker: "熔断器", svc_in_flight: "进行中", svc_latency: "EWMA 延迟（毫秒）",
    svc_error_rate: "错误率", svc_cooldown: "冷却（秒）", svc_actions: "操作", svc_closed: "关闭",
    svc_open: "打开", svc_half_open: "半开", svc_not_live: "未在服务", svc_edit: "编辑", svc_remove: "删除",
    svc_add_instance: "添加实例", svc_aliases: "别名", svc_no_aliases: "无", svc_edit_aliases: "编辑别名",
    svc_file_mode: "文件模式：配置文件为准，因此本页只读（管理 API 以 409 拒绝修改）。请编辑该文件，或以 " +
      "--config-source store 运行网关后在此编辑。",
    svc_store_mode: "存储模式：修改经校验后保存为新的配置版本并立即生效。",
    svc_version: "配置版本", svc_no_services: "配置中没有服务。", svc_since: "自",
    svc_saved: "已保存为配置版本 ",
    svc_conflict: "其他人同时修改了配置（现为版本 {v}）。页面已重新载入：请检查后再次保存。",
  },
};

for (const lang of Object.keys(strings)) Object.assign(strings[lang], editStrings[lang]);

// What the page shows: the config snapshot (mode, version, document) and the newest live state by instance.
const view = { mode: null, version: null, config: null, live: new Map(), loaded: false };

const LIVE = ["healthy", "breaker", "in_flight", "latency", "error_rate", "cooldown"];

function build(section) {
  section.append(
    el("h2", { dataset: { i18n: "services" } }),
    el("p", { id: "svc-mode", class: "notice" }),
    el("p", { id: "svc-conflict", class: "warning", role: "alert" }),
    el("p", { id: "svc-status", class: "status", role: "status" }),
    el("p", { id: "svc-error", class: "error", role: "alert" }),
    el("div", { id: "svc-editor", class: "editor", hidden: true }),
    el("div", { id: "svc-list" }),
  );
}

// Public instance names as the gateway gives them (ServiceConfig.instance_names): the `id`, else "<name>#<n>" with
// n counting the instances of that name in the service; the live state is keyed by them.
export function instanceNames(instances) {
  const seen = new Map();
  return instances.map((inst) => {
    const n = (seen.get(inst.name) || 0) + 1;
    seen.set(inst.name, n);
    return inst.id || inst.name + "#" + n;
  });
}

export function editable() {
  return isEditor() && view.mode === "store";
}

// Reload the config snapshot and redraw the services (an open form stays as it is).
export async function reload() {
  const answer = await api("GET", "/admin/api/config");
  Object.assign(view, { mode: answer.mode, version: answer.version, config: answer.config || {}, loaded: true });
  render();
  return view;
}

export function currentView() {
  return view;
}

function render() {
  const mode = document.getElementById("svc-mode");
  mode.textContent = (view.mode === "file" ? t("svc_file_mode") : t("svc_store_mode")) + " " + t("svc_version") +
    ": " + (view.version == null ? "—" : view.version);
  mode.dataset.mode = view.mode || "";
  const list = document.getElementById("svc-list");
  list.replaceChildren();
  const services = view.config.services || {};
  if (!Object.keys(services).length) list.append(el("p", {}, t("svc_no_services")));
  for (const [name, service] of Object.entries(services)) list.append(renderService(name, service || {}));
  applyLive();
}

function servedBy(instances) {
  const models = new Set();
  for (const inst of instances) {
    models.add(inst.name);
    for (const model of inst.models || []) models.add(model);
  }
  return models;
}

function renderService(name, service) {
  const instances = Array.isArray(service.instances) ? service.instances : [];
  const names = instanceNames(instances);
  const edit = editable();
  const head = ["svc_instance", "svc_models", "svc_base_url", "svc_weight", ...LIVE.map((c) => "svc_" + c)];
  const body = el("tbody");
  instances.forEach((inst, index) => {
    const row = el("tr", { dataset: { service: name, instance: names[index] } },
      el("td", {}, names[index]),
      el("td", {}, [inst.name, ...(inst.models || [])].join(", ")),
      el("td", { class: "svc-url" }, inst.base_url || ""),
      el("td", { dataset: { field: "weight" } }, String(inst.weight ?? 1)),
      LIVE.map((column) => el("td", { dataset: { live: column } }, "—")));
    if (edit) {
      row.append(el("td", {},
        el("button", { dataset: { action: "edit" }, onclick: () => openInstanceForm(name, index) }, t("svc_edit")),
        el("button", { dataset: { action: "remove" }, onclick: () => removeInstance(name, index) }, t("svc_remove"))));
    }
    body.append(row);
  });
  const served = servedBy(instances);
  const aliases = Object.entries(view.config.aliases || {}).filter(([, target]) => served.has(target));
  return el("div", { class: "svc-service", dataset: { service: name } },
    el("h3", {}, name),
    el("table", { class: "svc-instances" },
      el("thead", {}, el("tr", {}, head.map((key) => el("th", {}, t(key))), edit ? el("th", {}, t("svc_actions")) : null)),
      body),
    el("p", { class: "svc-aliases" }, el("strong", {}, t("svc_aliases") + ": "),
      el("span", { dataset: { aliases: name } },
        aliases.length ? aliases.map(([alias, target]) => alias + " → " + target).join(", ") : t("svc_no_aliases"))),
    edit ? el("p", { class: "svc-actions" },
      el("button", { dataset: { action: "add-instance" }, onclick: () => openInstanceForm(name, null) }, t("svc_add_instance")),
      el("button", { dataset: { action: "edit-aliases" }, onclick: () => openAliasForm(name) }, t("svc_edit_aliases"))) : null);
}

// The live columns, updated in place (rows are rebuilt only when the config changes: a button under the pointer
// must not be replaced every two seconds).
function applyLive() {
  for (const row of document.querySelectorAll("#svc-list tr[data-instance]")) {
    const inst = view.live.get(row.dataset.service + "/" + row.dataset.instance);
    for (const td of row.querySelectorAll("td[data-live]")) fillLive(td, td.dataset.live, inst);
  }
}

function fillLive(td, column, inst) {
  td.className = "";
  td.replaceChildren();
  delete td.dataset.breaker;
  if (!inst) {
    td.textContent = column === "healthy" ? t("svc_not_live") : "—";
    return;
  }
  if (column === "healthy") {
    td.textContent = inst.healthy ? t("yes") : t("no");
    td.className = inst.healthy ? "good" : "bad";
  } else if (column === "breaker") {
    td.dataset.breaker = inst.breaker;
    td.className = inst.breaker === "closed" ? "good" : "bad";
    td.append(t("svc_" + inst.breaker));
    // Why it opened: shown while it is not closed (the API keeps the last reason after it closes too).
    if (inst.breaker !== "closed" && inst.breaker_reason) {
      td.append(el("span", { class: "svc-reason", dataset: { reason: inst.breaker_reason } }, inst.breaker_reason),
        el("span", { class: "svc-since" }, t("svc_since") + " " + formatTime(inst.breaker_opened_at)));
    }
  } else if (column === "in_flight") {
    td.textContent = String(inst.in_flight);
  } else if (column === "latency") {
    td.textContent = formatNumber(inst.ewma_latency_ms, 1);
  } else if (column === "error_rate") {
    td.textContent = (100 * (inst.recent_error_rate || 0)).toFixed(1) + " %";
    if (inst.recent_error_rate > 0) td.className = "bad";
  } else if (column === "cooldown") {
    td.textContent = formatNumber(inst.cooldown_s, 1);
  }
}

async function refresh() {
  const error = document.getElementById("svc-error");
  try {
    const live = await api("GET", "/admin/api/state");
    view.live = new Map((live.instances || []).map((inst) => [inst.service + "/" + inst.instance, inst]));
    if (!view.loaded || live.config_version !== view.version) await reload();
    else applyLive();
    error.textContent = "";
  } catch (failure) {
    showError(error, failure);
  }
}

function show() {
  view.loaded = false; // a fresh snapshot whenever the page is opened
}

function language() {
  if (view.loaded) render();
}

export default { id: "services", strings, build, show, refresh, language };
