// Config versions: the list (GET /admin/api/config/versions), a side-by-side diff of any two (the API's unified
// diff of their masked documents, GET /admin/api/config/diff, laid out in two columns with changed lines marked),
// and apply/rollback with a confirmation (POST /admin/api/config/versions/{n}/apply; store mode only: in file mode
// the file is the truth, and the page says so).
"use strict";

import { ApiError, api, el, formatTime, isEditor, showError, t } from "./core.js";

const strings = {
  en: {
    versions: "Versions", ver_version: "Version", ver_created: "Created", ver_author: "Author", ver_comment: "Comment",
    ver_current: "Serving", ver_actions: "Actions", ver_from: "From", ver_to: "To", ver_compare: "Compare",
    ver_apply: "Apply", ver_rollback: "Roll back to this", ver_no_diff: "The two versions are the same.",
    ver_confirm: "Make version {n} serve again? It is saved as a new version (from version {c}) and applied at once.",
    ver_applied: "Version {n} now serves (a copy of version {m}).",
    ver_file_mode: "File mode: the config file is the truth, so versions are only a record here; apply and rollback " +
      "need the gateway run with --config-source store.",
    ver_conflict: "Someone else changed the config meanwhile (it is now version {c}); the list was reloaded: try again.",
  },
  zh: {
    versions: "版本", ver_version: "版本", ver_created: "创建时间", ver_author: "作者", ver_comment: "备注",
    ver_current: "正在服务", ver_actions: "操作", ver_from: "从", ver_to: "到", ver_compare: "比较",
    ver_apply: "应用", ver_rollback: "回滚到此版本", ver_no_diff: "两个版本相同。",
    ver_confirm: "让版本 {n} 重新生效？它将保存为新版本（基于版本 {c}）并立即生效。",
    ver_applied: "版本 {n} 现已生效（版本 {m} 的副本）。",
    ver_file_mode: "文件模式：配置文件为准，这里的版本仅作记录；应用与回滚需要以 --config-source store 运行网关。",
    ver_conflict: "其他人同时修改了配置（现为版本 {c}）；列表已重新载入：请再试一次。",
  },
};

const view = { mode: null, current: null, versions: [], signature: "" };

function fill(text, values) {
  return text.replace(/\{(\w)\}/g, (_, key) => values[key] ?? "");
}

function build(section) {
  section.append(
    el("h2", { dataset: { i18n: "versions" } }),
    el("p", { id: "ver-mode", class: "notice", hidden: true }),
    el("p", { id: "ver-status", class: "status", role: "status" }),
    el("p", { id: "ver-error", class: "error", role: "alert" }),
    el("table", { id: "ver-list" }, el("thead"), el("tbody")),
    el("form", { id: "ver-compare", class: "inline", onsubmit: compare },
      el("label", {}, el("span", { dataset: { i18n: "ver_from" } }), el("select", { id: "ver-from" })),
      el("label", {}, el("span", { dataset: { i18n: "ver_to" } }), el("select", { id: "ver-to" })),
      el("button", { type: "submit", id: "ver-show-diff", dataset: { i18n: "ver_compare" } })),
    el("div", { id: "ver-diff" }),
  );
}

function editable() {
  return isEditor() && view.mode === "store";
}

function render() {
  const notice = document.getElementById("ver-mode");
  notice.hidden = view.mode !== "file";
  notice.textContent = t("ver_file_mode");
  const edit = editable();
  const columns = ["ver_version", "ver_created", "ver_author", "ver_comment", "ver_current"];
  document.querySelector("#ver-list thead").replaceChildren(el("tr", {}, columns.map((key) => el("th", {}, t(key))),
    edit ? el("th", {}, t("ver_actions")) : null));
  const body = document.querySelector("#ver-list tbody");
  body.replaceChildren();
  for (const version of view.versions) {
    const serving = version.version === view.current;
    const row = el("tr", { dataset: { version: String(version.version) }, class: serving ? "ver-serving" : null },
      el("td", {}, String(version.version)),
      el("td", {}, formatTime(version.created_at)),
      el("td", {}, version.author || ""),
      el("td", {}, version.comment || ""),
      el("td", { class: serving ? "good" : null }, serving ? "✓" : ""));
    if (edit) {
      const label = version.version < view.current ? "ver_rollback" : "ver_apply";
      row.append(el("td", {}, serving ? null
        : el("button", { dataset: { action: "apply" }, onclick: () => apply(version.version) }, t(label))));
    }
    body.append(row);
  }
  for (const [id, fallback] of [["ver-from", 1], ["ver-to", 0]]) {
    const select = document.getElementById(id);
    const chosen = select.value;
    select.replaceChildren(...view.versions.map((v) => el("option", { value: String(v.version) }, String(v.version))));
    // Keep the user's choice; else compare the one before the newest with the newest.
    const keep = view.versions.some((v) => String(v.version) === chosen);
    const preset = view.versions[Math.min(fallback, view.versions.length - 1)];
    if (keep) select.value = chosen;
    else if (preset) select.value = String(preset.version);
  }
}

