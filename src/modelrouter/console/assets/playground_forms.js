// The playground's forms, one per endpoint: the controls (build), the request they make (request) and how the
// answer is shown (render). playground.js runs them: it shows the curl, sends, handles stop and errors.
// Every id is "pg-<tab>-<what>"; the model field of a tab is "pg-<tab>-model", offered the names of its service.
"use strict";

import { el, t } from "./core.js";
import { readEvents } from "./playground_api.js";

function label(key, control, cls) {
  return el("label", { class: cls }, el("span", { dataset: { i18n: key } }), control);
}

function modelField(tab, optional) {
  return label(optional ? "pg_model_optional" : "pg_model",
    el("span", {}, el("input", { id: `pg-${tab}-model`, list: `pg-${tab}-models`, autocomplete: "off", required: !optional }),
      el("datalist", { id: `pg-${tab}-models` })));
}

function select(id, options, chosen) {
  return el("select", { id }, options.map((value) => el("option", { value, selected: value === chosen }, value)));
}

function value(id) {
  return document.getElementById(id).value.trim();
}

function number(id) {
  const text = value(id);
  return text === "" ? undefined : Number(text);
}

function file(id) {
  const files = document.getElementById(id).files;
  return files && files.length ? files[0] : null;
}

function lines(id) {
  return document.getElementById(id).value.split("\n").map((line) => line.trim()).filter(Boolean);
}

// Optional fields only when given: the request shows what the operator chose, nothing more.
function withOptional(object, optional) {
  for (const [name, given] of Object.entries(optional)) if (given !== undefined && given !== "") object[name] = given;
  return object;
}

function usageLine(id, usage) {
  if (!usage) return el("p", { id });
  const text = t("pg_usage").replace("{prompt}", usage.prompt_tokens ?? "—")
    .replace("{completion}", usage.completion_tokens ?? "—").replace("{total}", usage.total_tokens ?? "—");
  return el("p", { id, class: "pg-usage", dataset: { total: usage.total_tokens ?? "" } }, text);
}

const chat = {
  id: "chat", service: "chat",
  build: () => [
    modelField("chat"),
    label("pg_system", el("textarea", { id: "pg-chat-system", rows: 2 })),
    label("pg_user", el("textarea", { id: "pg-chat-user", rows: 3, required: true })),
    el("div", { class: "pg-row" },
      label("pg_temperature", el("input", { id: "pg-chat-temperature", type: "number", min: "0", max: "2", step: "0.1" })),
      label("pg_max_tokens", el("input", { id: "pg-chat-max-tokens", type: "number", min: "1" })),
      label("pg_stream", el("input", { id: "pg-chat-stream", type: "checkbox", checked: true }), "pg-check")),
  ],
  request() {
    const messages = [];
    if (value("pg-chat-system")) messages.push({ role: "system", content: document.getElementById("pg-chat-system").value });
    messages.push({ role: "user", content: document.getElementById("pg-chat-user").value });
    const stream = document.getElementById("pg-chat-stream").checked;
    const json = withOptional({ model: value("pg-chat-model"), messages },
      { temperature: number("pg-chat-temperature"), max_tokens: number("pg-chat-max-tokens") });
    json.stream = stream;
    if (stream) json.stream_options = { include_usage: true }; // the final usage, as the last event
    return { path: "/v1/chat/completions", json, stream };
  },
  async render(response, out, request) {
    const answer = el("div", { id: "pg-chat-answer", class: "pg-answer" });
    out.replaceChildren(answer, usageLine("pg-chat-usage"));
    if (!request.stream) {
      const completion = await response.json();
      const choice = (completion.choices || [])[0] || {};
      answer.textContent = (choice.message && choice.message.content) || "";
      out.replaceChildren(answer, usageLine("pg-chat-usage", completion.usage));
      return;
    }
    await readEvents(response, (event) => {
      for (const choice of event.choices || []) if (choice.delta && choice.delta.content) answer.append(choice.delta.content);
      if (event.usage) out.replaceChildren(answer, usageLine("pg-chat-usage", event.usage));
    });
  },
};

