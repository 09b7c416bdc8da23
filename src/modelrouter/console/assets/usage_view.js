// The Usage page's chart and table, drawn from one answer of GET /admin/api/usage. Per day: one line per group
// (key, model or key · model) over every local day of the range, days without a record at 0. Not per day: one bar
// per group. The table has a row per answer row (in the API's order: day, key, model) and the totals below.
"use strict";

import { barChart, lineChart } from "./chart.js";
import { cell, el, formatNumber, formatTime, t } from "./core.js";
import { dayLabel, daysBetween, dayStart, formatDay } from "./period.js";

export const viewStrings = {
  en: {
    uv_key: "Key", uv_model: "Model", uv_day: "Day", uv_requests: "Requests", uv_errors: "Errors",
    uv_prompt: "Prompt tokens", uv_completion: "Completion tokens", uv_total: "Total tokens", uv_bytes_in: "Bytes in",
    uv_bytes_out: "Bytes out", uv_last_used: "Last used", uv_totals: "Total", uv_anonymous: "(no key)",
    uv_empty: "No usage for these filters.", uv_chart_requests: "Requests", uv_chart_tokens: "Tokens",
    uv_per_day: " per day",
  },
  zh: {
    uv_key: "密钥", uv_model: "模型", uv_day: "日期", uv_requests: "请求数", uv_errors: "错误数",
    uv_prompt: "提示 token", uv_completion: "补全 token", uv_total: "总 token", uv_bytes_in: "入站字节",
    uv_bytes_out: "出站字节", uv_last_used: "最近使用", uv_totals: "合计", uv_anonymous: "（无密钥）",
    uv_empty: "这些条件下没有用量。", uv_chart_requests: "请求数", uv_chart_tokens: "token 数",
    uv_per_day: "（每天）",
  },
};

const NUMBERS = [["requests", "uv_requests"], ["errors", "uv_errors"], ["prompt_tokens", "uv_prompt"],
  ["completion_tokens", "uv_completion"], ["total_tokens", "uv_total"], ["bytes_in", "uv_bytes_in"],
  ["bytes_out", "uv_bytes_out"]];

function keyLabel(row) {
  if (row.key_id === null || row.key_id === undefined) return t("uv_anonymous");
  return row.key_name || row.key_id;
}

// What a row's group is called in the chart's legend.
function groupLabel(row, groupBy) {
  if (groupBy === "key") return keyLabel(row);
  if (groupBy === "model") return row.model ?? "—";
  if (groupBy === "none") return t("uv_totals");
  return keyLabel(row) + " · " + (row.model ?? "—");
}

function groupId(row) {
  return JSON.stringify([row.key_id ?? null, row.model ?? null]);
}

function chart(answer, metric, bounds) {
  const field = metric === "tokens" ? "total_tokens" : "requests";
  const title = t(metric === "tokens" ? "uv_chart_tokens" : "uv_chart_requests");
  const groups = new Map();
  for (const row of answer.data) {
    const id = groupId(row);
    if (!groups.has(id)) groups.set(id, { label: groupLabel(row, answer.group_by), rows: [] });
    groups.get(id).rows.push(row);
  }
  const container = document.getElementById("usage-chart");
  container.dataset.metric = field;
  if (answer.per === "day") {
    const seen = answer.data.map((row) => row.day).filter(Boolean).sort();
    const since = bounds.since ?? (seen.length ? dayStart(seen[0]).getTime() / 1000 : Date.now() / 1000);
    const days = daysBetween(since, bounds.until);
    const series = [...groups.values()].map((group) => {
      const perDay = new Map(group.rows.map((row) => [row.day, row[field]]));
      return { label: group.label, points: days.map((day, i) => [i, perDay.get(day) || 0]) };
    });
    // One day: bars (a line needs two points); more: a line per group. x is the day's index in the range (the
    // line chart's ticks may fall between two: those get no label).
    const draw = days.length > 1 ? lineChart : barChart;
    draw(container, series, { title: title + t("uv_per_day"), height: 220, empty: t("uv_empty"),
      xFormat: (i) => (Number.isInteger(i) && days[i] ? dayLabel(days[i]) : ""), xTicks: Math.min(days.length, 8) });
  } else {
    const labels = [...groups.values()].map((group) => group.label);
    barChart(container, [{ label: title, points: [...groups.values()].map((group, i) =>
      [i, group.rows.reduce((sum, row) => sum + (row[field] || 0), 0)]) }],
    { title, height: 220, legend: false, empty: t("uv_empty"), xFormat: (i) => labels[i] ?? "" });
  }
}

function table(answer) {
  const perDay = answer.per === "day";
  const byKey = answer.group_by === "key" || answer.group_by === "key_model";
  const byModel = answer.group_by === "model" || answer.group_by === "key_model";
  const head = [perDay && "uv_day", byKey && "uv_key", byModel && "uv_model"].filter(Boolean);
  const node = document.getElementById("usage-table");
  node.tHead.replaceChildren(el("tr", {}, [...head, ...NUMBERS.map(([, label]) => label), "uv_last_used"]
    .map((label) => el("th", {}, t(label)))));
  const body = node.tBodies[0];
  body.replaceChildren();
  const total = Object.fromEntries(NUMBERS.map(([name]) => [name, 0]));
  let last = null;
  for (const row of answer.data) {
    const line = el("tr", { dataset: { keyId: row.key_id ?? "", model: row.model ?? "", day: row.day ?? "" } });
    if (perDay) Object.assign(cell(line, formatDay(row.day)).dataset, { field: "day", value: row.day });
    if (byKey) cell(line, keyLabel(row)).dataset.field = "key";
    if (byModel) cell(line, row.model ?? "—").dataset.field = "model";
    numbers(line, row);
    body.append(line);
    for (const [name] of NUMBERS) total[name] += row[name] || 0;
    if (row.last_used) last = Math.max(last || 0, row.last_used);
  }
  if (!answer.data.length) {
    body.append(el("tr", {}, el("td", { colspan: String(head.length + NUMBERS.length + 1), class: "note" }, t("uv_empty"))));
  }
  const foot = el("tr", { class: "usage-total" }, el("th", { colspan: String(Math.max(1, head.length)) }, t("uv_totals")));
  numbers(foot, { ...total, last_used: last });
  if (!head.length) foot.firstChild.remove(); // group_by none: the numbers alone (the label is the header)
  node.tFoot.replaceChildren(foot);
}

function numbers(line, row) {
  for (const [name] of NUMBERS) {
    Object.assign(cell(line, formatNumber(row[name] || 0, 0), "num").dataset, { field: name, value: String(row[name] || 0) });
  }
  cell(line, formatTime(row.last_used)).dataset.field = "last_used";
}

export function drawUsage(answer, metric, bounds) {
  chart(answer, metric, bounds);
  table(answer);
}
