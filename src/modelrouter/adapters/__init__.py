"""Backend dialects, one module each, and the name -> adapter table the config refers to."""

from .base import Adapter, SSEPassThrough, StreamTranslator
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter
from .tei import TEIAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "OllamaAdapter",
    "OpenAIAdapter",
    "SSEPassThrough",
    "StreamTranslator",
    "TEIAdapter",
]

ADAPTERS: dict[str, Adapter] = {"openai": OpenAIAdapter(), "ollama": OllamaAdapter(), "tei": TEIAdapter()}
