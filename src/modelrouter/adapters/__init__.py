"""Backend dialects, one module each, and the name -> adapter table the config refers to."""

from ..config.model import InstanceConfig
from .anthropic import AnthropicAdapter
from .azure import AzureAdapter
from .base import Adapter, SSEPassThrough, StreamTranslator
from .gemini import GeminiAdapter
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter
from .openai_responses import OpenAIResponsesAdapter
from .tei import TEIAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AnthropicAdapter",
    "AzureAdapter",
    "GeminiAdapter",
    "OllamaAdapter",
    "OpenAIAdapter",
    "OpenAIResponsesAdapter",
    "SSEPassThrough",
    "StreamTranslator",
    "TEIAdapter",
    "adapter_for",
]

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "ollama": OllamaAdapter(),
    "tei": TEIAdapter(),
    "anthropic": AnthropicAdapter(),
    "azure": AzureAdapter(),
    "gemini": GeminiAdapter(),
}


def adapter_for(instance: InstanceConfig) -> Adapter:
    """The adapter an instance speaks through: the shared one of its dialect, or one made for its options."""
    if instance.adapter == "anthropic" and instance.default_max_tokens is not None:
        return AnthropicAdapter(instance.default_max_tokens)
    if instance.adapter == "azure":  # the deployment is part of every path
        return AzureAdapter(instance.upstream_model or instance.name, instance.api_version)
    if instance.adapter == "gemini":  # and so is the model
        return GeminiAdapter(instance.upstream_model or instance.name)
    if instance.adapter == "openai" and instance.responses_api:  # with its own /v1/responses
        return OpenAIResponsesAdapter()
    return ADAPTERS[instance.adapter]
