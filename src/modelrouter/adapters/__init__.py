"""Backend dialects, one module each, and the name -> adapter table the config refers to."""

from .base import Adapter, SSEPassThrough, StreamTranslator
from .ollama import OllamaAdapter
from .openai import OpenAIAdapter

__all__ = ["ADAPTERS", "Adapter", "OllamaAdapter", "OpenAIAdapter", "SSEPassThrough", "StreamTranslator"]

ADAPTERS: dict[str, Adapter] = {"openai": OpenAIAdapter(), "ollama": OllamaAdapter()}
