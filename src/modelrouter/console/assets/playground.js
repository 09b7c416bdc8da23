// The playground: every endpoint the gateway serves, tried from the page with a client key — pasted, or created
// here by an editor (POST /admin/api/keys; its secret kept in this page's memory only, never in storage), or none
// when the gateway needs none (GET /admin/api/endpoints says, and which models each endpoint takes). Each request is
// shown as the curl command that sends it again; the gateway's errors in the API document's shape. It is a manual
// page: the console's 2-second refresh leaves it alone.
"use strict";

import { api, el, isEditor, showError, state, t, translate } from "./core.js";
import { curl, GatewayFailure, masked, modelNames, send } from "./playground_api.js";
import { TABS } from "./playground_forms.js";

const strings = {
  en: {
    playground: "Playground", pg_key: "Client key", pg_key_placeholder: "paste a client key", pg_use_key: "Use this key",
    pg_create_key: "Create a key for the playground", pg_forget_key: "Forget the key", pg_show_key: "Show the key in curl",
    pg_key_none_needed: "Client keys are off on this gateway: requests are sent without a key.",
    pg_key_needed: "This gateway needs a client key: paste one, or create one.",
    pg_key_pasted: "Using the pasted key {key} (kept in this page's memory only).",
    pg_key_created: "Using the key “{name}” ({key}), created for the playground; its secret is kept in this page's memory only.",
    pg_key_activating: "The new key takes effect within {seconds} s…",
    pg_models_found: "{count} models from /v1/models.", pg_loading: "Loading…",
    pg_tab_chat: "Chat", pg_tab_embeddings: "Embeddings", pg_tab_rerank: "Rerank", pg_tab_speech: "Text to speech",
    pg_tab_stt: "Speech to text", pg_tab_images: "Image generation", pg_tab_edit: "Image edit",
    pg_send: "Send", pg_stop: "Stop", pg_stopped: "Stopped.", pg_curl: "The request as curl", pg_model: "Model",
    pg_model_optional: "Model (optional)", pg_system: "System message", pg_user: "User message", pg_temperature: "Temperature",
    pg_max_tokens: "Max tokens", pg_stream: "Stream", pg_usage: "Usage: {prompt} prompt + {completion} completion = {total} tokens",
    pg_embed_input: "Input (one text per line)", pg_dimensions: "Dimensions (optional)", pg_index: "#", pg_dims: "Dimensions",
    pg_first_values: "First values", pg_query: "Query", pg_documents: "Documents (one per line)", pg_top_n: "Top N (optional)",
    pg_speech_input: "Text", pg_voice: "Voice", pg_format: "Format", pg_audio_size: "{size} bytes of {type}",
    pg_audio_file: "Audio file", pg_task: "Task", pg_transcribe: "Transcription", pg_translate: "Translation to English",
    pg_language: "Language (optional)", pg_prompt: "Prompt", pg_size: "Size", pg_n: "Images",
    pg_response_format: "Answer as", pg_image_file: "Image", pg_mask_file: "Mask (optional)",
    pg_no_models: "No model for this endpoint in /v1/models: type a name.",
  },
  zh: {
    playground: "试验场", pg_key: "客户端密钥", pg_key_placeholder: "粘贴客户端密钥", pg_use_key: "使用此密钥",
    pg_create_key: "为试验场创建密钥", pg_forget_key: "忘记密钥", pg_show_key: "在 curl 中显示密钥",
    pg_key_none_needed: "此网关未启用客户端密钥：请求不带密钥发送。",
    pg_key_needed: "此网关需要客户端密钥：请粘贴一个，或创建一个。",
    pg_key_pasted: "正在使用粘贴的密钥 {key}（只保存在本页内存中）。",
    pg_key_created: "正在使用为试验场创建的密钥“{name}”（{key}）；其明文只保存在本页内存中。",
    pg_key_activating: "新密钥将在 {seconds} 秒内生效…",
    pg_models_found: "从 /v1/models 得到 {count} 个模型。", pg_loading: "加载中…",
    pg_tab_chat: "对话", pg_tab_embeddings: "嵌入", pg_tab_rerank: "重排序", pg_tab_speech: "文本转语音",
    pg_tab_stt: "语音转文本", pg_tab_images: "图像生成", pg_tab_edit: "图像编辑",
    pg_send: "发送", pg_stop: "停止", pg_stopped: "已停止。", pg_curl: "此请求的 curl 命令", pg_model: "模型",
    pg_model_optional: "模型（可选）", pg_system: "系统消息", pg_user: "用户消息", pg_temperature: "温度",
    pg_max_tokens: "最大令牌数", pg_stream: "流式", pg_usage: "用量：提示 {prompt} + 补全 {completion} = {total} 令牌",
    pg_embed_input: "输入（每行一段文本）", pg_dimensions: "维度（可选）", pg_index: "#", pg_dims: "维度",
    pg_first_values: "前几个值", pg_query: "查询", pg_documents: "文档（每行一个）", pg_top_n: "返回前 N 个（可选）",
    pg_speech_input: "文本", pg_voice: "音色", pg_format: "格式", pg_audio_size: "{size} 字节，{type}",
    pg_audio_file: "音频文件", pg_task: "任务", pg_transcribe: "转写", pg_translate: "翻译为英文",
    pg_language: "语言（可选）", pg_prompt: "提示词", pg_size: "尺寸", pg_n: "图像数量",
    pg_response_format: "返回形式", pg_image_file: "图像", pg_mask_file: "遮罩（可选）",
    pg_no_models: "/v1/models 中没有此接口的模型：请输入名称。",
  },
};

