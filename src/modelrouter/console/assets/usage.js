// The Usage page: GET /admin/api/usage filtered by key, model and time range, grouped by key, model or both and
// optionally per local day; drawn as a chart (usage_view.js) and a table with totals, and exported as CSV (the
// same query with format=csv, fetched with the admin token and saved through a Blob URL on an <a download>). A
// manual page: it loads when opened and when a filter changes, not every two seconds.
"use strict";

import { api, apiRaw, el, showError, t, translate } from "./core.js";
import { periodStrings, rangeBounds, rangePicker, utcOffset } from "./period.js";
import { drawUsage, viewStrings } from "./usage_view.js";

const strings = {
  en: {
    usage: "Usage", us_key: "Key", us_all_keys: "all keys", us_model: "Model", us_all_models: "all models",
    us_group: "Group by", us_by_key: "key", us_by_model: "model", us_by_key_model: "key and model",
    us_per_day: "per day", us_metric: "Chart", us_m_requests: "requests", us_m_tokens: "tokens",
    us_show: "Refresh", us_export: "Export CSV", us_exported: "Saved {name} ({size} bytes).",
  },
  zh: {
    usage: "用量", us_key: "密钥", us_all_keys: "全部密钥", us_model: "模型", us_all_models: "全部模型",
    us_group: "分组", us_by_key: "按密钥", us_by_model: "按模型", us_by_key_model: "按密钥和模型",
    us_per_day: "按天", us_metric: "图表", us_m_requests: "请求数", us_m_tokens: "token 数",
    us_show: "刷新", us_export: "导出 CSV", us_exported: "已保存 {name}（{size} 字节）。",
  },
};

for (const lang of Object.keys(strings)) Object.assign(strings[lang], periodStrings[lang], viewStrings[lang]);

const view = { answer: null, keys: [], models: [], url: null, loading: 0 };
const byId = (id) => document.getElementById(id);

function build(section) {
  const form = el("form", { id: "usage-filters", class: "inline", onsubmit: (event) => { event.preventDefault(); refresh(); } },
    el("label", {}, el("span", { dataset: { i18n: "us_key" } }), el("select", { id: "usage-key", onchange: load })),
    el("label", {}, el("span", { dataset: { i18n: "us_model" } }),
      el("input", { id: "usage-model", list: "usage-models", autocomplete: "off", onchange: load,
        dataset: { i18nPlaceholder: "us_all_models" } })),
    el("datalist", { id: "usage-models" }),
    ...rangePicker("usage", { preset: "7d", onchange: load }),
    el("label", {}, el("span", { dataset: { i18n: "us_group" } }),
      el("select", { id: "usage-group", onchange: load }, ["key", "model", "key_model"].map((value) =>
        el("option", { value, dataset: { i18n: "us_by_" + value } })))),
    el("label", { class: "key-check" }, el("input", { id: "usage-per-day", type: "checkbox", checked: true, onchange: load }),
      el("span", { dataset: { i18n: "us_per_day" } })),
    el("label", {}, el("span", { dataset: { i18n: "us_metric" } }),
      el("select", { id: "usage-metric", onchange: draw }, ["requests", "tokens"].map((value) =>
        el("option", { value, dataset: { i18n: "us_m_" + value } })))),
    el("button", { type: "submit", id: "usage-show", dataset: { i18n: "us_show" } }),
    el("button", { type: "button", id: "usage-export", dataset: { i18n: "us_export" }, onclick: exportCsv }));
  section.append(el("h2", { dataset: { i18n: "usage" } }), form,
    el("p", { id: "usage-status", class: "status", role: "status" }),
    el("p", { id: "usage-error", class: "error", role: "alert" }),
    el("a", { id: "usage-csv-link", hidden: true, download: "usage.csv" }),
    el("div", { id: "usage-chart" }),
    el("table", { id: "usage-table" }, el("thead"), el("tbody"), el("tfoot")));
  form.querySelector("#usage-group").value = "key_model";
  document.addEventListener("console-logged-out", forgetExport);
  byId("logout").addEventListener("click", forgetExport);
}

// Logging out lets the last export's Blob go.
function forgetExport() {
  if (view.url) URL.revokeObjectURL(view.url);
  view.url = null;
  byId("usage-csv-link").removeAttribute("href");
  byId("usage-status").textContent = "";
}

// The filters as the usage API's query (without format): every filter the form sets, the local day's offset.
function query(bounds = rangeBounds("usage")) {
  const out = new URLSearchParams();
  const key = byId("usage-key").value;
  const model = byId("usage-model").value.trim();
  const { since, until } = bounds;
  if (key) out.set("key_id", key);
  if (model) out.set("model", model);
  if (since !== null) out.set("since", String(Math.floor(since)));
  if (until !== null) out.set("until", String(Math.floor(until)));
  out.set("group_by", byId("usage-group").value);
  if (byId("usage-per-day").checked) {
    out.set("per", "day");
    out.set("utc_offset", String(utcOffset()));
  }
  return out;
}

async function loadKeys() {
  const [keys, live] = await Promise.all([api("GET", "/admin/api/keys"), api("GET", "/admin/api/state").catch(() => ({}))]);
  view.keys = keys.data || [];
  view.models = live.models || [];
  const select = byId("usage-key");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", dataset: { i18n: "us_all_keys" } }),
    ...view.keys.map((key) => el("option", { value: "store:" + key.id }, key.name + " (" + key.prefix + ")")));
  translate(select);
  if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
  byId("usage-models").replaceChildren(...view.models.map((name) => el("option", { value: name })));
}

async function load() {
  const error = byId("usage-error");
  const ticket = ++view.loading; // only the newest query's answer is drawn
  try {
    const bounds = rangeBounds("usage");
    const params = query(bounds);
    const answer = await api("GET", "/admin/api/usage?" + params);
    if (ticket !== view.loading) return;
    view.answer = { ...answer, request: params.toString(), bounds };
    error.textContent = "";
    draw();
  } catch (failure) {
    if (ticket === view.loading) showError(error, failure);
  }
}

function draw() {
  if (!view.answer) return;
  const section = byId("usage");
  section.dataset.query = view.answer.request;
  drawUsage(view.answer, byId("usage-metric").value, view.answer.bounds);
}

async function exportCsv() {
  const error = byId("usage-error");
  const status = byId("usage-status");
  status.textContent = "";
  try {
    const params = query();
    params.set("format", "csv");
    const response = await apiRaw("GET", "/admin/api/usage?" + params);
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (/filename="?([^";]+)"?/.exec(disposition) || [])[1] || "usage.csv";
    if (view.url) URL.revokeObjectURL(view.url); // the previous export's, long downloaded
    view.url = URL.createObjectURL(blob);
    const link = byId("usage-csv-link");
    link.href = view.url;
    link.download = name;
    link.click();
    error.textContent = "";
    status.textContent = t("us_exported").replace("{name}", name).replace("{size}", String(blob.size));
  } catch (failure) {
    showError(error, failure);
  }
}

async function refresh() {
  try {
    await loadKeys();
  } catch (failure) {
    showError(byId("usage-error"), failure);
    return;
  }
  await load();
}

function language() {
  draw();
}

export default { id: "usage", strings, build, refresh, language, manual: true };
