// What every console page shares: the session (the admin token, kept in memory only: reloading the page logs
// out, and no cookie exists for another site to ride on), calls to the admin API, the two languages, and small
// DOM helpers. Pages are ES modules (see console.js) that add their own strings with addStrings().
"use strict";

const STRINGS = {
  en: {
    title: "modelrouter console", login: "Log in", logout: "Log out", username: "User name", password: "Password",
    bad_login: "Incorrect user name or password", yes: "yes", no: "no", cancel: "Cancel", save: "Save",
    refresh_failed: "Could not refresh: ",
  },
  zh: {
    title: "modelrouter 控制台", login: "登录", logout: "退出", username: "用户名", password: "密码",
    bad_login: "用户名或密码错误", yes: "是", no: "否", cancel: "取消", save: "保存",
    refresh_failed: "刷新失败：",
  },
};

export const session = { token: null, role: null, username: null };
export const state = { lang: (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en" };

// Roles the admin API lets change config and keys; a viewer only looks (and the server refuses it anyway).
export function isEditor() {
  return session.role === "admin" || session.role === "operator";
}

// Every string in every language: one missing is logged as an error, which fails the browser tests.
export function addStrings(strings) {
  const langs = Object.keys(STRINGS);
  for (const lang of langs) {
    const mine = strings[lang] || {};
    for (const key of Object.keys(mine)) {
      if (key in STRINGS[lang] && STRINGS[lang][key] !== mine[key]) console.warn("string defined twice: " + key);
      STRINGS[lang][key] = mine[key];
      for (const other of langs) {
        if (!(key in (strings[other] || {}))) console.error("string " + key + " has no " + other + " text");
      }
    }
  }
}

export function t(key) {
  const text = STRINGS[state.lang][key];
  if (text === undefined) console.error("no string " + key + " in " + state.lang);
  return text || STRINGS.en[key] || key;
}

// Every [data-i18n] node under root gets its text in the current language; [data-i18n-placeholder] its placeholder.
export function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
}

export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || String(status));
    this.status = status;
    this.error = error || {};
  }
}

function headers(json) {
  const out = { Accept: "application/json" };
  if (session.token) out.Authorization = "Bearer " + session.token;
  if (json) out["Content-Type"] = "application/json";
  return out;
}

// An admin API call: the parsed JSON answer, or an ApiError with the API's error object (message, type, code, param).
export async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error);
  return data;
}

// A raw admin API call for what is not JSON (CSV exports): the Response itself, or an ApiError.
export async function apiRaw(method, path) {
  const response = await fetch(path, { method, headers: headers(false) });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new ApiError(response.status, data.error);
  }
  return response;
}

// el("td", {class: "good", dataset: {state: "on"}}, "text", child…): an element; strings become text nodes.
export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

export function cell(row, text, cls) {
  const td = el("td", { class: cls }, text === undefined || text === null ? "" : String(text));
  row.appendChild(td);
  return td;
}

// Show an error from the admin API in the page's error line; a 401 (the token expired) returns to the login form.
export function showError(node, error) {
  if (error instanceof ApiError && error.status === 401 && session.token) {
    document.dispatchEvent(new CustomEvent("console-logged-out"));
    return;
  }
  node.textContent = error.message || String(error);
}

export function formatTime(unix) {
  if (unix === null || unix === undefined) return "—";
  return new Date(unix * 1000).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB");
}

export function formatNumber(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-US", { maximumFractionDigits: digits ?? 2 });
}