// The client key, in this module only: never in localStorage, sessionStorage or a cookie.
const key = { secret: null, source: null, name: null, activating: null };
let catalog = null; // GET /admin/api/endpoints: {client_keys_required, key_refresh_s, data: [{service, models}]}
let visible = null; // the names /v1/models lists for the key, or null until known
const last = {}; // per tab: the request last sent, so the curl can be shown again (key shown or masked)
const running = {}; // per tab: the AbortController of the request under way

const byId = (id) => document.getElementById(id);

function build(section) {
  const keyForm = el("form", { id: "pg-key-form", class: "inline", onsubmit: useKey },
    el("label", {}, el("span", { dataset: { i18n: "pg_key" } }),
      el("input", { id: "pg-key", type: "password", autocomplete: "off", dataset: { i18nPlaceholder: "pg_key_placeholder" } })),
    el("button", { type: "submit", dataset: { i18n: "pg_use_key" } }),
    el("button", { type: "button", id: "pg-create-key", class: "edit", dataset: { i18n: "pg_create_key" }, onclick: createKey }),
    el("button", { type: "button", id: "pg-forget-key", dataset: { i18n: "pg_forget_key" }, onclick: forgetKey }),
    el("label", { class: "pg-check" }, el("input", { id: "pg-show-key", type: "checkbox", onchange: showCurls }),
      el("span", { dataset: { i18n: "pg_show_key" } })));
  const tabs = el("div", { id: "pg-tabs", class: "pg-tabs", role: "tablist" }, TABS.map((tab) =>
    el("button", { type: "button", id: `pg-tab-${tab.id}`, role: "tab", dataset: { tab: tab.id, i18n: `pg_tab_${tab.id}` },
      onclick: () => pick(tab.id) })));
  const panels = TABS.map((tab) => el("form", { id: `pg-${tab.id}`, class: "pg-panel", hidden: true, onsubmit: (event) => run(event, tab) },
    tab.build(),
    el("p", { id: `pg-${tab.id}-hint`, class: "pg-hint" }),
    el("div", { class: "pg-buttons" },
      el("button", { type: "submit", id: `pg-${tab.id}-send`, dataset: { i18n: "pg_send" } }),
      el("button", { type: "button", id: `pg-${tab.id}-stop`, hidden: true, dataset: { i18n: "pg_stop" }, onclick: () => stop(tab.id) })),
    el("div", { id: `pg-${tab.id}-error`, class: "pg-error", role: "alert" }),
    el("div", { id: `pg-${tab.id}-out`, class: "pg-out" }),
    el("details", { id: `pg-${tab.id}-curl-box`, class: "pg-curl", hidden: true, open: true },
      el("summary", { dataset: { i18n: "pg_curl" } }), el("pre", {}, el("code", { id: `pg-${tab.id}-curl` })))));
  section.append(el("h2", { dataset: { i18n: "playground" } }), keyForm,
    el("p", { id: "pg-key-status", class: "pg-status" }), el("p", { id: "pg-key-error", class: "error", role: "alert" }),
    tabs, ...panels);
  pick(TABS[0].id);
  // Logging out forgets the key with the admin token.
  document.addEventListener("console-logged-out", forgetKey);
  byId("logout").addEventListener("click", forgetKey);
}

