// modelrouter console: plain JavaScript, no build step, nothing fetched from elsewhere. It uses only the admin API
// (POST /admin/api/login, GET /admin/api/state, POST /admin/api/logout) with the admin token kept in memory:
// reloading the page logs out, and no cookie exists for another site to ride on.
"use strict";

const I18N = {
  en: {
    title: "modelrouter console", login: "Log in", logout: "Log out", username: "User name", password: "Password",
    dashboard: "Dashboard", replica: "Replica", config_version: "Config version", recent_requests: "Recent requests",
    models: "Models", instances: "Instances", instance: "Instance", service: "Service", healthy: "Healthy",
    breaker: "Breaker", in_flight: "In flight", latency: "EWMA latency (ms)", requests: "Recent requests",
    error_rate: "Error rate", cooldown: "Cool-down (s)", yes: "yes", no: "no", bad_login: "Incorrect user name or password",
    refresh_failed: "Could not refresh: ", closed: "closed", open: "open", half_open: "half open",
  },
  zh: {
    title: "modelrouter 控制台", login: "登录", logout: "退出", username: "用户名", password: "密码",
    dashboard: "仪表盘", replica: "副本", config_version: "配置版本", recent_requests: "近期请求",
    models: "模型", instances: "实例", instance: "实例", service: "服务", healthy: "健康",
    breaker: "熔断器", in_flight: "进行中", latency: "EWMA 延迟（毫秒）", requests: "近期请求",
    error_rate: "错误率", cooldown: "冷却（秒）", yes: "是", no: "否", bad_login: "用户名或密码错误",
    refresh_failed: "刷新失败：", closed: "关闭", open: "打开", half_open: "半开",
  },
};

const session = { token: null, role: null, username: null, timer: null };
let lang = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";

function t(key) {
  return (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
}

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").value = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
  document.title = t("title");
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = "Bearer " + session.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return data;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function render(state) {
  document.getElementById("replica").textContent = state.replica || "";
  document.getElementById("config-version").textContent = state.config_version == null ? "—" : String(state.config_version);
  document.getElementById("models").textContent = (state.models || []).join(", ");
  let total = 0;
  const body = document.querySelector("#instances tbody");
  body.replaceChildren();
  for (const inst of state.instances || []) {
    total += inst.recent_requests || 0;
    const row = document.createElement("tr");
    row.dataset.instance = inst.instance;
    cell(row, inst.instance);
    cell(row, inst.service);
    cell(row, inst.healthy ? t("yes") : t("no"), inst.healthy ? "good" : "bad");
    cell(row, t(inst.breaker) || inst.breaker, inst.breaker === "closed" ? "good" : "bad");
    row.lastChild.dataset.breaker = inst.breaker;
    cell(row, String(inst.in_flight));
    cell(row, String(inst.ewma_latency_ms));
    cell(row, String(inst.recent_requests));
    cell(row, (100 * inst.recent_error_rate).toFixed(1) + " %");
    cell(row, String(inst.cooldown_s));
    body.appendChild(row);
  }
  document.getElementById("recent-requests").textContent = String(total);
}

async function refresh() {
  try {
    render(await api("GET", "/admin/api/state"));
    document.getElementById("refresh-error").textContent = "";
  } catch (error) {
    if (error.status === 401) return showLogin();
    document.getElementById("refresh-error").textContent = t("refresh_failed") + error.message;
  }
}

function showLogin() {
  clearInterval(session.timer);
  Object.assign(session, { token: null, role: null, username: null, timer: null });
  document.getElementById("login-page").hidden = false;
  document.getElementById("dashboard").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
}

function showDashboard() {
  document.getElementById("login-page").hidden = true;
  document.getElementById("dashboard").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = session.username + " (" + session.role + ")";
  refresh();
  session.timer = setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  applyLanguage();
  document.getElementById("lang").addEventListener("change", (event) => {
    lang = event.target.value;
    applyLanguage();
    if (session.token) refresh();
  });
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("login-error");
    error.textContent = "";
    try {
      const username = document.getElementById("username").value;
      const answer = await api("POST", "/admin/api/login", { username, password: document.getElementById("password").value });
      Object.assign(session, { token: answer.token, role: answer.role, username: answer.username });
      document.getElementById("password").value = "";
      showDashboard();
    } catch (failure) {
      error.textContent = failure.status === 401 ? t("bad_login") : failure.message;
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("POST", "/admin/api/logout");
    } finally {
      showLogin();
    }
  });
});
