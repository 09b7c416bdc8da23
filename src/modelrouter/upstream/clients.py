"""The upstream clients by their config name (``upstream.client``), and the one function that builds the chosen one.

pyqwest and pyreqwest are imported only when chosen: they are optional dependencies (``modelrouter[pyqwest]``,
``modelrouter[pyreqwest]``).
"""

from __future__ import annotations

from ..config.model import UpstreamConfig
from .aiohttp_transport import AiohttpTransport
from .base import Transport

__all__ = ["CLIENTS", "build_transport"]

CLIENTS = ("aiohttp", "pyqwest", "pyreqwest")


def build_transport(config: UpstreamConfig, *, ca_pem: bytes | None = None) -> Transport:
    """The transport of ``config.client``; ``ca_pem``: CA certificates trusted besides the system's."""
    if config.client == "pyqwest":
        from .pyqwest_transport import PyqwestTransport

        return PyqwestTransport(ca_pem=ca_pem)
    if config.client == "pyreqwest":
        from .pyreqwest_transport import PyreqwestTransport

        return PyreqwestTransport(ca_pem=ca_pem)
    return AiohttpTransport(ca_pem=ca_pem)