function pick(id) {
  for (const tab of TABS) {
    byId(`pg-${tab.id}`).hidden = tab.id !== id;
    byId(`pg-tab-${tab.id}`).setAttribute("aria-selected", String(tab.id === id));
  }
}

function keyStatus() {
  if (!catalog) return t("pg_loading");
  if (key.activating) return t("pg_key_activating").replace("{seconds}", catalog.key_refresh_s);
  let text;
  if (key.source === "created") text = t("pg_key_created").replace("{name}", key.name).replace("{key}", masked(key.secret));
  else if (key.source === "pasted") text = t("pg_key_pasted").replace("{key}", masked(key.secret));
  else text = t(catalog.client_keys_required ? "pg_key_needed" : "pg_key_none_needed");
  if (visible) text += (state.lang === "zh" ? "" : " ") + t("pg_models_found").replace("{count}", visible.length);
  return text;
}

function render() {
  const status = byId("pg-key-status");
  status.textContent = keyStatus();
  status.dataset.key = key.source || (catalog && !catalog.client_keys_required ? "none-needed" : "missing");
  byId("pg-forget-key").hidden = !key.secret;
  byId("pg-create-key").hidden = !isEditor() || !catalog || !catalog.client_keys_required;
  for (const tab of TABS) {
    const names = modelsFor(tab.service);
    byId(`pg-${tab.id}-models`).replaceChildren(...names.map((name) => el("option", { value: name })));
    const field = byId(`pg-${tab.id}-model`);
    if (!field.value && names.length && field.required) field.value = names[0];
    byId(`pg-${tab.id}-hint`).textContent = visible && !names.length ? t("pg_no_models") : "";
  }
}

// The names /v1/models lists for the key, of those the endpoint's service takes (all of them if the admin API did
// not say which service takes which).
function modelsFor(service) {
  if (!visible) return [];
  const entry = catalog && catalog.data.find((item) => item.service === service);
  return entry ? visible.filter((name) => entry.models.includes(name)) : visible;
}

function canCall() {
  return catalog && !key.activating && (key.secret || !catalog.client_keys_required);
}

async function loadModels() {
  visible = null;
  if (canCall()) {
    try {
      visible = await modelNames(key.secret);
      byId("pg-key-error").textContent = "";
    } catch (failure) {
      byId("pg-key-error").textContent = describe(failure);
    }
  }
  render();
}

async function show() {
  try {
    catalog = await api("GET", "/admin/api/endpoints");
  } catch (failure) {
    showError(byId("pg-key-error"), failure);
  }
  await loadModels();
}

function useKey(event) {
  event.preventDefault();
  const pasted = byId("pg-key").value.trim();
  byId("pg-key").value = "";
  if (!pasted) return;
  Object.assign(key, { secret: pasted, source: "pasted", name: null, activating: null });
  showCurls();
  loadModels();
}

