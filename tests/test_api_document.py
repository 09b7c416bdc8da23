"""The API document's own examples (JAiRouter's unified API), run as written through the gateway.

Each request body below is the document's, verbatim; the test config aliases the document's model names to
instances on one real loopback upstream. Every example goes over plain HTTP (urllib, as the document's `requests`
example does) and through the official openai SDK, and the tests assert the reply shapes the document gives and
that the upstream got every field the client sent, unknown ones (``top_k``) included, only ``model`` rewritten.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cohere
import openai
import pytest
from aiohttp import web

from .fakes import FakeOpenAI, speech_bytes
from .servers import BackgroundLoop, GatewayServer, UpstreamServer

# --- the document's examples ----------------------------------------------------------------------------------

CHAT: dict[str, Any] = {
    "model": "gpt-3.5-turbo",
    "messages": [{"role": "system", "content": "你是一个有用的助手。"}, {"role": "user", "content": "你好!"}],
    "stream": False,
    "max_tokens": 1000,
    "temperature": 0.7,
    "top_p": 1.0,
    "top_k": 50,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "stop": None,
    "user": "user-123",
}
CHAT_CURL: dict[str, Any] = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "你好!"}]}
EMBEDDINGS: dict[str, Any] = {
    "model": "text-embedding-ada-002",
    "input": "要嵌入的文本内容",
    "encoding_format": "float",
    "dimensions": 1536,
    "user": "user-123",
}
EMBEDDINGS_CURL: dict[str, Any] = {"model": "text-embedding-ada-002", "input": "要嵌入的文本"}
RERANK: dict[str, Any] = {
    "model": "rerank-multilingual-v2.0",
    "query": "什么是人工智能?",
    "documents": ["人工智能是计算机科学的一个分支", "机器学习是人工智能的子领域", "深度学习使用神经网络"],
    "top_n": 3,
    "return_documents": True,
}
# The document's rerank reply lists these two results first; the third document is scored last.
RERANK_RESULTS = [
    {"index": 0, "score": 0.95, "document": "人工智能是计算机科学的一个分支"},
    {"index": 1, "score": 0.87, "document": "机器学习是人工智能的子领域"},
]
SPEECH: dict[str, Any] = {
    "model": "tts-1",
    "input": "你好,这是一段测试语音。",
    "voice": "alloy",
    "response_format": "mp3",
    "speed": 1.0,
}
IMAGES: dict[str, Any] = {
    "model": "dall-e-3",
    "prompt": "一只可爱的小猫在花园里玩耍",
    "n": 1,
    "size": "1024x1024",
    "quality": "standard",
    "response_format": "url",
    "style": "vivid",
    "user": "user-123",
}
# The document names the edit's fields; the prompt's text and the files are ours.
IMAGE_EDIT: dict[str, str] = {
    "prompt": "给小猫戴上一顶帽子",
    "model": "dall-e-2",
    "n": "1",
    "size": "1024x1024",
    "response_format": "url",
    "user": "user-123",
}
# Likewise the transcription's: file and model, with the optional language, response_format and temperature.
TRANSCRIPTION: dict[str, str] = {"model": "whisper-1", "language": "zh", "response_format": "json", "temperature": "0"}
ERROR: dict[str, Any] = {
    "error": {
        "message": "Invalid request: missing required parameter 'model'",
        "type": "invalid_request_error",
        "param": "model",
        "code": "missing_parameter",
    }
}

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
MASK = b"\x89PNG\r\n\x1a\n" + bytes(64)
AUDIO = b"ID3" + bytes(range(256)) * 4

# The document's model names -> the gateway's models -> what the upstream serves them as.
UPSTREAM = {
    "chat": "qwen2.5-7b-instruct",
    "embedding": "bge-m3",
    "rerank": "bge-reranker-v2-m3",
    "tts": "cosyvoice-300m",
    "stt": "whisper-large-v3",
    "image_generation": "sdxl",
    "image_edit": "sdxl-inpaint",
}
ALIASES = {
    "gpt-3.5-turbo": "doc-chat",
    "text-embedding-ada-002": "doc-embedding",
    "rerank-multilingual-v2.0": "doc-rerank",
    "tts-1": "doc-tts",
    "whisper-1": "doc-stt",
    "dall-e-3": "doc-image_generation",
    "dall-e-2": "doc-image_edit",
}
API_KEY = "your-api-key"  # the curl examples' key, as written


def upstream_body(body: dict[str, Any], service: str) -> dict[str, Any]:
    """What the upstream must receive for ``body``: the same, with the model it serves."""
    return {**body, "model": UPSTREAM[service]}


# --- the upstream ----------------------------------------------------------------------------------------------


class DocumentUpstream(FakeOpenAI):
    """FakeOpenAI, plus what the document's examples ask of a backend: embeddings of the requested
    ``dimensions``, image URLs for ``response_format: url``, and rerank scores (the document's own)."""

    def __init__(self) -> None:
        super().__init__("doc")

    async def _embeddings(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        payload = rec.json
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": vector(payload["input"], payload)}],
                "model": payload["model"],
                "usage": {"prompt_tokens": 6, "total_tokens": 6},
            }
        )

    async def _rerank(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        scores = {r["document"]: r["score"] for r in RERANK_RESULTS}
        # In the documents' order, not best first: sorting is the gateway's work.
        results = [{"index": i, "relevance_score": scores.get(d, 0.12)} for i, d in enumerate(rec.json["documents"])]
        return web.json_response({"id": "rerank-123", "results": results, "usage": {"total_tokens": 25}})

    async def _image(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        return web.json_response(images_reply(rec.json["prompt"], rec.json.get("response_format"), rec.json["n"]))

    async def _image_edit(self, request: web.Request) -> web.Response:
        rec = await self._read_form(request)
        return web.json_response(
            images_reply(rec.fields["prompt"], rec.fields.get("response_format"), int(rec.fields["n"]))
        )


def vector(text: str, payload: dict[str, Any]) -> list[float]:
    dims = payload.get("dimensions") or 8
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % 32] - 128) / 128 for i in range(dims)]


