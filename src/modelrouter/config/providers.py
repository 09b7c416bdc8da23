"""Provider presets: ``provider:`` on an instance fills in where a known API lives, which dialect it speaks and
how its key is sent. Data, not code: each entry is a base URL, an adapter, and whether a key is expected; the
instance's own ``base_url``, ``adapter``, ``headers`` and everything else override it. ``api_key`` (with or
without a preset) becomes the header its adapter's API wants (``AUTH_HEADERS``).

The table is docs/providers.md's; the URLs are the providers' documented OpenAI-compatible (or native) endpoints,
and the self-hosted servers' default local ports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTH_HEADERS", "PROVIDERS", "apply_provider"]

# adapter -> (header, value format) for ``api_key``
AUTH_HEADERS: dict[str, tuple[str, str]] = {
    "openai": ("Authorization", "Bearer {key}"),
    "ollama": ("Authorization", "Bearer {key}"),
    "tei": ("Authorization", "Bearer {key}"),
    "anthropic": ("x-api-key", "{key}"),
    "azure": ("api-key", "{key}"),
    "gemini": ("x-goog-api-key", "{key}"),
}

# name -> base_url, adapter, key: whether the API needs a key (hosted) or not (self-hosted)
PROVIDERS: dict[str, dict[str, Any]] = {
    # hosted, OpenAI-compatible
    "openai": {"base_url": "https://api.openai.com/v1", "adapter": "openai", "key": True, "responses_api": True},
    "deepseek": {"base_url": "https://api.deepseek.com/v1", "adapter": "openai", "key": True},
    "qwen": {"base_url": "https://dashscope.aliyuncs.com/compatible-mode/v1", "adapter": "openai", "key": True},
    "zhipu": {"base_url": "https://open.bigmodel.cn/api/paas/v4", "adapter": "openai", "key": True},
    "moonshot": {"base_url": "https://api.moonshot.cn/v1", "adapter": "openai", "key": True},
    "siliconflow": {"base_url": "https://api.siliconflow.cn/v1", "adapter": "openai", "key": True},
    "groq": {"base_url": "https://api.groq.com/openai/v1", "adapter": "openai", "key": True},
    "openrouter": {"base_url": "https://openrouter.ai/api/v1", "adapter": "openai", "key": True},
    "mistral": {"base_url": "https://api.mistral.ai/v1", "adapter": "openai", "key": True},
    "together": {"base_url": "https://api.together.xyz/v1", "adapter": "openai", "key": True},
    "fireworks": {"base_url": "https://api.fireworks.ai/inference/v1", "adapter": "openai", "key": True},
    "xai": {"base_url": "https://api.x.ai/v1", "adapter": "openai", "key": True},
    # hosted, own dialects
    "anthropic": {"base_url": "https://api.anthropic.com", "adapter": "anthropic", "key": True},
    "azure": {"adapter": "azure", "key": True},
    "gemini": {
        "base_url": "https://generativelanguage.googleapis.com",
        "adapter": "gemini",
        "key": True,
    },  # base_url is the resource's: https://NAME.openai.azure.com
    # self-hosted (default ports; give base_url for another host)
    "vllm": {"base_url": "http://127.0.0.1:8000/v1", "adapter": "openai", "key": False},
    "sglang": {"base_url": "http://127.0.0.1:30000/v1", "adapter": "openai", "key": False},
    "llama.cpp": {"base_url": "http://127.0.0.1:8080/v1", "adapter": "openai", "key": False},
    "ollama": {"base_url": "http://127.0.0.1:11434", "adapter": "ollama", "key": False},
    "lmstudio": {"base_url": "http://127.0.0.1:1234/v1", "adapter": "openai", "key": False},
    "localai": {"base_url": "http://127.0.0.1:8080/v1", "adapter": "openai", "key": False},
    "xinference": {"base_url": "http://127.0.0.1:9997/v1", "adapter": "openai", "key": False},
    "gpustack": {"base_url": "http://127.0.0.1:80/v1", "adapter": "openai", "key": False},
    "tei": {"base_url": "http://127.0.0.1:8080", "adapter": "tei", "key": False},
}


def apply_provider(data: Any) -> Any:
    """An instance's raw config with its preset filled in (what the instance gives wins) and ``api_key`` turned into
    its adapter's auth header (unless ``headers`` already has that header)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    name = data.get("provider")
    if name is not None:
        preset = PROVIDERS.get(name)
        if preset is None:
            raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}")
        for field in ("base_url", "adapter", "responses_api"):
            if field in preset:
                data.setdefault(field, preset[field])
        if "base_url" not in data:
            raise ValueError(f"provider {name!r} needs base_url (the resource's own URL)")
    key = data.get("api_key")
    if key is not None:
        header, value = AUTH_HEADERS.get(data.get("adapter") or "openai", AUTH_HEADERS["openai"])
        headers = dict(data.get("headers") or {})
        if header.lower() not in {h.lower() for h in headers}:
            headers[header] = value.format(key=key)
        data["headers"] = headers
    return data
