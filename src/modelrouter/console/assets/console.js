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
    keys: "Keys", key_name: "Name", rpm: "Requests per minute (optional)", create: "Create", copy: "Copy",
    secret_once: "The key's secret, shown this once:", prefix: "Prefix", state: "State", quotas: "Quotas",
    actions: "Actions", active: "active", disabled: "disabled", revoked: "revoked", expired: "expired",
    disable: "Disable", enable: "Enable", revoke: "Revoke", confirm_revoke: "Revoke this key for good?",
  },
  zh: {
    title: "modelrouter 控制台", login: "登录", logout: "退出", username: "用户名", password: "密码",
    dashboard: "仪表盘", replica: "副本", config_version: "配置版本", recent_requests: "近期请求",
    models: "模型", instances: "实例", instance: "实例", service: "服务", healthy: "健康",
    breaker: "熔断器", in_flight: "进行中", latency: "EWMA 延迟（毫秒）", requests: "近期请求",
    error_rate: "错误率", cooldown: "冷却（秒）", yes: "是", no: "否", bad_login: "用户名或密码错误",
    refresh_failed: "刷新失败：", closed: "关闭", open: "打开", half_open: "半开",
    keys: "密钥", key_name: "名称", rpm: "每分钟请求数（可选）", create: "创建", copy: "复制",
    secret_once: "密钥的明文只显示这一次：", prefix: "前缀", state: "状态", quotas: "配额",
    actions: "操作", active: "可用", disabled: "已停用", revoked: "已吊销", expired: "已过期",
    disable: "停用", enable: "启用", revoke: "吊销", confirm_revoke: "永久吊销此密钥？",
  },
};

const session = { token: null, role: null, username: null, timer: null, page: "dashboard" };
const EDITORS = ["admin", "operator"]; // roles the admin API lets change keys (a viewer only looks)
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

function keyState(key) {
  if (key.revoked_at) return "revoked";
  if (!key.enabled) return "disabled";
  return key.active ? "active" : "expired";
}

function renderKeys(keys) {
  const body = document.querySelector("#key-list tbody");
  body.replaceChildren();
  const editor = EDITORS.includes(session.role);
  for (const key of keys) {
    const row = document.createElement("tr");
    row.dataset.key = key.name;
    const state = keyState(key);
    cell(row, key.name);
    cell(row, key.prefix);
    cell(row, t(state), state === "active" ? "good" : "bad");
    row.lastChild.dataset.state = state;
    cell(row, (key.models || []).join(", "));
    cell(row, Object.entries(key.quotas || {}).map(([k, v]) => k + "=" + v).join(", "));
    if (editor) {
      const actions = document.createElement("td");
      const buttons = state === "revoked" ? [] : [state === "disabled" ? "enable" : "disable", "revoke"];
      for (const action of buttons) {
        const button = document.createElement("button");
        button.textContent = t(action);
        button.dataset.action = action;
        button.addEventListener("click", () => keyAction(key.id, action));
        actions.appendChild(button);
      }
      row.appendChild(actions);
    }
    body.appendChild(row);
  }
}

async function keyAction(id, action) {
  if (action === "revoke" && !window.confirm(t("confirm_revoke"))) return;
  try {
    await api("POST", "/admin/api/keys/" + id + "/" + action);
    document.getElementById("keys-error").textContent = "";
  } catch (error) {
    document.getElementById("keys-error").textContent = error.message;
  }
  refresh();
}

async function refresh() {
  if (session.page === "keys") {
    try {
      renderKeys((await api("GET", "/admin/api/keys")).data || []);
    } catch (error) {
      if (error.status === 401) return showLogin();
      document.getElementById("keys-error").textContent = error.message;
    }
    return;
  }
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
  document.getElementById("keys").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
}

function showPage(page) {
  session.page = page;
  document.getElementById("dashboard").hidden = page !== "dashboard";
  document.getElementById("keys").hidden = page !== "keys";
  for (const button of document.querySelectorAll("nav button")) {
    if (button.dataset.page === page) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  refresh();
}

function showDashboard() {
  document.getElementById("login-page").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = session.username + " (" + session.role + ")";
  // A viewer gets no edit controls (the admin API would refuse the edits anyway).
  for (const node of document.querySelectorAll(".edit")) node.hidden = !EDITORS.includes(session.role);
  showPage("dashboard");
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
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => showPage(button.dataset.page));
  }
  document.getElementById("new-key").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: document.getElementById("new-key-name").value };
    const rpm = document.getElementById("new-key-rpm").value;
    if (rpm) body.quotas = { requests_per_minute: Number(rpm) };
    try {
      const created = await api("POST", "/admin/api/keys", body);
      document.getElementById("new-secret").textContent = created.secret;
      document.getElementById("new-secret-box").hidden = false;
      document.getElementById("keys-error").textContent = "";
      document.getElementById("new-key").reset();
    } catch (error) {
      document.getElementById("keys-error").textContent = error.message;
    }
    refresh();
  });
  document.getElementById("copy-secret").addEventListener("click", () => {
    navigator.clipboard.writeText(document.getElementById("new-secret").textContent).catch(() => {});
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("POST", "/admin/api/logout");
    } finally {
      showLogin();
    }
  });
});