def image_url(prompt: str) -> str:
    return f"https://images.example/{hashlib.sha256(prompt.encode()).hexdigest()[:12]}.png"


def images_reply(prompt: str, response_format: str | None, n: int) -> dict[str, Any]:
    item = {"url": image_url(prompt)} if response_format == "url" else {"b64_json": "aW1hZ2U="}
    return {"created": int(time.time()), "data": [{**item, "revised_prompt": f"{prompt}(高清)"}] * n}


@pytest.fixture
def upstream(bg: BackgroundLoop, servers: list[UpstreamServer | GatewayServer]) -> tuple[DocumentUpstream, str]:
    fake = DocumentUpstream()
    servers.append(server := UpstreamServer(bg, fake.app()).start())
    return fake, server.url


def document_config(url: str, **extra: Any) -> dict[str, Any]:
    services = {
        service: {"instances": [{"name": f"doc-{service}", "base_url": url, "upstream_model": model}]}
        for service, model in UPSTREAM.items()
    }
    return {"aliases": ALIASES, "services": services, **extra}


@pytest.fixture
def doc(
    upstream: tuple[DocumentUpstream, str], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> tuple[DocumentUpstream, GatewayServer]:
    fake, url = upstream
    return fake, start_gateway(document_config(url))


def sdk(gw: GatewayServer, key: str = "x") -> openai.OpenAI:
    # Strict: the SDK checks every reply against its own models, as a typed client would rely on.
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, _strict_response_validation=True)


# --- plain HTTP ------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def post(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return Reply(resp.status, resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, err.headers.get("Content-Type", ""), err.read())


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return post(url, json.dumps(body, ensure_ascii=False).encode(), "application/json", headers)


