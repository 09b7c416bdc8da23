// A key's usage on the Keys page: its last 30 days (GET /admin/api/usage?key_id=store:<id>&group_by=model&per=day,
// counted in the browser's local days) as a small bar chart of requests per day and a table by model.
"use strict";

import { barChart } from "./chart.js";
import { api, cell, el, formatNumber, formatTime, showError, t } from "./core.js";
import { dayLabel, daysBetween, midnight, utcOffset } from "./period.js";

export const usageStrings = {
  en: {
    ku_title: "Usage of “{name}”: the last 30 days", ku_requests: "Requests per day", ku_model: "Model",
    ku_requests_col: "Requests", ku_errors: "Errors", ku_prompt: "Prompt tokens", ku_completion: "Completion tokens",
    ku_total: "Total tokens", ku_last_used: "Last used", ku_all: "Total", ku_none: "No requests in these 30 days.",
    ku_refresh: "Refresh", ku_close: "Close", ku_show: "Show this key's usage",
  },
  zh: {
    ku_title: "“{name}”的用量：最近 30 天", ku_requests: "每天请求数", ku_model: "模型",
    ku_requests_col: "请求数", ku_errors: "错误数", ku_prompt: "提示 token", ku_completion: "补全 token",
    ku_total: "总 token", ku_last_used: "最近使用", ku_all: "合计", ku_none: "这 30 天内没有请求。",
    ku_refresh: "刷新", ku_close: "关闭", ku_show: "查看此密钥的用量",
  },
};

const DAYS = 30;
const COLUMNS = ["ku_model", "ku_requests_col", "ku_errors", "ku_prompt", "ku_completion", "ku_total", "ku_last_used"];
const NUMBERS = ["requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"];
let shown = null; // {key, rows, days} of the panel open, or null

function panel() {
  return document.getElementById("key-usage");
}

export function buildPanel() {
  return el("div", { id: "key-usage", class: "editor", hidden: true },
    el("h3", { id: "key-usage-title" }),
    el("p", { class: "key-buttons" },
      el("button", { type: "button", id: "key-usage-refresh", dataset: { i18n: "ku_refresh" }, onclick: load }),
      el("button", { type: "button", id: "key-usage-close", dataset: { i18n: "ku_close" }, onclick: closeUsage })),
    el("p", { id: "key-usage-error", class: "error", role: "alert" }),
    el("figure", { class: "chart-figure" }, el("figcaption", { dataset: { i18n: "ku_requests" } }),
      el("div", { id: "key-usage-chart" })),
    el("table", { id: "key-usage-table" }, el("thead"), el("tbody"), el("tfoot")));
}

export function openUsage(key) {
  shown = { key, rows: [], days: [] };
  panel().hidden = false;
  draw();
  load();
  panel().scrollIntoView({ block: "nearest" });
}

export function closeUsage() {
  shown = null;
  panel().hidden = true;
}

// The key shown was renamed or removed: follow it.
export function keysChanged(keys) {
  if (!shown) return;
  const now = keys.find((key) => key.id === shown.key.id);
  if (!now) closeUsage();
  else if (now.name !== shown.key.name) {
    shown.key = now;
    draw();
  }
}

async function load() {
  if (!shown) return;
  const key = shown.key;
  const since = midnight(DAYS - 1);
  const query = new URLSearchParams({ key_id: "store:" + key.id, since: String(since), group_by: "model", per: "day",
    utc_offset: String(utcOffset()) });
  const error = document.getElementById("key-usage-error");
  try {
    const answer = await api("GET", "/admin/api/usage?" + query);
    if (!shown || shown.key.id !== key.id) return; // another key was opened meanwhile
    Object.assign(shown, { rows: answer.data || [], days: daysBetween(since) });
    error.textContent = "";
    panel().dataset.loaded = String(Date.now());
    draw();
  } catch (failure) {
    showError(error, failure);
  }
}

export function draw() {
  if (!shown) return;
  const { key, rows, days } = shown;
  panel().dataset.keyId = String(key.id);
  document.getElementById("key-usage-title").textContent = t("ku_title").replace("{name}", key.name);
  const perDay = new Map(days.map((day) => [day, 0]));
  for (const row of rows) if (perDay.has(row.day)) perDay.set(row.day, perDay.get(row.day) + row.requests);
  barChart(document.getElementById("key-usage-chart"),
    [{ label: t("ku_requests_col"), points: days.map((day, i) => [i, perDay.get(day)]) }],
    { xFormat: (i) => dayLabel(days[i] || ""), height: 160, legend: false, title: t("ku_requests"),
      yFormat: (y) => formatNumber(y, 1) });
  const table = document.getElementById("key-usage-table");
  table.tHead.replaceChildren(el("tr", {}, COLUMNS.map((name) => el("th", {}, t(name)))));
  const byModel = new Map();
  for (const row of rows) {
    const sum = byModel.get(row.model) || { model: row.model, requests: 0, errors: 0, prompt_tokens: 0,
      completion_tokens: 0, total_tokens: 0, last_used: null };
    for (const name of NUMBERS) sum[name] += row[name] || 0;
    sum.last_used = Math.max(sum.last_used || 0, row.last_used || 0) || null;
    byModel.set(row.model, sum);
  }
  const body = table.tBodies[0];
  body.replaceChildren();
  const total = { requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, last_used: null };
  for (const sum of [...byModel.values()].sort((a, b) => String(a.model).localeCompare(String(b.model)))) {
    body.append(line(sum.model, sum, { model: sum.model }));
    for (const name of NUMBERS) total[name] += sum[name];
    total.last_used = Math.max(total.last_used || 0, sum.last_used || 0) || null;
  }
  if (!byModel.size) body.append(el("tr", {}, el("td", { colspan: String(COLUMNS.length), class: "note" }, t("ku_none"))));
  table.tFoot.replaceChildren(line(t("ku_all"), total, { total: "" }));
}

function line(label, sum, dataset) {
  const row = el("tr", { dataset });
  cell(row, label);
  for (const name of NUMBERS) Object.assign(cell(row, formatNumber(sum[name], 0), "num").dataset, { field: name, value: String(sum[name]) });
  cell(row, formatTime(sum.last_used)).dataset.field = "last_used";
  return row;
}
