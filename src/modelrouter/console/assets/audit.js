// The Audit page: GET /admin/api/audit, newest first, filtered by actor, action (a known prefix such as "key" —
// key.create, key.rotate … — or any action typed), target ("key:3") and time range; a table of time, actor,
// action, target and the detail as compact JSON; "Load more" asks for the entries before the oldest shown
// (before_id) while the API says there are more. A manual page: loaded when opened and when a filter changes.
"use strict";

import { api, cell, el, formatTime, showError, t } from "./core.js";
import { periodStrings, rangeBounds, rangePicker } from "./period.js";

const strings = {
  en: {
    audit: "Audit", au_actor: "Actor", au_action: "Action", au_any_action: "any action", au_other: "other (type it)…",
    au_action_text: "Action (exact, or a prefix)", au_target: "Target", au_time: "Time", au_detail: "Detail",
    au_show: "Refresh", au_more: "Load more", au_count: "{n} entries shown.", au_count_more: "{n} entries shown; there are more.",
    au_empty: "No audit entries for these filters.", au_any: "anyone", au_target_hint: "e.g. key:3",
    au_p_key: "key.* (client keys)", au_p_admin: "admin.* (admin users, logins)",
    au_p_config: "config.* (config changes, service edits, rollbacks)",
  },
  zh: {
    audit: "审计", au_actor: "操作者", au_action: "操作", au_any_action: "全部操作", au_other: "其他（手动输入）…",
    au_action_text: "操作（完整名称或前缀）", au_target: "对象", au_time: "时间", au_detail: "详情",
    au_show: "刷新", au_more: "加载更多", au_count: "已显示 {n} 条。", au_count_more: "已显示 {n} 条；还有更多。",
    au_empty: "这些条件下没有审计记录。", au_any: "任何人", au_target_hint: "例如 key:3",
    au_p_key: "key.*（客户端密钥）", au_p_admin: "admin.*（管理员与登录）",
    au_p_config: "config.*（配置修改、服务编辑、回滚）",
  },
};

for (const lang of Object.keys(strings)) Object.assign(strings[lang], periodStrings[lang]);

export const PAGE_SIZE = 50;
// The audit log's kinds of action (admin/*.py): service edits are config changes (config.change).
const PREFIXES = ["key", "admin", "config"];
const view = { entries: [], more: false, query: "", loading: 0 };
const byId = (id) => document.getElementById(id);

function build(section) {
  const kind = el("select", { id: "audit-action-kind", onchange: actionKind },
    el("option", { value: "", dataset: { i18n: "au_any_action" } }),
    PREFIXES.map((prefix) => el("option", { value: prefix, dataset: { i18n: "au_p_" + prefix } })),
    el("option", { value: "*", dataset: { i18n: "au_other" } }));
  const form = el("form", { id: "audit-filters", class: "inline", onsubmit: (event) => { event.preventDefault(); load(); } },
    el("label", {}, el("span", { dataset: { i18n: "au_actor" } }),
      el("input", { id: "audit-actor", list: "audit-actors", autocomplete: "off", onchange: load,
        dataset: { i18nPlaceholder: "au_any" } })),
    el("datalist", { id: "audit-actors" }),
    el("label", {}, el("span", { dataset: { i18n: "au_action" } }), kind),
    el("label", { id: "audit-action-box", hidden: true }, el("span", { dataset: { i18n: "au_action_text" } }),
      el("input", { id: "audit-action", autocomplete: "off", onchange: load })),
    el("label", {}, el("span", { dataset: { i18n: "au_target" } }),
      el("input", { id: "audit-target", autocomplete: "off", onchange: load, dataset: { i18nPlaceholder: "au_target_hint" } })),
    ...rangePicker("audit", { any: true, preset: "any", onchange: load }),
    el("button", { type: "submit", id: "audit-show", dataset: { i18n: "au_show" } }));
  section.append(el("h2", { dataset: { i18n: "audit" } }), form,
    el("p", { id: "audit-error", class: "error", role: "alert" }),
    el("table", { id: "audit-table" }, el("thead"), el("tbody")),
    el("p", { id: "audit-count", class: "note" }),
    el("button", { type: "button", id: "audit-more", hidden: true, dataset: { i18n: "au_more" }, onclick: more }));
}

function actionKind() {
  const other = byId("audit-action-kind").value === "*";
  byId("audit-action-box").hidden = !other;
  if (other) byId("audit-action").focus();
  else load();
}

function action() {
  const kind = byId("audit-action-kind").value;
  return kind === "*" ? byId("audit-action").value.trim() : kind;
}

function query() {
  const out = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const actor = byId("audit-actor").value.trim();
  const target = byId("audit-target").value.trim();
  const wanted = action();
  const { since, until } = rangeBounds("audit");
  if (actor) out.set("actor", actor);
  if (wanted) out.set("action", wanted);
  if (target) out.set("target", target);
  if (since !== null) out.set("since", String(Math.floor(since)));
  if (until !== null) out.set("until", String(Math.floor(until)));
  return out;
}

// The first page for the filters as they are now (what was shown is replaced).
async function load() {
  const params = query();
  await fetchPage(params, false);
}

// The next page of the same query: the entries before the oldest shown.
async function more() {
  const oldest = view.entries[view.entries.length - 1];
  if (!oldest) return;
  const params = new URLSearchParams(view.query);
  params.set("before_id", String(oldest.id));
  await fetchPage(params, true);
}

async function fetchPage(params, append) {
  const error = byId("audit-error");
  const ticket = ++view.loading;
  try {
    const answer = await api("GET", "/admin/api/audit?" + params);
    if (ticket !== view.loading) return; // a newer query was sent meanwhile
    if (!append) {
      params.delete("before_id");
      view.query = params.toString();
      view.entries = [];
    }
    view.entries.push(...(answer.data || []));
    view.more = Boolean(answer.has_more);
    error.textContent = "";
    render();
  } catch (failure) {
    if (ticket === view.loading) showError(error, failure);
  }
}

function render() {
  const table = byId("audit-table");
  table.tHead.replaceChildren(el("tr", {}, ["au_time", "au_actor", "au_action", "au_target", "au_detail"]
    .map((name) => el("th", {}, t(name)))));
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const entry of view.entries) {
    const row = el("tr", { dataset: { id: String(entry.id), action: entry.action, target: entry.target || "" } });
    cell(row, formatTime(entry.ts));
    cell(row, entry.actor);
    cell(row, entry.action);
    cell(row, entry.target);
    const detail = entry.detail && Object.keys(entry.detail).length ? JSON.stringify(entry.detail) : "";
    cell(row, detail, "audit-detail");
    body.append(row);
  }
  if (!view.entries.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "note" }, t("au_empty"))));
  byId("audit-more").hidden = !view.more;
  byId("audit-count").textContent = t(view.more ? "au_count_more" : "au_count").replace("{n}", String(view.entries.length));
  byId("audit").dataset.query = view.query;
}

async function loadActors() {
  try {
    const admins = await api("GET", "/admin/api/admins");
    byId("audit-actors").replaceChildren(...(admins.data || []).map((admin) => el("option", { value: admin.username })));
  } catch (_) {
    // only the suggestions are missing
  }
}

async function refresh() {
  await Promise.all([loadActors(), load()]);
}

function language() {
  render();
}

export default { id: "audit", strings, build, refresh, language, manual: true };
