// The dashboard's traffic: the last hour of GET /admin/api/metrics/history as charts (per model or per
// instance) and the newest point as a table. Points are fetched incrementally (?since= the newest one held) and
// kept for an hour in page memory, so a refresh moves a few hundred bytes, not the hour.
"use strict";

import { lineChart } from "./chart.js";
import { api, cell, el, formatNumber, state, t } from "./core.js";

export const strings = {
  en: {
    tr_traffic: "Traffic (last hour)", tr_by: "Show", tr_by_model: "per model", tr_by_instance: "per instance",
    tr_rps: "Requests/s", tr_errors: "Error rate (5xx, %)", tr_p50: "Latency p50 (ms)", tr_p99: "Latency p99 (ms)",
    tr_ttft: "Time to first token p50 (ms)", tr_tokens: "Tokens/min", tr_no_history: "No traffic history: it needs "
      + "observability.metrics and a history_interval above 0.", tr_waiting: "Waiting for the first sample…",
    tr_now: "Now (the newest sample)", tr_model: "Model", tr_all: "all models", tr_client_errors: "4xx (%)",
  },
  zh: {
    tr_traffic: "流量（最近一小时）", tr_by: "显示", tr_by_model: "按模型", tr_by_instance: "按实例",
    tr_rps: "每秒请求数", tr_errors: "错误率（5xx，%）", tr_p50: "延迟 p50（毫秒）", tr_p99: "延迟 p99（毫秒）",
    tr_ttft: "首 token 时间 p50（毫秒）", tr_tokens: "每分钟 token 数", tr_no_history: "没有流量历史：需要开启 "
      + "observability.metrics，且 history_interval 大于 0。", tr_waiting: "等待第一次采样…",
    tr_now: "当前（最新一次采样）", tr_model: "模型", tr_all: "全部模型", tr_client_errors: "4xx（%）",
  },
};

const HOUR = 3600;
// What each chart shows: its title, where the value is (per model or per instance), and how it is scaled.
const CHARTS = [
  { id: "rps", title: "tr_rps", model: "rps", instance: "rps" },
  { id: "errors", title: "tr_errors", model: "error_rate", instance: "error_rate", scale: 100 },
  { id: "p50", title: "tr_p50", model: "p50_ms", instance: "p50_ms" },
  { id: "p99", title: "tr_p99", model: "p99_ms", instance: "p99_ms" },
  { id: "ttft", title: "tr_ttft", instance: "ttft_p50_ms" },
  { id: "tokens", title: "tr_tokens", model: "tokens_per_min" },
];
const held = { points: [], enabled: true, by: "model" };

export function build(section) {
  const by = el("select", { id: "traffic-by", onchange: (event) => { held.by = event.target.value; draw(); } },
    el("option", { value: "model", dataset: { i18n: "tr_by_model" } }),
    el("option", { value: "instance", dataset: { i18n: "tr_by_instance" } }));
  section.append(
    el("h3", { dataset: { i18n: "tr_traffic" } }),
    el("label", { class: "inline-label" }, el("span", { dataset: { i18n: "tr_by" } }), by),
    el("p", { id: "traffic-note", class: "note" }),
    el("div", { id: "traffic-charts", class: "charts" },
      CHARTS.map((chart) => el("figure", { id: "chart-" + chart.id, class: "chart-figure" },
        el("figcaption", { dataset: { i18n: chart.title } }), el("div", { class: "chart-body" })))),
    el("h3", { dataset: { i18n: "tr_now" } }),
    el("table", { id: "traffic-now" },
      el("thead", {}, el("tr", {}, ["tr_model", "tr_rps", "tr_errors", "tr_client_errors", "tr_p50", "tr_p99",
        "tr_tokens"].map((name) => el("th", { dataset: { i18n: name } })))),
      el("tbody")),
  );
}

export async function refresh() {
  const newest = held.points.length ? held.points[held.points.length - 1].t : undefined;
  const answer = await api("GET", "/admin/api/metrics/history" + (newest === undefined ? "" : "?since=" + newest));
  held.enabled = answer.enabled;
  held.points.push(...(answer.data || []));
  const cutoff = Date.now() / 1000 - HOUR;
  while (held.points.length && held.points[0].t < cutoff) held.points.shift();
  if (newest === undefined || (answer.data || []).length) draw();
  return held.points.length ? held.points[held.points.length - 1] : null;
}

function clock(x) {
  return new Date(x * 1000).toLocaleTimeString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit" });
}

function label(name) {
  return name === "*" ? t("tr_all") : name;
}

export function draw() {
  const note = document.getElementById("traffic-note");
  note.textContent = !held.enabled ? t("tr_no_history") : held.points.length ? "" : t("tr_waiting");
  for (const chart of CHARTS) {
    const field = chart[held.by];
    const figure = document.getElementById("chart-" + chart.id);
    figure.hidden = !field;
    if (!field) continue;
    const names = new Set();
    for (const point of held.points) for (const name of Object.keys(point[held.by + "s"])) names.add(name);
    const series = [...names].sort().map((name) => ({
      label: label(name),
      points: held.points.map((point) => {
        const value = (point[held.by + "s"][name] || {})[field];
        return [point.t, value === null || value === undefined ? 0 : value * (chart.scale || 1)];
      }),
    }));
    lineChart(figure.querySelector(".chart-body"), series, { xFormat: clock, title: t(chart.title), height: 200,
      empty: t("tr_waiting") });
  }
  drawNow();
}

function drawNow() {
  const body = document.querySelector("#traffic-now tbody");
  body.replaceChildren();
  const point = held.points[held.points.length - 1];
  if (!point) return;
  for (const [name, m] of Object.entries(point.models).sort()) {
    const row = el("tr", { dataset: { model: name } });
    cell(row, label(name));
    cell(row, formatNumber(m.rps, 2)).dataset.rps = String(m.rps);
    cell(row, formatNumber(100 * m.error_rate, 1), m.error_rate > 0 ? "bad" : "");
    cell(row, formatNumber(100 * m.client_error_rate, 1));
    cell(row, formatNumber(m.p50_ms, 1));
    cell(row, formatNumber(m.p99_ms, 1));
    cell(row, formatNumber(m.tokens_per_min, 0));
    body.appendChild(row);
  }
}