const embeddings = {
  id: "embeddings", service: "embedding",
  build: () => [
    modelField("embeddings"),
    label("pg_embed_input", el("textarea", { id: "pg-embeddings-input", rows: 3, required: true })),
    label("pg_dimensions", el("input", { id: "pg-embeddings-dimensions", type: "number", min: "1" })),
  ],
  request() {
    const inputs = lines("pg-embeddings-input");
    return { path: "/v1/embeddings", json: withOptional({ model: value("pg-embeddings-model"), input: inputs.length === 1 ? inputs[0] : inputs },
      { dimensions: number("pg-embeddings-dimensions") }) };
  },
  async render(response, out) {
    const answer = await response.json();
    const rows = (answer.data || []).map((item) => el("tr", { dataset: { index: item.index, dims: item.embedding.length } },
      el("td", {}, String(item.index)), el("td", { class: "pg-dims" }, String(item.embedding.length)),
      el("td", { class: "pg-values" }, item.embedding.slice(0, 8).map((x) => x.toFixed(4)).join(", ") + (item.embedding.length > 8 ? ", …" : ""))));
    out.replaceChildren(
      el("table", { id: "pg-embeddings-table" },
        el("thead", {}, el("tr", {}, ["pg_index", "pg_dims", "pg_first_values"].map((key) => el("th", {}, t(key))))),
        el("tbody", {}, rows)),
      usageLine("pg-embeddings-usage", answer.usage));
  },
};

const rerank = {
  id: "rerank", service: "rerank",
  build: () => [
    modelField("rerank"),
    label("pg_query", el("input", { id: "pg-rerank-query", required: true })),
    label("pg_documents", el("textarea", { id: "pg-rerank-documents", rows: 5, required: true })),
    label("pg_top_n", el("input", { id: "pg-rerank-top-n", type: "number", min: "1" })),
  ],
  request() {
    return { path: "/v1/rerank", json: withOptional({ model: value("pg-rerank-model"), query: value("pg-rerank-query"),
      documents: lines("pg-rerank-documents") }, { top_n: number("pg-rerank-top-n") }) };
  },
  async render(response, out, request) {
    const answer = await response.json();
    const documents = request.json.documents;
    const items = (answer.results || []).map((result) => {
      const doc = result.document === undefined ? documents[result.index] : result.document;
      return el("li", { dataset: { index: result.index, score: result.score } },
        el("span", { class: "pg-score" }, Number(result.score).toFixed(4)), " ",
        el("span", { class: "pg-doc" }, typeof doc === "string" ? doc : (doc && doc.text) || ""));
    });
    out.replaceChildren(el("ol", { id: "pg-rerank-results" }, items), usageLine("pg-rerank-usage", answer.usage));
  },
};

let audioUrl = null; // the last answer's Blob URL, released when the next one comes

const speech = {
  id: "speech", service: "tts",
  build: () => [
    modelField("speech"),
    label("pg_speech_input", el("textarea", { id: "pg-speech-input", rows: 3, required: true })),
    el("div", { class: "pg-row" },
      label("pg_voice", el("input", { id: "pg-speech-voice", value: "alloy", required: true })),
      label("pg_format", select("pg-speech-format", ["mp3", "wav", "opus", "aac", "flac", "pcm"], "mp3"))),
  ],
  request() {
    const format = value("pg-speech-format");
    return { path: "/v1/audio/speech", out: "speech." + format,
      json: { model: value("pg-speech-model"), input: document.getElementById("pg-speech-input").value, voice: value("pg-speech-voice"), response_format: format } };
  },
  async render(response, out) {
    const blob = await response.blob();
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = URL.createObjectURL(blob);
    out.replaceChildren(el("audio", { id: "pg-speech-audio", controls: true, src: audioUrl }),
      el("p", { id: "pg-speech-size", dataset: { size: blob.size } }, t("pg_audio_size").replace("{size}", blob.size).replace("{type}", blob.type || "?")));
  },
};

