// Client keys: the list, create (the secret shown once, with a copy button), disable, enable, revoke.
"use strict";

import { api, cell, el, isEditor, showError, t } from "./core.js";

const strings = {
  en: {
    keys: "Keys", key_name: "Name", rpm: "Requests per minute (optional)", create: "Create", copy: "Copy",
    secret_once: "The key's secret, shown this once:", prefix: "Prefix", state: "State", quotas: "Quotas",
    key_models: "Models", actions: "Actions", active: "active", disabled: "disabled", revoked: "revoked",
    expired: "expired", disable: "Disable", enable: "Enable", revoke: "Revoke", confirm_revoke: "Revoke this key for good?",
  },
  zh: {
    keys: "密钥", key_name: "名称", rpm: "每分钟请求数（可选）", create: "创建", copy: "复制",
    secret_once: "密钥的明文只显示这一次：", prefix: "前缀", state: "状态", quotas: "配额",
    key_models: "模型", actions: "操作", active: "可用", disabled: "已停用", revoked: "已吊销",
    expired: "已过期", disable: "停用", enable: "启用", revoke: "吊销", confirm_revoke: "永久吊销此密钥？",
  },
};

function build(section) {
  const form = el("form", { id: "new-key", class: "edit inline", onsubmit: create },
    el("label", {}, el("span", { dataset: { i18n: "key_name" } }), el("input", { id: "new-key-name", required: true })),
    el("label", {}, el("span", { dataset: { i18n: "rpm" } }), el("input", { id: "new-key-rpm", type: "number", min: "1" })),
    el("button", { type: "submit", dataset: { i18n: "create" } }));
  const secret = el("div", { id: "new-secret-box", class: "secret", hidden: true },
    el("p", { dataset: { i18n: "secret_once" } }),
    el("code", { id: "new-secret" }), " ",
    el("button", { id: "copy-secret", dataset: { i18n: "copy" }, onclick: copySecret }));
  const columns = ["key_name", "prefix", "state", "key_models", "quotas"];
  const table = el("table", { id: "key-list" },
    el("thead", {}, el("tr", {}, columns.map((name) => el("th", { dataset: { i18n: name } })),
      el("th", { class: "edit", dataset: { i18n: "actions" } }))),
    el("tbody"));
  section.append(el("h2", { dataset: { i18n: "keys" } }), form, secret,
    el("p", { id: "keys-error", class: "error", role: "alert" }), table);
}

function keyState(key) {
  if (key.revoked_at) return "revoked";
  if (!key.enabled) return "disabled";
  return key.active ? "active" : "expired";
}

function render(keys) {
  const body = document.querySelector("#key-list tbody");
  body.replaceChildren();
  for (const key of keys) {
    const row = el("tr", { dataset: { key: key.name } });
    const state = keyState(key);
    cell(row, key.name);
    cell(row, key.prefix);
    cell(row, t(state), state === "active" ? "good" : "bad").dataset.state = state;
    cell(row, (key.models || []).join(", "));
    cell(row, Object.entries(key.quotas || {}).map(([k, v]) => k + "=" + v).join(", "));
    if (isEditor()) {
      const actions = state === "revoked" ? [] : [state === "disabled" ? "enable" : "disable", "revoke"];
      row.appendChild(el("td", {}, actions.map((action) =>
        el("button", { dataset: { action }, onclick: () => keyAction(key.id, action) }, t(action)))));
    }
    body.appendChild(row);
  }
}

async function keyAction(id, action) {
  if (action === "revoke" && !window.confirm(t("confirm_revoke"))) return;
  const error = document.getElementById("keys-error");
  try {
    await api("POST", "/admin/api/keys/" + id + "/" + action);
    error.textContent = "";
  } catch (failure) {
    showError(error, failure);
  }
  refresh();
}

async function create(event) {
  event.preventDefault();
  const body = { name: document.getElementById("new-key-name").value };
  const rpm = document.getElementById("new-key-rpm").value;
  if (rpm) body.quotas = { requests_per_minute: Number(rpm) };
  const error = document.getElementById("keys-error");
  try {
    const created = await api("POST", "/admin/api/keys", body);
    document.getElementById("new-secret").textContent = created.secret;
    document.getElementById("new-secret-box").hidden = false;
    error.textContent = "";
    event.target.reset();
  } catch (failure) {
    showError(error, failure);
  }
  refresh();
}

function copySecret() {
  navigator.clipboard.writeText(document.getElementById("new-secret").textContent).catch(() => {});
}

async function refresh() {
  try {
    render((await api("GET", "/admin/api/keys")).data || []);
  } catch (failure) {
    showError(document.getElementById("keys-error"), failure);
  }
}

export default { id: "keys", strings, build, refresh };