async function createKey() {
  const error = byId("pg-key-error");
  try {
    const stamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const created = await api("POST", "/admin/api/keys", { name: `playground ${stamp} ${Math.random().toString(36).slice(2, 6)}` });
    // The gateway honours a stored key within store.refresh_interval: wait that (three times, and a little: a busy
    // gateway polls late) before using it.
    const wait = new Promise((resolve) => setTimeout(resolve, 3000 * (catalog ? catalog.key_refresh_s : 1) + 500));
    Object.assign(key, { secret: created.secret, source: "created", name: created.name, activating: wait });
    error.textContent = "";
    render();
    await wait;
    if (key.activating === wait) key.activating = null;
    showCurls();
    await loadModels();
  } catch (failure) {
    showError(error, failure);
  }
}

function forgetKey() {
  Object.assign(key, { secret: null, source: null, name: null, activating: null });
  visible = null;
  for (const id of Object.keys(last)) delete last[id];
  for (const tab of TABS) {
    byId(`pg-${tab.id}-curl-box`).hidden = true;
    byId(`pg-${tab.id}-out`).replaceChildren();
    byId(`pg-${tab.id}-error`).replaceChildren();
  }
  if (catalog) loadModels();
}

function showCurls() {
  for (const tab of TABS) {
    const request = last[tab.id];
    byId(`pg-${tab.id}-curl-box`).hidden = !request;
    if (request) byId(`pg-${tab.id}-curl`).textContent = curl(request, key.secret, byId("pg-show-key").checked);
  }
}

// An error as the gateway gave it: type, code and message (the API document's error object).
function describe(failure) {
  if (failure instanceof GatewayFailure) return [failure.error.type, failure.error.code, failure.error.message].filter(Boolean).join(" · ");
  return failure.message || String(failure);
}

function showFailure(node, failure) {
  if (!(failure instanceof GatewayFailure)) {
    node.replaceChildren(el("span", { class: "pg-message" }, describe(failure)));
    return;
  }
  const error = failure.error;
  node.dataset.type = error.type || "";
  node.dataset.code = error.code || "";
  node.replaceChildren(el("strong", { class: "pg-type" }, error.type || ""), " ",
    error.code ? el("code", { class: "pg-code" }, error.code) : "", error.param ? el("code", { class: "pg-param" }, "param: " + error.param) : "",
    " ", el("span", { class: "pg-message" }, error.message || ""), el("span", { class: "pg-status-code" }, " (HTTP " + failure.status + ")"));
}

async function run(event, tab) {
  event.preventDefault();
  if (running[tab.id]) return;
  const out = byId(`pg-${tab.id}-out`);
  const error = byId(`pg-${tab.id}-error`);
  error.replaceChildren();
  delete error.dataset.type;
  delete error.dataset.code;
  out.replaceChildren();
  if (key.activating) await key.activating;
  const request = tab.request();
  last[tab.id] = request;
  showCurls();
  const controller = new AbortController();
  running[tab.id] = controller;
  byId(`pg-${tab.id}-send`).disabled = true;
  byId(`pg-${tab.id}-stop`).hidden = false;
  out.dataset.state = "running";
  try {
    const response = await send(request, key.secret, controller.signal);
    await tab.render(response, out, request);
    out.dataset.state = "done";
  } catch (failure) {
    if (controller.signal.aborted) {
      out.dataset.state = "stopped";
      out.append(el("p", { class: "pg-stopped" }, t("pg_stopped")));
    } else {
      out.dataset.state = "failed";
      showFailure(error, failure);
    }
  } finally {
    delete running[tab.id];
    byId(`pg-${tab.id}-send`).disabled = false;
    byId(`pg-${tab.id}-stop`).hidden = true;
  }
}

function stop(id) {
  if (running[id]) running[id].abort();
}

function language() {
  translate(byId("playground"));
  render();
}

export default { id: "playground", strings, build, show, language, manual: true };
