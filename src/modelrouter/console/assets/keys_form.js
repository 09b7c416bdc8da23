// The Keys page's forms: create a key (POST /admin/api/keys) and edit one (PATCH /admin/api/keys/{id}, only the
// fields changed). Both have the same fields: name, models (comma-separated; none = all), services (none = all),
// the expiry (never, or a local date and time), every quota and the key's own rate limits (keys_limits.js). The API's validation errors come back with a
// `param` ("quotas.daily_tokens") or, for several, as error.problems [{path, message}]; each is shown next to its
// field, anything else in the form's error line.
"use strict";

import { ApiError, api, el, showError, t, translate } from "./core.js";
import { limitsFieldset, limitsValues, sameLimits } from "./keys_limits.js";
import { fromLocalDateTime, localDateTime } from "./period.js";

export const formStrings = {
  en: {
    k_models_hint: "Models (comma-separated; empty: all)", k_services: "Services (none ticked: all)",
    k_expiry: "Expires", k_never: "never", k_quotas_title: "Quotas (empty: no limit)",
    k_q_requests_per_minute: "Requests per minute", k_q_tokens_per_minute: "Tokens per minute",
    k_q_max_concurrent: "Concurrent requests", k_q_daily_requests: "Requests per day", k_q_daily_tokens: "Tokens per day",
    k_q_monthly_requests: "Requests per month", k_q_monthly_tokens: "Tokens per month",
    k_edit_title: "Edit the key “{name}”", k_nothing_changed: "Nothing changed.", k_saved: "Saved the key “{name}”.",
    k_bad_expiry: "Give a date and time, or tick “never”.",
  },
  zh: {
    k_models_hint: "模型（逗号分隔；留空：全部）", k_services: "服务（不勾选：全部）",
    k_expiry: "过期时间", k_never: "永不过期", k_quotas_title: "配额（留空：不限）",
    k_q_requests_per_minute: "每分钟请求数", k_q_tokens_per_minute: "每分钟 token 数",
    k_q_max_concurrent: "并发请求数", k_q_daily_requests: "每天请求数", k_q_daily_tokens: "每天 token 数",
    k_q_monthly_requests: "每月请求数", k_q_monthly_tokens: "每月 token 数",
    k_edit_title: "编辑密钥“{name}”", k_nothing_changed: "没有改动。", k_saved: "已保存密钥“{name}”。",
    k_bad_expiry: "请填写日期和时间，或勾选“永不过期”。",
  },
};

// Every quota of the API's Key, and the short id its input has (new-key-rpm, edit-key-daily-tokens …).
export const QUOTAS = [
  ["requests_per_minute", "rpm"], ["tokens_per_minute", "tpm"], ["max_concurrent", "max-concurrent"],
  ["daily_requests", "daily-requests"], ["daily_tokens", "daily-tokens"], ["monthly_requests", "monthly-requests"],
  ["monthly_tokens", "monthly-tokens"],
];
export const SERVICES = ["chat", "embedding", "rerank", "tts", "stt", "image_generation", "image_edit"];

function errorSlot(field) {
  return el("span", { class: "error key-field-error", dataset: { errorFor: field } });
}

function labelled(textKey, input, field) {
  return el("label", { class: "key-field" }, el("span", { dataset: { i18n: textKey } }), input, errorSlot(field));
}

// The form's fields, ids starting with `prefix` ("new-key", "edit-key"), filled from `key` (or empty).
function fields(prefix, key) {
  const never = el("input", { id: prefix + "-never", type: "checkbox", checked: !key || key.expires_at == null });
  const expires = el("input", { id: prefix + "-expires", type: "datetime-local",
    value: key && key.expires_at != null ? localDateTime(key.expires_at) : "", disabled: never.checked });
  never.addEventListener("change", () => { expires.disabled = never.checked; });
  const quotas = key ? key.quotas || {} : {};
  return [
    el("div", { class: "key-row" },
      labelled("key_name", el("input", { id: prefix + "-name", required: true, autocomplete: "off", value: key ? key.name : "" }), "name"),
      labelled("k_models_hint", el("input", { id: prefix + "-models", autocomplete: "off",
        value: key ? (key.models || []).join(", ") : "" }), "models"),
      el("div", { class: "key-field" }, el("span", { dataset: { i18n: "k_expiry" } }),
        el("span", { class: "key-expiry" }, el("label", { class: "key-check" }, never, el("span", { dataset: { i18n: "k_never" } })),
          expires),
        errorSlot("expires_at"))),
    el("fieldset", { id: prefix + "-services", class: "key-services" }, el("legend", { dataset: { i18n: "k_services" } }),
      SERVICES.map((name) => el("label", { class: "key-check" },
        el("input", { type: "checkbox", value: name, dataset: { service: name },
          checked: Boolean(key && (key.services || []).includes(name)) }), el("span", {}, name))),
      errorSlot("services")),
    el("fieldset", { class: "key-quotas" }, el("legend", { dataset: { i18n: "k_quotas_title" } }),
      QUOTAS.map(([name, short]) => labelled("k_q_" + name, el("input", { id: prefix + "-" + short, type: "number",
        step: "any", dataset: { quota: name }, value: quotas[name] == null ? "" : String(quotas[name]) }), "quotas." + name)),
      errorSlot("quotas")),
    limitsFieldset(prefix, key ? key.limits : []),
  ];
}

