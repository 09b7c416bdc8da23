// The console's entry: plain JavaScript modules, no build step, nothing fetched from elsewhere. It uses only the
// admin API. Each page is a module exporting {id, strings, build(section), show(), refresh()}; this file logs in
// and out, builds the navigation from PAGES, switches pages and refreshes the one shown every two seconds.
"use strict";

import { addStrings, api, isEditor, session, state, t, translate } from "./core.js";
import audit from "./audit.js";
import dashboard from "./dashboard.js";
import keys from "./keys.js";
import playground from "./playground.js";
import services from "./services.js";
import usage from "./usage.js";
import versions from "./versions.js";

const PAGES = [dashboard, services, versions, keys, usage, audit, playground];
const REFRESH_MS = 2000;
let current = null;
let timer = null;

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").value = state.lang;
  translate(document);
  document.title = t("title");
}

function showLogin() {
  clearInterval(timer);
  timer = null;
  Object.assign(session, { token: null, role: null, username: null });
  document.getElementById("login-page").hidden = false;
  for (const page of PAGES) document.getElementById(page.id).hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
}

async function refresh() {
  if (current && current.refresh && session.token) await current.refresh();
}

function showPage(id) {
  current = PAGES.find((page) => page.id === id) || PAGES[0];
  for (const page of PAGES) document.getElementById(page.id).hidden = page !== current;
  for (const button of document.querySelectorAll("#nav button")) {
    if (button.dataset.page === current.id) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (current.show) current.show();
  refresh();
}

function loggedIn() {
  document.getElementById("login-page").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = session.username + " (" + session.role + ")";
  // A viewer gets no edit controls (the admin API would refuse the edits anyway).
  for (const node of document.querySelectorAll(".edit")) node.hidden = !isEditor();
  showPage("dashboard");
  timer = setInterval(() => { if (!current || !current.manual) refresh(); }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const nav = document.getElementById("nav");
  const pages = document.getElementById("pages");
  for (const page of PAGES) {
    addStrings(page.strings);
    const button = document.createElement("button");
    button.id = "nav-" + page.id;
    button.dataset.page = page.id;
    button.dataset.i18n = page.id;
    button.addEventListener("click", () => showPage(page.id));
    nav.appendChild(button);
    const section = document.createElement("section");
    section.id = page.id;
    section.hidden = true;
    pages.appendChild(section);
    page.build(section);
  }
  applyLanguage();
  document.getElementById("lang").addEventListener("change", (event) => {
    state.lang = event.target.value;
    applyLanguage();
    for (const page of PAGES) if (page.language) page.language();
    refresh();
  });
  document.addEventListener("console-logged-out", showLogin);
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("login-error");
    error.textContent = "";
    try {
      const username = document.getElementById("username").value;
      const answer = await api("POST", "/admin/api/login", { username, password: document.getElementById("password").value });
      Object.assign(session, { token: answer.token, role: answer.role, username: answer.username });
      document.getElementById("password").value = "";
      loggedIn();
    } catch (failure) {
      error.textContent = failure.status === 401 ? t("bad_login") : failure.message;
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api("POST", "/admin/api/logout");
    } catch (_) {
      // logged out either way: the token is forgotten below
    } finally {
      showLogin();
    }
  });
});