const transcription = {
  id: "stt", service: "stt",
  build: () => [
    modelField("stt"),
    label("pg_audio_file", el("input", { id: "pg-stt-file", type: "file", accept: "audio/*,video/*", required: true })),
    el("div", { class: "pg-row" },
      label("pg_task", el("select", { id: "pg-stt-task" },
        el("option", { value: "transcriptions", dataset: { i18n: "pg_transcribe" } }),
        el("option", { value: "translations", dataset: { i18n: "pg_translate" } }))),
      label("pg_language", el("input", { id: "pg-stt-language", size: 6 })),
      label("pg_format", select("pg-stt-format", ["json", "text", "verbose_json", "srt", "vtt"], "json"))),
  ],
  request() {
    const form = [["file", file("pg-stt-file")], ["model", value("pg-stt-model")], ["response_format", value("pg-stt-format")]];
    if (value("pg-stt-language")) form.push(["language", value("pg-stt-language")]);
    return { path: "/v1/audio/" + value("pg-stt-task"), form };
  },
  async render(response, out) {
    const json = (response.headers.get("content-type") || "").includes("json");
    const answer = json ? await response.json() : await response.text();
    out.replaceChildren(el("pre", { id: "pg-stt-text", class: "pg-answer" }, json ? answer.text ?? JSON.stringify(answer) : answer));
  },
};

// Images from b64_json, or from a URL when the page may load it (the CSP lets images come only from this origin,
// data: and blob:); a URL elsewhere is given as a link to open.
function showImages(out, id, answer) {
  const items = (answer.data || []).map((item, index) => {
    const src = item.b64_json ? "data:image/png;base64," + item.b64_json : item.url || "";
    const loadable = src.startsWith("data:") || src.startsWith("blob:") || src.startsWith(window.location.origin + "/");
    return el("figure", { dataset: { index } },
      loadable ? el("img", { class: "pg-image", src, alt: item.revised_prompt || "" })
        : el("a", { href: src, target: "_blank", rel: "noopener noreferrer" }, src),
      item.revised_prompt ? el("figcaption", {}, item.revised_prompt) : null);
  });
  out.replaceChildren(el("div", { id, class: "pg-images" }, items));
}

const SIZES = ["256x256", "512x512", "1024x1024", "1792x1024", "1024x1792"];

const images = {
  id: "images", service: "image_generation",
  build: () => [
    modelField("images", true),
    label("pg_prompt", el("textarea", { id: "pg-images-prompt", rows: 2, required: true })),
    el("div", { class: "pg-row" },
      label("pg_size", select("pg-images-size", SIZES, "1024x1024")),
      label("pg_n", el("input", { id: "pg-images-n", type: "number", min: "1", max: "10", value: "1" })),
      label("pg_response_format", select("pg-images-format", ["b64_json", "url"], "b64_json"))),
  ],
  request() {
    return { path: "/v1/images/generations", json: withOptional({ prompt: value("pg-images-prompt") },
      { model: value("pg-images-model"), size: value("pg-images-size"), n: number("pg-images-n"), response_format: value("pg-images-format") }) };
  },
  async render(response, out) {
    showImages(out, "pg-images-shown", await response.json());
  },
};

const imageEdit = {
  id: "edit", service: "image_edit",
  build: () => [
    modelField("edit", true),
    label("pg_image_file", el("input", { id: "pg-edit-image", type: "file", accept: "image/*", required: true })),
    label("pg_mask_file", el("input", { id: "pg-edit-mask", type: "file", accept: "image/*" })),
    label("pg_prompt", el("textarea", { id: "pg-edit-prompt", rows: 2, required: true })),
    el("div", { class: "pg-row" },
      label("pg_size", select("pg-edit-size", SIZES, "1024x1024")),
      label("pg_n", el("input", { id: "pg-edit-n", type: "number", min: "1", max: "10", value: "1" }))),
  ],
  request() {
    const form = [["image", file("pg-edit-image")], ["prompt", value("pg-edit-prompt")]];
    if (file("pg-edit-mask")) form.push(["mask", file("pg-edit-mask")]);
    for (const [name, given] of [["model", value("pg-edit-model")], ["size", value("pg-edit-size")], ["n", value("pg-edit-n")]]) {
      if (given) form.push([name, given]);
    }
    return { path: "/v1/images/edits", form };
  },
  async render(response, out) {
    showImages(out, "pg-edit-shown", await response.json());
  },
};

export const TABS = [chat, embeddings, rerank, speech, transcription, images, imageEdit];
