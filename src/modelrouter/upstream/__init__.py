"""Talking to backends: the transport interface and its aiohttp implementation."""

from .aiohttp_transport import AiohttpTransport
from .base import Transport, UpstreamRequest, UpstreamResponse

__all__ = ["AiohttpTransport", "Transport", "UpstreamRequest", "UpstreamResponse"]
