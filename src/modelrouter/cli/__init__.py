"""The command line, one module per command group: ``main`` (serve, check-config, and the dispatcher), ``store``
(store init, keys, admin users), ``config`` (config versions in the store)."""

from .main import main

__all__ = ["main"]
