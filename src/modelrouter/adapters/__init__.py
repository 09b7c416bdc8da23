"""Backend dialects, one module each, and the name -> adapter table the config refers to."""

from ..config.model import InstanceConfig
from .anthropic import AnthropicAdapter
from .base import Adapter, SSEPassThrough, StreamTranslator
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter
from .tei import TEIAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AnthropicAdapter",
    "OllamaAdapter",
    "OpenAIAdapter",
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
}


def adapter_for(instance: InstanceConfig) -> Adapter:
    """The adapter an instance speaks through: the shared one of its dialect, or one made for its options."""
    if instance.adapter == "anthropic" and instance.default_max_tokens is not None:
        return AnthropicAdapter(instance.default_max_tokens)
    return ADAPTERS[instance.adapter]
