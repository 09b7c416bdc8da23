"""Talking to backends: the transport interface, its aiohttp, pyqwest and pyreqwest implementations (``clients``)."""

from .aiohttp_transport import AiohttpTransport
from .base import Transport, UpstreamRequest, UpstreamResponse

__all__ = ["AiohttpTransport", "Transport", "UpstreamRequest", "UpstreamResponse"]
