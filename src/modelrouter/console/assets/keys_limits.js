// A key's own rate limits in the Keys page's forms: one row per rule (algorithm, rate, unit, period, scope and the
// models it is for), added and removed in place; sent as the whole list (`limits` replaces the key's rules). The
// API shows a rule without its defaults ({scope, rate} when the rest is default), so rows are compared with the
// defaults filled in, and only what differs from them is sent.
"use strict";

import { addStrings, el, t, translate } from "./core.js";

addStrings({
  en: {
    k_limits_title: "Rate limits of this key (besides the quotas)", k_l_algorithm: "Algorithm", k_l_rate: "Rate",
    k_l_unit: "Unit", k_l_period: "Per seconds", k_l_scope: "Counted per", k_l_models: "Models (empty: all)",
    k_l_add: "Add a limit", k_l_remove: "Remove", k_l_requests: "requests", k_l_tokens: "tokens",
  },
  zh: {
    k_limits_title: "此密钥的限流规则（配额之外）", k_l_algorithm: "算法", k_l_rate: "速率",
    k_l_unit: "单位", k_l_period: "每（秒）", k_l_scope: "计数维度", k_l_models: "模型（留空：全部）",
    k_l_add: "添加限流", k_l_remove: "删除", k_l_requests: "请求", k_l_tokens: "token",
  },
});

const ALGORITHMS = ["token_bucket", "leaky_bucket", "sliding_window", "fixed_window", "warmup"];
const SCOPES = ["key", "model", "service", "ip", "user", "global"];
const DEFAULTS = { algorithm: "token_bucket", period: 60, unit: "requests" };

function select(field, options, value, labels) {
  const box = el("select", { dataset: { limit: field } },
    options.map((name) => el("option", { value: name }, labels ? t(labels + name) : name)));
  box.value = value;
  return box;
}

function row(rule) {
  const r = { ...DEFAULTS, scope: "key", ...rule };
  const number = (value, field) => el("input", { type: "number", step: "any", value: value == null ? "" : String(value),
    dataset: { limit: field } });
  const cells = [
    ["k_l_algorithm", select("algorithm", ALGORITHMS, r.algorithm)],
    ["k_l_rate", number(r.rate, "rate")],
    ["k_l_unit", select("unit", ["requests", "tokens"], r.unit, "k_l_")],
    ["k_l_period", number(r.period, "period")],
    ["k_l_scope", select("scope", SCOPES, r.scope)],
    ["k_l_models", el("input", { value: (r.models || []).join(", "), autocomplete: "off", dataset: { limit: "models" } })],
  ];
  const line = el("div", { class: "key-limit", dataset: { limitRow: "" } },
    cells.map(([label, input]) => el("label", { class: "key-field" }, el("span", { dataset: { i18n: label } }), input)));
  line.append(el("button", { type: "button", class: "key-limit-remove", dataset: { i18n: "k_l_remove" },
    onclick: () => line.remove() }));
  return line;
}

// The fieldset of a form whose ids start with `prefix`, filled with `limits` (the API's rules).
export function limitsFieldset(prefix, limits) {
  const rows = el("div", { id: prefix + "-limits" }, (limits || []).map(row));
  const add = el("button", { type: "button", id: prefix + "-add-limit", dataset: { i18n: "k_l_add" },
    onclick: () => { const line = row({}); rows.append(line); translate(line); line.querySelector("input").focus(); } });
  return el("fieldset", { class: "key-limits" }, el("legend", { dataset: { i18n: "k_limits_title" } }), rows, add,
    el("span", { class: "error key-field-error", dataset: { errorFor: "limits" } }));
}

// The rules the form says, as the API takes them: defaults left out, numbers as numbers (an empty rate is sent as
// null, for the API to name).
export function limitsValues(form) {
  return [...form.querySelectorAll("[data-limit-row]")].map((line) => {
    const field = (name) => line.querySelector('[data-limit="' + name + '"]').value.trim();
    const rule = { scope: field("scope"), rate: field("rate") === "" ? null : Number(field("rate")) };
    const period = field("period") === "" ? null : Number(field("period"));
    if (field("algorithm") !== DEFAULTS.algorithm) rule.algorithm = field("algorithm");
    if (period !== DEFAULTS.period) rule.period = period;
    if (field("unit") !== DEFAULTS.unit) rule.unit = field("unit");
    const models = field("models").split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) rule.models = models;
    return rule;
  });
}

// Whether two lists of rules say the same, defaults filled in.
export function sameLimits(a, b) {
  const full = (rules) => JSON.stringify((rules || []).map((rule) => {
    const r = { ...DEFAULTS, models: [], ...rule };
    return [r.scope, r.algorithm, Number(r.rate), Number(r.period), r.unit, r.models];
  }));
  return full(a) === full(b);
}
