// The Services page's edits, store mode only: add, edit and remove an instance, and edit a service's aliases, all
// through the admin API's config routes (admin/services.py, admin/config_routes.py). Each edit names the config
// version it was made from: the one shown when its form was opened. A change made meanwhile by someone else is
// refused with 409 version_conflict: the user is told, the page reloads and the form stays, to be saved again.
// The API's validation problems come back by path (error.problems); each is shown next to its field.
"use strict";

import { ApiError, api, el, showError, t } from "./core.js";
import { currentView, instanceNames, reload } from "./services.js";

export const editStrings = {
  en: {
    svc_new_instance: "New instance of {s}", svc_edit_instance: "Instance {i} of {s}", svc_f_name: "Model name",
    svc_f_id: "Public name (optional)", svc_f_base_url: "Base URL", svc_f_adapter: "Adapter", svc_f_weight: "Weight",
    svc_f_upstream_model: "Upstream model (optional)", svc_f_models: "Further model names (comma-separated)",
    svc_f_api_key: "API key (a ${ENV} reference, optional)",
    svc_alias_title: "Aliases of {s}", svc_alias: "Alias", svc_alias_target: "Model", svc_add_alias: "Add alias",
    svc_remove_alias: "Remove", svc_confirm_remove: "Remove the instance {i} of {s}?", svc_nothing_changed: "Nothing changed.",
  },
  zh: {
    svc_new_instance: "{s} 的新实例", svc_edit_instance: "{s} 的实例 {i}", svc_f_name: "模型名",
    svc_f_id: "公开名称（可选）", svc_f_base_url: "基础 URL", svc_f_adapter: "适配器", svc_f_weight: "权重",
    svc_f_upstream_model: "上游模型（可选）", svc_f_models: "其他模型名（逗号分隔）",
    svc_f_api_key: "API 密钥（${ENV} 环境变量引用，可选）",
    svc_alias_title: "{s} 的别名", svc_alias: "别名", svc_alias_target: "模型", svc_add_alias: "添加别名",
    svc_remove_alias: "删除", svc_confirm_remove: "删除 {s} 的实例 {i}？", svc_nothing_changed: "没有改动。",
  },
};

const ADAPTERS = ["openai", "ollama", "tei", "anthropic", "azure", "gemini"];
const FIELDS = ["name", "id", "base_url", "adapter", "api_key", "weight", "upstream_model", "models"];

function fill(text, values) {
  return text.replace(/\{(\w)\}/g, (_, key) => values[key] ?? "");
}

function editor() {
  return document.getElementById("svc-editor");
}

export function closeEditor() {
  editor().replaceChildren();
  editor().hidden = true;
}

function status(text) {
  document.getElementById("svc-status").textContent = text;
}

// What a failed edit tells the user. A version conflict reloads the page's config and moves the open form onto the
// new version (the user's input stays, to be checked and saved again); invalid_config problems go next to their
// fields, by path; anything else to the form's error line.
async function failed(failure, form, fieldOf) {
  const general = form.querySelector(".svc-form-error");
  for (const node of form.querySelectorAll("[data-error-for]")) node.textContent = "";
  general.textContent = "";
  if (!(failure instanceof ApiError)) {
    general.textContent = String(failure.message || failure);
    return;
  }
  if (failure.status === 409 && failure.error.code === "version_conflict") {
    const view = await reload();
    form.dataset.version = String(view.version);
    document.getElementById("svc-conflict").textContent = fill(t("svc_conflict"), { v: view.version });
    return;
  }
  const problems = failure.error.problems || [];
  for (const problem of problems) {
    const field = problem.param ? fieldOf(problem.param) : null;
    const slot = field !== null && form.querySelector('[data-error-for="' + CSS.escape(field) + '"]');
    if (slot) {
      slot.textContent = slot.textContent ? slot.textContent + "; " + problem.message : problem.message;
    } else {
      general.textContent += (general.textContent ? "; " : "") + (problem.param ? problem.param + ": " : "") + problem.message;
    }
  }
  if (!problems.length) showError(general, failure);
}

function saved(answer) {
  closeEditor();
  document.getElementById("svc-conflict").textContent = "";
  status(t("svc_saved") + answer.version);
  return reload();
}