async function load() {
  if (view.mode === null) view.mode = (await api("GET", "/admin/api/config")).mode;
  const answer = await api("GET", "/admin/api/config/versions");
  view.current = answer.current;
  view.versions = answer.data || [];
  // Redrawn only when something changed: a button under the pointer must not be replaced every two seconds.
  const signature = JSON.stringify([view.current, view.versions.map((v) => v.version)]);
  if (signature !== view.signature) {
    view.signature = signature;
    render();
  }
}

async function refresh() {
  const error = document.getElementById("ver-error");
  try {
    await load();
    error.textContent = "";
  } catch (failure) {
    showError(error, failure);
  }
}

async function apply(number) {
  const based = view.current;
  if (!window.confirm(fill(t("ver_confirm"), { n: number, c: based }))) return;
  const error = document.getElementById("ver-error");
  const status = document.getElementById("ver-status");
  status.textContent = "";
  try {
    const saved = await api("POST", "/admin/api/config/versions/" + number + "/apply", { version: based });
    status.textContent = fill(t("ver_applied"), { n: saved.version, m: number });
    error.textContent = "";
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 409 && failure.error.code === "version_conflict") {
      await load();
      error.textContent = fill(t("ver_conflict"), { c: view.current });
      return;
    }
    showError(error, failure);
    return;
  }
  await load();
}

// A unified diff as rows of (old line, new line): context on both sides, a run of removals paired with the run
// of additions that follows it, hunks separated by their "@@" line.
export function sideBySide(diff) {
  const rows = [];
  let left = 0;
  let right = 0;
  let removed = [];
  let added = [];
  const flush = () => {
    for (let i = 0; i < Math.max(removed.length, added.length); i++) {
      rows.push({ kind: "change", old: removed[i], new: added[i] });
    }
    removed = [];
    added = [];
  };
  for (const line of diff.split("\n")) {
    if (line.startsWith("--- ") || line.startsWith("+++ ") || line.startsWith("\\") || line === "") continue;
    const hunk = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(line);
    if (hunk) {
      flush();
      left = Number(hunk[1]);
      right = Number(hunk[2]);
      rows.push({ kind: "hunk", text: line });
    } else if (line[0] === "-") {
      removed.push({ n: left++, text: line.slice(1) });
    } else if (line[0] === "+") {
      added.push({ n: right++, text: line.slice(1) });
    } else {
      flush();
      rows.push({ kind: "same", old: { n: left++, text: line.slice(1) }, new: { n: right++, text: line.slice(1) } });
    }
  }
  flush();
  return rows;
}

function side(line, changed) {
  if (!line) return [el("td", { class: "ver-ln" }), el("td", { class: "ver-text ver-empty" })];
  return [el("td", { class: "ver-ln" }, String(line.n)), el("td", { class: "ver-text" + (changed ? " " + changed : "") }, line.text)];
}

async function compare(event) {
  event.preventDefault();
  const from = document.getElementById("ver-from").value;
  const to = document.getElementById("ver-to").value;
  const out = document.getElementById("ver-diff");
  const error = document.getElementById("ver-error");
  try {
    const answer = await api("GET", "/admin/api/config/diff?from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to));
    error.textContent = "";
    if (!answer.changed) {
      out.replaceChildren(el("p", { id: "ver-same" }, t("ver_no_diff")));
      return;
    }
    const table = el("table", { id: "ver-diff-table", class: "ver-diff", dataset: { from: String(answer.from), to: String(answer.to) } },
      // Fixed layout takes the widths from here: narrow line numbers, two equal halves of text.
      el("colgroup", {}, ["ver-ln-col", "", "ver-ln-col", ""].map((cls) => el("col", { class: cls || null }))),
      el("thead", {}, el("tr", {}, el("th", { colspan: "2" }, t("ver_version") + " " + answer.from),
        el("th", { colspan: "2" }, t("ver_version") + " " + answer.to))),
      el("tbody", {}, sideBySide(answer.diff).map((row) => row.kind === "hunk"
        ? el("tr", { class: "ver-hunk" }, el("td", { colspan: "4" }, row.text))
        : el("tr", {}, side(row.old, row.kind === "change" && "ver-del"), side(row.new, row.kind === "change" && "ver-add")))));
    out.replaceChildren(table);
  } catch (failure) {
    showError(error, failure);
  }
}

function show() {
  view.signature = ""; // redraw on opening (the role or the language may have changed)
}

function language() {
  render();
}

export default { id: "versions", strings, build, show, refresh, language };
