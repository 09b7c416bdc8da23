"""modelrouter: one OpenAI-compatible endpoint in front of many model backends."""

from ._version import __version__
from .app import Gateway, create_app
from .config import Config, ConfigError, load_config, parse_config
from .errors import GatewayError

__all__ = [
    "Config",
    "ConfigError",
    "Gateway",
    "GatewayError",
    "__version__",
    "create_app",
    "load_config",
    "parse_config",
]
