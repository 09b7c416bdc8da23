// Client keys: the list (name, prefix, state, models, services, quotas, limits, expiry); an editor creates one (the
// secret shown once, with a copy button), edits one (keys_form.js: only the changed fields are sent), disables,
// enables, rotates (a new secret shown once), revokes and deletes (each of the last three after a confirmation).
// Clicking a key's name shows its usage of the last 30 days (keys_usage.js), for every role.
"use strict";

import { api, cell, el, formatNumber, formatTime, isEditor, showError, t } from "./core.js";
import { createForm, editForm, formStrings } from "./keys_form.js";
import { buildPanel, closeUsage, draw as drawUsage, keysChanged, openUsage, usageStrings } from "./keys_usage.js";

const strings = {
  en: {
    keys: "Keys", key_name: "Name", create: "Create", copy: "Copy",
    secret_once: "The key's secret, shown this once:", prefix: "Prefix", state: "State", quotas: "Quotas",
    key_models: "Models", actions: "Actions", active: "active", disabled: "disabled", revoked: "revoked",
    expired: "expired", disable: "Disable", enable: "Enable", revoke: "Revoke", confirm_revoke: "Revoke this key for good?",
    k_services_col: "Services", k_limits: "Limits", k_expires: "Expires", k_all: "all", k_none: "none",
    k_edit: "Edit", k_rotate: "Rotate", k_delete: "Delete", k_new_key: "New key",
    k_confirm_rotate: "Give the key “{name}” a new secret? The old one stops working at once.",
    k_confirm_delete: "Delete the key “{name}”? Its usage records stay.",
    k_rotated_once: "The new secret of “{name}”, shown this once:", k_created_once: "The secret of “{name}”, shown this once:",
    k_deleted: "Deleted the key “{name}”.", k_copied: "Copied.", k_no_keys: "No keys yet.",
  },
  zh: {
    keys: "密钥", key_name: "名称", create: "创建", copy: "复制",
    secret_once: "密钥的明文只显示这一次：", prefix: "前缀", state: "状态", quotas: "配额",
    key_models: "模型", actions: "操作", active: "可用", disabled: "已停用", revoked: "已吊销",
    expired: "已过期", disable: "停用", enable: "启用", revoke: "吊销", confirm_revoke: "永久吊销此密钥？",
    k_services_col: "服务", k_limits: "限流规则", k_expires: "过期时间", k_all: "全部", k_none: "无",
    k_edit: "编辑", k_rotate: "轮换", k_delete: "删除", k_new_key: "新建密钥",
    k_confirm_rotate: "为密钥“{name}”生成新的明文？旧明文立即失效。",
    k_confirm_delete: "删除密钥“{name}”？其用量记录会保留。",
    k_rotated_once: "“{name}”的新明文只显示这一次：", k_created_once: "“{name}”的明文只显示这一次：",
    k_deleted: "已删除密钥“{name}”。", k_copied: "已复制。", k_no_keys: "还没有密钥。",
  },
};

for (const lang of Object.keys(strings)) Object.assign(strings[lang], formStrings[lang], usageStrings[lang]);

const COLUMNS = ["key_name", "prefix", "state", "key_models", "k_services_col", "quotas", "k_limits", "k_expires"];
const view = { keys: [], signature: "", secretFor: null, secretKind: null, editing: null, opened: false };

function build(section) {
  const secret = el("div", { id: "new-secret-box", class: "secret", hidden: true },
    el("p", { id: "new-secret-label" }),
    el("code", { id: "new-secret" }), " ",
    el("button", { type: "button", id: "copy-secret", dataset: { i18n: "copy" }, onclick: copySecret }),
    el("span", { id: "copy-status", class: "status" }));
  const table = el("table", { id: "key-list" }, el("thead"), el("tbody"));
  section.append(el("h2", { dataset: { i18n: "keys" } }),
    el("details", { id: "new-key-box", class: "edit key-create" },
      el("summary", { dataset: { i18n: "k_new_key" } }), createForm(created)),
    secret,
    el("p", { id: "keys-status", class: "status", role: "status" }),
    el("p", { id: "keys-error", class: "error", role: "alert" }),
    el("div", { id: "key-editor" }),
    table, buildPanel());
  // Logging out forgets the secret shown and closes the panels.
  document.addEventListener("console-logged-out", forget);
  document.getElementById("logout").addEventListener("click", forget);
}

function keyState(key) {
  if (key.revoked_at) return "revoked";
  if (!key.enabled) return "disabled";
  return key.active ? "active" : "expired";
}

function fill(text, key) {
  return text.replace("{name}", key.name);
}

function quotaText(quotas) {
  const entries = Object.entries(quotas || {});
  if (!entries.length) return t("k_none");
  return entries.map(([name, value]) => t("k_q_" + name) + ": " + formatNumber(value)).join("; ");
}

