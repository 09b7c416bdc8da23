// The playground's side of the public /v1 API: sending a request with the client key, reading a chat's SSE body
// as it arrives, the gateway's errors in the API document's shape, and the curl command that sends the same request.
// A request is {path, json} or {path, form: [[name, value or File], …]}, with stream: true for SSE and out: a
// file name for a binary answer (speech).
"use strict";

// A /v1 answer that is not 2xx: the API document's error object (type, code, message, param) and the HTTP status.
export class GatewayFailure extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.error = error;
  }
}

// What a failed answer says: {"error": {…}} as the gateway sends it; anything else (a proxy's page) as its text.
async function failure(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "object" && body.error) return new GatewayFailure(response.status, body.error);
  } catch (_) {
    // not JSON: told as text below
  }
  return new GatewayFailure(response.status, { type: "http_error", code: String(response.status), message: text || response.statusText });
}

function body(request) {
  if (request.json !== undefined) return JSON.stringify(request.json);
  const form = new FormData();
  for (const [name, value] of request.form) form.append(name, value);
  return form; // the browser writes the multipart boundary into Content-Type itself
}

// POST the request with the client key (none when the gateway needs none); the Response, or a GatewayFailure.
export async function send(request, key, signal) {
  const headers = {};
  if (key) headers.Authorization = "Bearer " + key;
  if (request.json !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(request.path, { method: "POST", headers, body: body(request), signal });
  if (!response.ok) throw await failure(response);
  return response;
}

// GET /v1/models with the key: the model names it may use.
export async function modelNames(key) {
  const response = await fetch("/v1/models", { headers: key ? { Authorization: "Bearer " + key } : {} });
  if (!response.ok) throw await failure(response);
  const listing = await response.json();
  return (listing.data || []).map((model) => model.id);
}

// Each `data:` event of an SSE body, parsed, as it arrives: onEvent(object). Ends at `data: [DONE]` or the body's
// end; an error event (the gateway's, after the stream began) becomes a GatewayFailure.
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    pending += decoder.decode(value || new Uint8Array(), { stream: !done });
    const blocks = pending.split(/\r?\n\r?\n/);
    pending = done ? "" : blocks.pop();
    for (const block of blocks) {
      const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new GatewayFailure(response.status, event.error);
      onEvent(event);
    }
    if (done) return;
  }
}

// A word for a shell: single-quoted, with each ' closed, escaped and reopened.
export function quote(text) {
  return "'" + String(text).replace(/'/g, "'\\''") + "'";
}

// What the page shows of a key unless asked: its first characters (as the keys page's prefix), never the rest.
export function masked(key) {
  return key.slice(0, Math.min(8, Math.floor(key.length / 3))) + "…";
}

// The curl command that sends `request` to this gateway: the page's own origin as the base URL, the key masked
// unless showKey, text fields with --form-string (so a value starting with @ or < is not read as a file) and files
// as -F name=@file (the file of that name in the shell's directory).
export function curl(request, key, showKey) {
  const parts = ["curl -sS" + (request.stream ? " -N" : "") + " " + quote(window.location.origin + request.path)];
  if (key) parts.push("-H " + quote("Authorization: Bearer " + (showKey ? key : masked(key))));
  if (request.json !== undefined) {
    parts.push("-H " + quote("Content-Type: application/json"));
    parts.push("-d " + quote(JSON.stringify(request.json)));
  }
  for (const [name, value] of request.form || []) {
    if (value instanceof File) parts.push("-F " + quote(name + "=@" + value.name));
    else parts.push("--form-string " + quote(name + "=" + value));
  }
  if (request.out) parts.push("-o " + quote(request.out));
  return parts.join(" \\\n  ");
}
