// Time ranges and local days, shared by the Keys page's usage panel, the Usage page and the Audit page: the range
// picker (last 24 hours, 7 or 30 days, a custom from–to), its bounds in unix seconds, the browser's local days, and
// the offset the usage API counts days in (minutes east of UTC, as the browser sees it).
"use strict";

import { el, state } from "./core.js";

export const periodStrings = {
  en: {
    pe_range: "Time", pe_any: "any time", pe_24h: "last 24 hours", pe_7d: "last 7 days", pe_30d: "last 30 days",
    pe_custom: "from – to", pe_from: "From", pe_to: "To (inclusive)",
  },
  zh: {
    pe_range: "时间", pe_any: "不限", pe_24h: "最近 24 小时", pe_7d: "最近 7 天", pe_30d: "最近 30 天",
    pe_custom: "自定义起止", pe_from: "从", pe_to: "到（含当天）",
  },
};

const DAY = 86400;

// Minutes east of UTC, as the usage API takes it (utc_offset).
export function utcOffset() {
  return -new Date().getTimezoneOffset();
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// The local day of a Date as "YYYY-MM-DD" (what the usage API's per=day names a day).
export function localDay(date) {
  return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
}

// A local "YYYY-MM-DD" at midnight as a Date.
export function dayStart(day) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d);
}

// The unix seconds of local midnight `back` days before today (0: today's).
export function midnight(back) {
  const now = new Date();
  return new Date(now.getFullYear(), now.getMonth(), now.getDate() - back).getTime() / 1000;
}

// Every local day from the one holding `since` to the one holding `until` (default now), oldest first.
export function daysBetween(since, until) {
  const end = localDay(new Date((until ?? Date.now() / 1000) * 1000 - (until ? 1 : 0)));
  const days = [];
  const cursor = new Date(since * 1000);
  cursor.setHours(0, 0, 0, 0);
  for (let guard = 0; guard < 3700; guard++) {
    const day = localDay(cursor);
    days.push(day);
    if (day >= end) break;
    cursor.setDate(cursor.getDate() + 1);
  }
  return days;
}

// A day's short label: "05-31" (the year only when it is not this year's).
export function dayLabel(day) {
  const thisYear = String(new Date().getFullYear());
  return day.startsWith(thisYear + "-") ? day.slice(5) : day;
}

// A local "YYYY-MM-DDTHH:MM" (a datetime-local input's value) of unix seconds, and back.
export function localDateTime(unix) {
  const d = new Date(unix * 1000);
  return localDay(d) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
}

export function fromLocalDateTime(text) {
  const time = new Date(text).getTime();
  return Number.isNaN(time) ? null : Math.floor(time / 1000);
}

// The range picker: a select (any time when `any`, 24 h, 7 d, 30 d, custom) and two date inputs shown for custom.
// ids: <prefix>-range, <prefix>-from, <prefix>-to.
export function rangePicker(prefix, { any = false, preset = "7d", onchange } = {}) {
  const choices = [...(any ? ["any"] : []), "24h", "7d", "30d", "custom"];
  const select = el("select", { id: prefix + "-range" },
    choices.map((value) => el("option", { value, dataset: { i18n: "pe_" + value } })));
  select.value = preset;
  const from = el("label", { class: "pe-date", hidden: true }, el("span", { dataset: { i18n: "pe_from" } }),
    el("input", { id: prefix + "-from", type: "date" }));
  const to = el("label", { class: "pe-date", hidden: true }, el("span", { dataset: { i18n: "pe_to" } }),
    el("input", { id: prefix + "-to", type: "date" }));
  select.addEventListener("change", () => {
    from.hidden = to.hidden = select.value !== "custom";
    if (select.value === "custom" && !from.querySelector("input").value) {
      from.querySelector("input").value = localDay(new Date(midnight(6) * 1000));
      to.querySelector("input").value = localDay(new Date());
    }
    if (onchange) onchange();
  });
  return [el("label", {}, el("span", { dataset: { i18n: "pe_range" } }), select), from, to];
}

// The picker's bounds in unix seconds: {since, until} (either may be null). "7d" and "30d" start at a local
// midnight so that they hold whole days (today and the 6 or 29 before it); custom runs from the start of its first
// day to the end of its last.
export function rangeBounds(prefix) {
  const range = document.getElementById(prefix + "-range").value;
  if (range === "any") return { since: null, until: null };
  if (range === "24h") return { since: Math.floor(Date.now() / 1000) - DAY, until: null };
  if (range === "7d") return { since: midnight(6), until: null };
  if (range === "30d") return { since: midnight(29), until: null };
  const from = document.getElementById(prefix + "-from").value;
  const to = document.getElementById(prefix + "-to").value;
  const until = to ? dayStart(to) : null;
  if (until) until.setDate(until.getDate() + 1);
  return { since: from ? dayStart(from).getTime() / 1000 : null, until: until ? until.getTime() / 1000 : null };
}

// "2024-05-31" as the page's language writes a date.
export function formatDay(day) {
  return dayStart(day).toLocaleDateString(state.lang === "zh" ? "zh-CN" : "en-GB");
}
