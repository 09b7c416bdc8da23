"""Scripted fake backends, served as real HTTP servers on loopback (aiohttp.web).

``FakeOpenAI`` speaks the OpenAI API for every endpoint the gateway serves and records every request it gets, so
tests can assert what reached the upstream. ``FakeOllama`` speaks Ollama's native /api/chat and /api/embed.
Faults are scripted per path with ``fail``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Fault:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def vector_for(text: str, dims: int = 8) -> list[float]:
    """Deterministic, exactly float32-representable values."""
    digest = hashlib.sha256(text.encode()).digest() * 8
    return [(b - 128) / 128 for b in digest[:dims]]


class FakeOpenAI:
    def __init__(self, name: str = "a", *, rerank_style: str = "jina") -> None:
        self.name = name
        self.rerank_style = rerank_style
        self.requests: list[Recorded] = []
        self.faults: dict[str, Fault] = {}
        self.delay = 0.0  # before answering
        self.stream_gap = 0.0  # between SSE events
        self.stream_events = 3  # content events per stream
        self.break_stream_after: int | None = None  # drop the connection after this many events
        self.disconnects = 0  # streams whose client (the gateway) went away
        # False: like llama.cpp's server, never report usage (streams ignore stream_options.include_usage).
        self.reports_usage = True
        # A chat stream writes this many events, then waits for ``hold`` before the rest (a test sets the event
        # from its thread with ``bg.loop.call_soon_threadsafe(hold.set)``): what the client saw before the end.
        self.hold: asyncio.Event | None = None
        self.hold_after = 2
        self.speech_audio: bytes | None = None  # speech answers these bytes (real audio) instead of speech_bytes
        self.image_b64: str | None = None  # images and edits answer this (a real picture) instead of their text

    def fail(
        self,
        path: str,
        status: int,
        body: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = (
            body
            if isinstance(body, bytes)
            else (json.dumps(body).encode() if not isinstance(body, str) else body.encode())
        )
        self.faults[path] = Fault(status, raw, content_type, headers or {})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/rerank", self._rerank)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_post("/v1/audio/translations", self._transcribe)
        app.router.add_post("/v1/images/generations", self._image)
        app.router.add_post("/v1/images/edits", self._image_edit)
        app.router.add_get("/v1/models", self._models)
        return app

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    async def _record(self, request: web.Request) -> Recorded:
        body = await request.read()
        rec = Recorded(request.path, dict(request.headers), body)
        if request.content_type == "application/json":
            rec.json = json.loads(body)
        self.requests.append(rec)
        return rec

    def _fault(self, path: str) -> web.Response | None:
        fault = self.faults.get(path)
        if fault is None:
            return None
        return web.Response(
            status=fault.status, body=fault.body, content_type=fault.content_type.split(";")[0], headers=fault.headers
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if (resp := self._fault(request.path)) is not None:
            return resp
        payload = rec.json
        model = payload["model"]
        created = int(time.time())
        if not payload.get("stream"):
            answer = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"hello from {self.name}"},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
            if not self.reports_usage:
                del answer["usage"]
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(delta: dict[str, Any], finish: str | None = None, usage: Any = None, choices: bool = True) -> bytes:
            chunk: dict[str, Any] = {
                "id": f"chatcmpl-{self.name}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else [],
            }
            if usage is not None:
                chunk["usage"] = usage
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": f"tok{i} "}) for i in range(self.stream_events)]
        events.append(event({}, "stop"))
        opts = payload.get("stream_options") or {}
        if opts.get("include_usage") and self.reports_usage:
            events.append(
                event(
                    {},
                    usage={
                        "prompt_tokens": 5,
                        "completion_tokens": self.stream_events,
                        "total_tokens": 5 + self.stream_events,
                    },
                    choices=False,
                )
            )
        events.append(b"data: [DONE]\n\n")
        try:
            for i, ev in enumerate(events):
                if self.break_stream_after is not None and i == self.break_stream_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                await resp.write(ev)
                if self.hold is not None and i + 1 == self.hold_after:
                    await self.hold.wait()
                if self.stream_gap:
                    await asyncio.sleep(self.stream_gap)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        await resp.write_eof()
        return resp

    async def _completions(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": int(time.time()),
                "model": rec.json["model"],
                "choices": [
                    {"text": f" completion from {self.name}", "index": 0, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        payload = rec.json
        inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        dims = payload.get("dimensions") or 8
        # Like many servers: floats only, whatever encoding_format says.
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector_for(str(t), dims)} for i, t in enumerate(inputs)
            ],
            "model": payload["model"],
            "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
        }
        if not self.reports_usage:
            del answer["usage"]
        return web.json_response(answer)

    async def _rerank(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        payload = rec.json
        docs = payload.get("documents") or payload.get("texts") or []
        query = set(payload["query"].lower().split())
        scores = [len(query & set(str(d).lower().split())) / (1 + len(str(d).split())) for d in docs]
        if self.rerank_style == "tei":  # TEI: a bare list, in input order
            return web.json_response([{"index": i, "score": s} for i, s in enumerate(scores)])
        if self.rerank_style == "cohere":
            return web.json_response(
                {
                    "id": "cohere-1",
                    "results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)],
                    "meta": {"billed_units": {"search_units": 1, "input_tokens": 7}},
                }
            )
        return web.json_response(
            {
                "model": payload["model"],
                "results": [
                    {"index": i, "relevance_score": s, "document": {"text": docs[i]}} for i, s in enumerate(scores)
                ],
                "usage": {"total_tokens": 11},
            }
        )

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        fmt = rec.json.get("response_format", "mp3")
        ctype = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "pcm": "audio/pcm"}.get(
            fmt, "audio/mpeg"
        )
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        audio = self.speech_audio
        chunks = (
            speech_bytes(rec.json["input"])
            if audio is None
            else [audio[i : i + 4096] for i in range(0, len(audio), 4096)]
        )
        for chunk in chunks:
            await resp.write(chunk)
            if self.stream_gap:
                await asyncio.sleep(self.stream_gap)
        await resp.write_eof()
        return resp

    async def _read_form(self, request: web.Request) -> Recorded:
        rec = Recorded(request.path, dict(request.headers), b"")
        reader = await request.multipart()
        async for part in reader:
            data = await part.read()  # type: ignore[union-attr]
            if part.filename is not None:  # type: ignore[union-attr]
                rec.files[part.name or ""] = {  # type: ignore[union-attr]
                    "filename": part.filename,  # type: ignore[union-attr]
                    "content_type": part.headers.get("Content-Type"),  # type: ignore[union-attr]
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            else:
                rec.fields[part.name or ""] = data.decode()  # type: ignore[union-attr]
        self.requests.append(rec)
        return rec

    async def _transcribe(self, request: web.Request) -> web.Response:
        rec = await self._read_form(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        text = f"transcript of {rec.files['file']['filename']} by {rec.fields['model']}"
        fmt = rec.fields.get("response_format", "json")
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt == "srt":
            return web.Response(
                text=f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n", content_type="application/x-subrip"
            )
        if fmt == "vtt":
            return web.Response(text=f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n", content_type="text/vtt")
        if fmt == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": "english",
                    "duration": 1.0,
                    "text": text,
                    "segments": [],
                    "words": [],
                }
            )
        return web.json_response({"text": text})

    async def _image(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        n = rec.json.get("n") or 1
        return web.json_response(
            {
                "created": int(time.time()),
                "data": [{"b64_json": self.image_b64 or "aW1hZ2U=", "revised_prompt": rec.json["prompt"]}] * n,
            }
        )

    async def _image_edit(self, request: web.Request) -> web.Response:
        rec = await self._read_form(request)
        if (resp := self._fault(request.path)) is not None:
            return resp
        return web.json_response(
            {
                "created": int(time.time()),
                "data": [{"b64_json": self.image_b64 or "ZWRpdGVk", "revised_prompt": rec.fields.get("prompt")}],
            }
        )


def speech_bytes(text: str) -> list[bytes]:
    seed = hashlib.sha256(text.encode()).digest()
    return [bytes([i]) * 1000 + seed for i in range(5)]


class FakeOllama:
    """Ollama's native API: /api/chat (NDJSON stream or one JSON object) and /api/embed."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.tool_call = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_get("/api/tags", self._tags)
        return app

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "llama3.2"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = json.loads(body)
        self.requests.append(Recorded(request.path, dict(request.headers), body, payload))
        model = payload["model"]
        if model == "missing":
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        words = ["Hel", "lo", "!"]
        final = {
            "model": model,
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 12,
            "eval_count": 3,
        }
        if self.tool_call:
            final["message"]["tool_calls"] = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
        if not payload.get("stream", True):
            final["message"]["content"] = "".join(words)
            return web.json_response(final)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for w in words:
            line = {
                "model": model,
                "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": w},
                "done": False,
            }
            await resp.write(json.dumps(line).encode() + b"\n")
        await resp.write(json.dumps(final).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def _embed(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        self.requests.append(Recorded(request.path, dict(request.headers), body, payload))
        inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        return web.json_response(
            {
                "model": payload["model"],
                "embeddings": [vector_for(t) for t in inputs],
                "prompt_eval_count": 4 * len(inputs),
            }
        )