// What the form says, in the API's shape: {name, models, services, expires_at, quotas} (expires_at undefined when
// "never" is not ticked and no time is given).
function values(form, prefix) {
  const byId = (suffix) => form.querySelector("#" + prefix + "-" + suffix);
  const quotas = {};
  for (const input of form.querySelectorAll("input[data-quota]")) {
    if (input.value.trim() !== "") quotas[input.dataset.quota] = Number(input.value);
  }
  const never = byId("never").checked;
  return {
    name: byId("name").value.trim(),
    models: byId("models").value.split(",").map((m) => m.trim()).filter(Boolean),
    services: [...form.querySelectorAll("input[data-service]")].filter((box) => box.checked).map((box) => box.value),
    expires_at: never ? null : byId("expires").value ? fromLocalDateTime(byId("expires").value) : undefined,
    expires_text: never ? "" : byId("expires").value,
    quotas,
    limits: limitsValues(form),
  };
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function sortedQuotas(quotas) {
  return Object.fromEntries(Object.entries(quotas || {}).sort(([a], [b]) => (a < b ? -1 : 1)));
}

// The API's errors by field: each problem (or the error's own param) to the slot of its field or the nearest one
// above it ("quotas.daily_tokens", else "quotas"); the rest to the form's error line. A 409 names no field: when the
// request set a name (`named`), it is that name being taken (a revoked key's 409 reads right there too).
export function showProblems(form, failure, named) {
  const general = form.querySelector(".key-form-error");
  clearProblems(form);
  if (!(failure instanceof ApiError)) {
    general.textContent = String(failure.message || failure);
    return;
  }
  const param = failure.error.param || (failure.status === 409 && named ? "name" : "");
  const problems = failure.error.problems && failure.error.problems.length ? failure.error.problems
    : [{ path: param, message: failure.error.message }];
  let placed = false;
  for (const problem of problems) {
    const path = problem.path || problem.param || "";
    let slot = null;
    for (let name = path; name && !slot; name = name.includes(".") ? name.slice(0, name.lastIndexOf(".")) : "") {
      slot = form.querySelector('[data-error-for="' + CSS.escape(name.replace(/\[\d+\]$/, "")) + '"]');
    }
    if (slot) {
      slot.textContent = slot.textContent ? slot.textContent + "; " + problem.message : problem.message;
      placed = true;
    } else if (problem.message) {
      general.textContent += (general.textContent ? "; " : "") + (path ? path + ": " : "") + problem.message;
      placed = true;
    }
  }
  if (!placed) showError(general, failure);
}

function clearProblems(form) {
  for (const node of form.querySelectorAll("[data-error-for], .key-form-error")) node.textContent = "";
}

function buttons(prefix, submitKey, onCancel) {
  return [
    el("p", { class: "error key-form-error", role: "alert" }),
    el("p", { class: "key-buttons" }, el("button", { type: "submit", id: prefix + "-save", dataset: { i18n: submitKey } }),
      onCancel ? el("button", { type: "button", id: prefix + "-cancel", onclick: onCancel, dataset: { i18n: "cancel" } }) : null),
  ];
}

// The create form (an editor's): `done(created)` gets the API's Key with its secret.
export function createForm(done) {
  const form = el("form", { id: "new-key", class: "edit key-form", novalidate: true });
  const fill = () => {
    form.replaceChildren(...fields("new-key", null), ...buttons("new-key", "create", null));
    translate(form);
  };
  fill();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = values(form, "new-key");
    if (v.expires_at === undefined) {
      clearProblems(form);
      form.querySelector('[data-error-for="expires_at"]').textContent = t("k_bad_expiry");
      return;
    }
    const body = { name: v.name };
    if (v.models.length) body.models = v.models;
    if (v.services.length) body.services = v.services;
    if (v.expires_at !== null) body.expires_at = v.expires_at;
    if (Object.keys(v.quotas).length) body.quotas = v.quotas;
    if (v.limits.length) body.limits = v.limits;
    try {
      const created = await api("POST", "/admin/api/keys", body);
      fill();
      done(created);
    } catch (failure) {
      showProblems(form, failure, true);
    }
  });
  return form;
}

// The edit form of `key`: only what changed is sent. `done(saved)` gets the API's Key; `cancel()` closes it.
export function editForm(key, done, cancel) {
  const form = el("form", { id: "edit-key", class: "key-form editor", novalidate: true, dataset: { keyId: String(key.id) } },
    el("h3", { class: "key-edit-title", dataset: { name: key.name } }, t("k_edit_title").replace("{name}", key.name)),
    ...fields("edit-key", key), ...buttons("edit-key", "save", cancel));
  translate(form);
  const before = values(form, "edit-key");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const now = values(form, "edit-key");
    clearProblems(form);
    if (now.expires_at === undefined) {
      form.querySelector('[data-error-for="expires_at"]').textContent = t("k_bad_expiry");
      return;
    }
    const changes = {};
    if (now.name !== before.name) changes.name = now.name;
    for (const name of ["models", "services"]) if (!same(now[name], before[name])) changes[name] = now[name];
    if (now.expires_text !== before.expires_text) changes.expires_at = now.expires_at;
    if (!same(sortedQuotas(now.quotas), sortedQuotas(key.quotas))) changes.quotas = now.quotas;
    if (!sameLimits(now.limits, key.limits)) changes.limits = now.limits;
    if (!Object.keys(changes).length) {
      form.querySelector(".key-form-error").textContent = t("k_nothing_changed");
      return;
    }
    try {
      done(await api("PATCH", "/admin/api/keys/" + key.id, changes));
    } catch (failure) {
      showProblems(form, failure, "name" in changes);
    }
  });
  return form;
}