def post_form(url: str, fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> Reply:
    """multipart/form-data, as `requests.post(url, data=fields, files=files)` sends it."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data, content_type) in files.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return post(url, bytes(out), f"multipart/form-data; boundary={boundary}")


# --- reply shapes, as the document gives them --------------------------------------------------------------------


def check_chat(answer: dict[str, Any]) -> None:
    assert isinstance(answer["id"], str)
    assert answer["object"] == "chat.completion"
    assert isinstance(answer["created"], int)
    # Passed through: the upstream's name for the model it ran (OpenAI, too, answers a snapshot's name).
    assert answer["model"] == UPSTREAM["chat"]
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "hello from doc"
    assert choice["finish_reason"] == "stop"
    usage = answer["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == usage["total_tokens"]


def check_chunks(stream: bytes) -> None:
    events = stream.decode().split("\n\n")
    assert events[-1] == ""  # every event complete
    assert all(e.startswith("data: ") for e in events[:-1])
    datas = [e.removeprefix("data: ") for e in events[:-1]]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert chunks
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["id"], str)
        assert isinstance(chunk["created"], int)
        assert "delta" in chunk["choices"][0]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "tok0 tok1 tok2 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def check_embeddings(answer: dict[str, Any], text: str, dims: int) -> None:
    assert answer["object"] == "list"
    assert answer["model"] == UPSTREAM["embedding"]
    [item] = answer["data"]
    assert item["object"] == "embedding"
    assert item["index"] == 0
    assert item["embedding"] == vector(text, {"dimensions": dims})
    assert len(item["embedding"]) == dims
    assert set(answer["usage"]) >= {"prompt_tokens", "total_tokens"}


def check_rerank(answer: dict[str, Any]) -> None:
    assert answer["id"] == "rerank-123"
    assert answer["model"] == "rerank-multilingual-v2.0"  # the name the client asked for
    assert answer["usage"] == {"total_tokens": 25}
    results = answer["results"]
    assert results[:2] == [{**r, "relevance_score": r["score"]} for r in RERANK_RESULTS]
    assert [r["index"] for r in results] == [0, 1, 2]  # top_n 3 of 3 documents, best first
    assert results[2]["document"] == RERANK["documents"][2]


def check_images(answer: dict[str, Any], prompt: str) -> None:
    assert isinstance(answer["created"], int)
    [item] = answer["data"]
    assert item["url"] == image_url(prompt)
    assert item["revised_prompt"] == f"{prompt}(高清)"


# --- over plain HTTP ---------------------------------------------------------------------------------------------


def test_chat(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    reply = post_json(gw.url + "/v1/chat/completions", CHAT)
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("application/json")
    check_chat(reply.json())
    assert fake.last.json == upstream_body(CHAT, "chat")  # top_k, stop: null and user included


def test_chat_streaming(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    body = {**CHAT, "stream": True}
    reply = post_json(gw.url + "/v1/chat/completions", body)
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("text/event-stream")
    check_chunks(reply.body)
    assert fake.last.json == upstream_body(body, "chat")


def test_embeddings(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    reply = post_json(gw.url + "/v1/embeddings", EMBEDDINGS)
    assert reply.status == 200, reply.body
    check_embeddings(reply.json(), EMBEDDINGS["input"], 1536)
    assert fake.last.json == upstream_body(EMBEDDINGS, "embedding")


def test_rerank(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    reply = post_json(gw.url + "/v1/rerank", RERANK)
    assert reply.status == 200, reply.body
    check_rerank(reply.json())
    assert fake.last.json == upstream_body(RERANK, "rerank")


def test_speech(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    reply = post_json(gw.url + "/v1/audio/speech", SPEECH)
    assert reply.status == 200, reply.body
    assert reply.content_type == "audio/mpeg"  # mp3
    assert reply.body == b"".join(speech_bytes(SPEECH["input"]))
    assert fake.last.json == upstream_body(SPEECH, "tts")


def test_images(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    reply = post_json(gw.url + "/v1/images/generations", IMAGES)
    assert reply.status == 200, reply.body
    check_images(reply.json(), IMAGES["prompt"])
    assert fake.last.json == upstream_body(IMAGES, "image_generation")


def check_edit_reached_upstream(fake: DocumentUpstream) -> None:
    assert fake.last.path == "/v1/images/edits"
    assert fake.last.fields == upstream_body(IMAGE_EDIT, "image_edit")
    assert fake.last.files["image"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert fake.last.files["mask"]["sha256"] == hashlib.sha256(MASK).hexdigest()


def test_image_edit(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    files = {"image": ("image.png", PNG, "image/png"), "mask": ("mask.png", MASK, "image/png")}
    reply = post_form(gw.url + "/v1/images/edits", IMAGE_EDIT, files)
    assert reply.status == 200, reply.body
    check_images(reply.json(), IMAGE_EDIT["prompt"])
    check_edit_reached_upstream(fake)


def check_transcription_reached_upstream(fake: DocumentUpstream) -> None:
    assert fake.last.path == "/v1/audio/transcriptions"
    assert fake.last.fields == upstream_body(TRANSCRIPTION, "stt")
    assert fake.last.files["file"]["filename"] == "audio.mp3"
    assert fake.last.files["file"]["sha256"] == hashlib.sha256(AUDIO).hexdigest()


def test_transcription(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    reply = post_form(gw.url + "/v1/audio/transcriptions", TRANSCRIPTION, {"file": ("audio.mp3", AUDIO, "audio/mpeg")})
    assert reply.status == 200, reply.body
    assert reply.json() == {"text": f"transcript of audio.mp3 by {UPSTREAM['stt']}"}
    check_transcription_reached_upstream(fake)


def test_error_for_chat_without_model(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    body = {k: v for k, v in CHAT.items() if k != "model"}
    reply = post_json(gw.url + "/v1/chat/completions", body)
    assert reply.status == 400
    assert reply.content_type.startswith("application/json")
    assert fake.requests == []
    assert reply.json() == ERROR


# --- the curl examples, with the key they send -------------------------------------------------------------------


@pytest.fixture
def keyed(
    upstream: tuple[DocumentUpstream, str], start_gateway: Callable[[dict[str, Any]], GatewayServer]
) -> tuple[DocumentUpstream, GatewayServer]:
    fake, url = upstream
    # `your-api-key` is shorter than a configured `key` may be; its hash may be configured as it is.
    digest = "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()
    return fake, start_gateway(document_config(url, auth={"enabled": True, "keys": [{"name": "doc", "hash": digest}]}))


@pytest.mark.parametrize(
    ("path", "body", "service"),
    [("/v1/chat/completions", CHAT_CURL, "chat"), ("/v1/embeddings", EMBEDDINGS_CURL, "embedding")],
    ids=["chat", "embeddings"],
)
def test_curl_examples_with_their_key(
    keyed: tuple[DocumentUpstream, GatewayServer], path: str, body: dict[str, Any], service: str
) -> None:
    fake, gw = keyed
    refused = post_json(gw.url + path, body)
    assert refused.status == 401  # auth is on: the key is what lets the example through
    assert fake.requests == []

    reply = post_json(gw.url + path, body, {"Authorization": f"Bearer {API_KEY}"})
    assert reply.status == 200, reply.body
    if service == "chat":
        check_chat(reply.json())
    else:
        check_embeddings(reply.json(), EMBEDDINGS_CURL["input"], 8)
    assert fake.last.json == upstream_body(body, service)
    assert "Authorization" not in fake.last.headers  # the gateway's key stays at the gateway


def test_curl_examples_with_the_sdk(keyed: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = keyed
    client = sdk(gw, API_KEY)
    check_chat(client.chat.completions.create(**CHAT_CURL).model_dump())
    assert fake.last.json == upstream_body(CHAT_CURL, "chat")
    answer = client.embeddings.create(**EMBEDDINGS_CURL, encoding_format="float")
    check_embeddings(answer.model_dump(), EMBEDDINGS_CURL["input"], 8)
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "not-the-key").chat.completions.create(**CHAT_CURL)


# --- the official SDKs -------------------------------------------------------------------------------------------


def test_chat_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    answer = sdk(gw).chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "system", "content": "你是一个有用的助手。"}, {"role": "user", "content": "你好!"}],
        stream=False,
        max_tokens=1000,
        temperature=0.7,
        top_p=1.0,
        frequency_penalty=0.0,
        presence_penalty=0.0,
        stop=None,
        user="user-123",
        extra_body={"top_k": 50},  # not an OpenAI parameter: the SDK sends it as an extra
    )
    check_chat(answer.model_dump())
    assert fake.last.json == upstream_body(CHAT, "chat")


def test_chat_streaming_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    _fake, gw = doc
    chunks = list(sdk(gw).chat.completions.create(model="gpt-3.5-turbo", messages=CHAT["messages"], stream=True))
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    answer = sdk(gw).embeddings.create(
        model="text-embedding-ada-002",
        input="要嵌入的文本内容",
        encoding_format="float",
        dimensions=1536,
        user="user-123",
    )
    check_embeddings(answer.model_dump(), EMBEDDINGS["input"], 1536)
    assert fake.last.json == upstream_body(EMBEDDINGS, "embedding")


def test_rerank_with_cohere_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    # No openai SDK method reranks; the cohere SDK's v1 rerank sends the document's body as it is.
    fake, gw = doc
    client = cohere.Client(api_key="x", base_url=gw.url, max_retries=0, timeout=10)
    answer = client.rerank(**RERANK)
    assert fake.last.json == upstream_body(RERANK, "rerank")
    assert answer.id == "rerank-123"
    assert [(r.index, r.relevance_score, r.document) for r in answer.results[:2]] == [
        (r["index"], r["score"], r["document"]) for r in RERANK_RESULTS
    ]


def test_speech_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    answer = sdk(gw).audio.speech.create(
        model="tts-1", input="你好,这是一段测试语音。", voice="alloy", response_format="mp3", speed=1.0
    )
    assert answer.response.headers["content-type"] == "audio/mpeg"
    assert answer.content == b"".join(speech_bytes(SPEECH["input"]))
    assert fake.last.json == upstream_body(SPEECH, "tts")


def test_images_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    answer = sdk(gw).images.generate(
        model="dall-e-3",
        prompt="一只可爱的小猫在花园里玩耍",
        n=1,
        size="1024x1024",
        quality="standard",
        response_format="url",
        style="vivid",
        user="user-123",
    )
    check_images(answer.model_dump(exclude_none=True), IMAGES["prompt"])
    assert fake.last.json == upstream_body(IMAGES, "image_generation")


def test_image_edit_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    answer = sdk(gw).images.edit(
        image=("image.png", PNG, "image/png"),
        mask=("mask.png", MASK, "image/png"),
        prompt=IMAGE_EDIT["prompt"],
        model="dall-e-2",
        n=1,
        size="1024x1024",
        response_format="url",
        user="user-123",
    )
    check_images(answer.model_dump(exclude_none=True), IMAGE_EDIT["prompt"])
    check_edit_reached_upstream(fake)


def test_transcription_with_sdk(doc: tuple[DocumentUpstream, GatewayServer]) -> None:
    fake, gw = doc
    answer = sdk(gw).audio.transcriptions.create(
        file=("audio.mp3", AUDIO, "audio/mpeg"), model="whisper-1", language="zh", response_format="json", temperature=0
    )
    assert answer.text == f"transcript of audio.mp3 by {UPSTREAM['stt']}"
    check_transcription_reached_upstream(fake)