function field(name, input) {
  input.dataset.field = name;
  input.id = "svc-f-" + name;
  return el("label", { class: "svc-field" }, el("span", {}, t("svc_f_" + name)), input,
    el("span", { class: "error svc-field-error", dataset: { errorFor: name } }));
}

function instancePath(service, index) {
  return "services." + service + ".instances[" + index + "]";
}

// The field a problem's path names, for the instance at `index` of `service` ("…instances[1].weight" -> weight).
function instanceField(service, index) {
  const prefix = instancePath(service, index);
  return (path) => {
    if (!path.startsWith(prefix)) return null;
    const rest = path.slice(prefix.length).replace(/^\./, "");
    const name = rest.split(/[.[]/, 1)[0];
    return FIELDS.includes(name) ? name : null;
  };
}

function formValues(form) {
  const value = (name) => form.querySelector('[data-field="' + name + '"]').value.trim();
  const out = { name: value("name"), base_url: value("base_url"), adapter: value("adapter") };
  const weight = value("weight");
  out.weight = weight === "" ? 1 : Number(weight);
  for (const name of ["id", "upstream_model", "api_key"]) out[name] = value(name) || null;
  out.models = value("models").split(",").map((m) => m.trim()).filter(Boolean);
  return out;
}

function same(a, b) {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

// The instance form: a new instance of `service` (index null), or the one at `index` to edit.
export function openInstanceForm(service, index) {
  const view = currentView();
  const instances = view.config.services[service].instances || [];
  const original = index === null ? null : instances[index];
  const title = original === null ? fill(t("svc_new_instance"), { s: service })
    : fill(t("svc_edit_instance"), { s: service, i: instanceNames(instances)[index] });
  const adapter = el("select", {}, ADAPTERS.map((name) => el("option", { value: name }, name)));
  adapter.value = (original && original.adapter) || "openai";
  const text = (value) => el("input", { value: value == null ? "" : String(value), autocomplete: "off" });
  // No `min` on the weight: the gateway validates it, and says why next to the field.
  const weight = el("input", { type: "number", step: "any", value: String(original ? original.weight ?? 1 : 1) });
  const form = el("form", { id: "svc-form", class: "svc-form", novalidate: true, dataset: { version: String(view.version) } },
    el("h3", {}, title),
    field("name", text(original && original.name)),
    field("id", text(original && original.id)),
    field("base_url", text(original && original.base_url)),
    field("adapter", adapter),
    // The store keeps no literal secret (the API says so at this field): the key comes from the gateway's environment.
    field("api_key", el("input", { value: (original && original.api_key) || "", autocomplete: "off",
      spellcheck: "false", placeholder: "${UPSTREAM_API_KEY}" })),
    field("weight", weight),
    field("upstream_model", text(original && original.upstream_model)),
    field("models", text(original ? (original.models || []).join(", ") : "")),
    el("p", { class: "error svc-form-error", role: "alert" }),
    el("p", {}, el("button", { type: "submit", id: "svc-save" }, t("save")), " ",
      el("button", { type: "button", id: "svc-cancel", onclick: closeEditor }, t("cancel"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    const version = Number(form.dataset.version);
    const now = currentView().config.services[service]?.instances || [];
    // Problems come back by position; find the instance again (the config may have been reloaded meanwhile).
    const at = original === null ? now.length
      : now.findIndex((inst) => inst.name === original.name && inst.base_url === original.base_url);
    try {
      let answer;
      if (original === null) {
        const instance = Object.fromEntries(Object.entries(values).filter(([k, v]) =>
          v !== null && !(k === "models" && !v.length) && !(k === "adapter" && v === "openai")));
        answer = await api("POST", "/admin/api/services/" + encodeURIComponent(service) + "/instances",
          { version, instance });
      } else {
        const before = { adapter: "openai", weight: 1, models: [], ...original };
        const changes = Object.fromEntries(Object.entries(values).filter(([k, v]) => !same(v, before[k])));
        if (!Object.keys(changes).length) {
          form.querySelector(".svc-form-error").textContent = t("svc_nothing_changed");
          return;
        }
        answer = await api("PATCH", "/admin/api/services/" + encodeURIComponent(service) + "/instances/" +
          encodeURIComponent(original.name) + "?base_url=" + encodeURIComponent(original.base_url),
          { version, changes });
      }
      await saved(answer);
    } catch (failure) {
      await failed(failure, form, instanceField(service, at < 0 ? index : at));
    }
  });
  show(form);
}

function show(form) {
  editor().replaceChildren(form);
  editor().hidden = false;
  document.getElementById("svc-conflict").textContent = "";
  status("");
  const first = form.querySelector("input, select, button"); // an alias form may have no rows yet
  if (first) first.focus();
}

export async function removeInstance(service, index) {
  const view = currentView();
  const instances = view.config.services[service].instances || [];
  const inst = instances[index];
  if (!window.confirm(fill(t("svc_confirm_remove"), { s: service, i: instanceNames(instances)[index] }))) return;
  const error = document.getElementById("svc-error");
  try {
    const answer = await api("DELETE", "/admin/api/services/" + encodeURIComponent(service) + "/instances/" +
      encodeURIComponent(inst.name) + "?base_url=" + encodeURIComponent(inst.base_url) + "&version=" + view.version);
    status(t("svc_saved") + answer.version);
    await reload();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 409 && failure.error.code === "version_conflict") {
      const now = await reload();
      document.getElementById("svc-conflict").textContent = fill(t("svc_conflict"), { v: now.version });
    } else {
      showError(error, failure);
    }
  }
}

function aliasRow(alias, target) {
  const row = el("div", { class: "svc-alias-row", dataset: { aliasRow: "" } },
    el("input", { class: "svc-alias-name", value: alias, "aria-label": t("svc_alias") }),
    " → ",
    el("input", { class: "svc-alias-target", value: target, "aria-label": t("svc_alias_target") }),
    el("button", { type: "button", onclick: () => row.remove() }, t("svc_remove_alias")),
    el("span", { class: "error svc-field-error", dataset: { errorFor: "alias:" + alias } }));
  // A row's error slot follows its alias as typed: problems name the alias (aliases.<name>).
  row.querySelector(".svc-alias-name").addEventListener("input", (event) => {
    row.querySelector(".svc-field-error").dataset.errorFor = "alias:" + event.target.value.trim();
  });
  return row;
}

// A service's aliases: those whose target is one of its models. Saved by replacing the config's `aliases`
// section with the other services' aliases unchanged and this form's rows.
export function openAliasForm(service) {
  const view = currentView();
  const instances = view.config.services[service].instances || [];
  const served = new Set(instances.flatMap((inst) => [inst.name, ...(inst.models || [])]));
  const mine = Object.entries(view.config.aliases || {}).filter(([, target]) => served.has(target));
  const rows = el("div", { class: "svc-alias-rows" }, mine.map(([alias, target]) => aliasRow(alias, target)));
  const form = el("form", { id: "svc-alias-form", class: "svc-form", novalidate: true, dataset: { version: String(view.version) } },
    el("h3", {}, fill(t("svc_alias_title"), { s: service })),
    rows,
    el("p", {}, el("button", { type: "button", id: "svc-add-alias", onclick: () => rows.append(aliasRow("", "")) },
      t("svc_add_alias"))),
    el("p", { class: "error svc-form-error", role: "alert" }),
    el("p", {}, el("button", { type: "submit", id: "svc-save" }, t("save")), " ",
      el("button", { type: "button", id: "svc-cancel", onclick: closeEditor }, t("cancel"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const now = currentView();
    const current = now.config.services[service]?.instances || [];
    const models = new Set(current.flatMap((inst) => [inst.name, ...(inst.models || [])]));
    const value = Object.fromEntries(Object.entries(now.config.aliases || {}).filter(([, target]) => !models.has(target)));
    for (const row of rows.querySelectorAll("[data-alias-row]")) {
      const alias = row.querySelector(".svc-alias-name").value.trim();
      const target = row.querySelector(".svc-alias-target").value.trim();
      if (alias || target) value[alias] = target;
    }
    try {
      await saved(await api("PUT", "/admin/api/config/sections/aliases", { version: Number(form.dataset.version), value }));
    } catch (failure) {
      await failed(failure, form, (path) => (path.startsWith("aliases.") ? "alias:" + path.slice(8) : null));
    }
  });
  show(form);
}