function render() {
  const edit = isEditor();
  document.querySelector("#key-list thead").replaceChildren(el("tr", {},
    COLUMNS.map((name) => el("th", {}, t(name))), edit ? el("th", {}, t("actions")) : null));
  const body = document.querySelector("#key-list tbody");
  body.replaceChildren();
  if (!view.keys.length) body.append(el("tr", {}, el("td", { colspan: String(COLUMNS.length + 1), class: "note" }, t("k_no_keys"))));
  for (const key of view.keys) {
    const state = keyState(key);
    const row = el("tr", { dataset: { key: key.name, keyId: String(key.id) } },
      el("td", {}, el("a", { href: "#", class: "key-usage-link", title: t("ku_show"),
        onclick: (event) => { event.preventDefault(); openUsage(key); } }, key.name)));
    cell(row, key.prefix);
    cell(row, t(state), state === "active" ? "good" : "bad").dataset.state = state;
    cell(row, (key.models || []).length ? key.models.join(", ") : t("k_all")).dataset.field = "models";
    cell(row, (key.services || []).length ? key.services.join(", ") : t("k_all")).dataset.field = "services";
    cell(row, quotaText(key.quotas)).dataset.field = "quotas";
    cell(row, String((key.limits || []).length)).dataset.field = "limits";
    cell(row, key.expires_at == null ? t("k_never") : formatTime(key.expires_at)).dataset.field = "expires";
    if (edit) row.append(el("td", { class: "key-actions" }, actions(key, state)));
    body.append(row);
  }
}

function actions(key, state) {
  const button = (action, label, handler) =>
    el("button", { type: "button", dataset: { action }, onclick: () => handler(key) }, t(label));
  if (state === "revoked") return [button("delete", "k_delete", remove)];
  return [
    button("edit", "k_edit", openEdit),
    button(state === "disabled" ? "enable" : "disable", state === "disabled" ? "enable" : "disable",
      (k) => simple(k, state === "disabled" ? "enable" : "disable")),
    button("rotate", "k_rotate", rotate),
    button("revoke", "revoke", (k) => simple(k, "revoke")),
    button("delete", "k_delete", remove),
  ];
}

function messages(error, status) {
  document.getElementById("keys-error").textContent = error || "";
  document.getElementById("keys-status").textContent = status || "";
}

async function simple(key, action) {
  if (action === "revoke" && !window.confirm(t("confirm_revoke"))) return;
  try {
    await api("POST", "/admin/api/keys/" + key.id + "/" + action);
    messages("", "");
  } catch (failure) {
    showError(document.getElementById("keys-error"), failure);
  }
  await refresh();
}

async function rotate(key) {
  if (!window.confirm(fill(t("k_confirm_rotate"), key))) return;
  try {
    const rotated = await api("POST", "/admin/api/keys/" + key.id + "/rotate");
    showSecret(rotated, "k_rotated_once");
    messages("", "");
  } catch (failure) {
    showError(document.getElementById("keys-error"), failure);
  }
  await refresh();
}

async function remove(key) {
  if (!window.confirm(fill(t("k_confirm_delete"), key))) return;
  try {
    await api("DELETE", "/admin/api/keys/" + key.id);
    messages("", fill(t("k_deleted"), key));
    if (view.editing === key.id) closeEdit();
  } catch (failure) {
    showError(document.getElementById("keys-error"), failure);
  }
  await refresh();
}

function showSecret(key, kind) {
  Object.assign(view, { secretFor: key, secretKind: kind });
  document.getElementById("new-secret").textContent = key.secret;
  document.getElementById("new-secret-label").textContent = fill(t(kind), key);
  document.getElementById("copy-status").textContent = "";
  document.getElementById("new-secret-box").hidden = false;
}

async function created(key) {
  showSecret(key, "k_created_once");
  messages("", "");
  await refresh();
}

function openEdit(key) {
  view.editing = key.id;
  const box = document.getElementById("key-editor");
  box.replaceChildren(editForm(key, saved, closeEdit));
  document.getElementById("new-key-box").open = false; // one form at a time in view
  box.scrollIntoView({ block: "start" });
  box.querySelector("input").focus();
}

function closeEdit() {
  view.editing = null;
  document.getElementById("key-editor").replaceChildren();
}

async function saved(key) {
  closeEdit();
  messages("", fill(t("k_saved"), key));
  await refresh();
}

function copySecret() {
  const status = document.getElementById("copy-status");
  navigator.clipboard.writeText(document.getElementById("new-secret").textContent)
    .then(() => { status.textContent = t("k_copied"); })
    .catch(() => { status.textContent = ""; });
}

async function refresh() {
  try {
    const keys = (await api("GET", "/admin/api/keys")).data || [];
    // Redrawn only when something changed: a button under the pointer must not be replaced every two seconds.
    const signature = JSON.stringify(keys);
    if (signature !== view.signature) {
      view.signature = signature;
      view.keys = keys;
      // The create form starts open when there is no key yet, folded away when there are some to look at.
      if (!view.opened) document.getElementById("new-key-box").open = !keys.length;
      view.opened = true;
      render();
      keysChanged(keys);
    }
  } catch (failure) {
    showError(document.getElementById("keys-error"), failure);
  }
}

function show() {
  view.signature = ""; // redraw on opening (the role or the language may have changed)
  view.opened = false;
}

function language() {
  render();
  drawUsage();
  if (view.secretFor) document.getElementById("new-secret-label").textContent = fill(t(view.secretKind), view.secretFor);
  const title = document.querySelector("#edit-key .key-edit-title");
  if (title) title.textContent = t("k_edit_title").replace("{name}", title.dataset.name);
}

function forget() {
  Object.assign(view, { secretFor: null, secretKind: null, signature: "" });
  document.getElementById("new-secret-box").hidden = true;
  document.getElementById("new-secret").textContent = "";
  messages("", "");
  closeEdit();
  closeUsage();
}

export default { id: "keys", strings, build, show, refresh, language };
