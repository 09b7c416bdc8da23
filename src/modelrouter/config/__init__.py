"""Configuration: typed values (``model``) and loading with validation (``load``)."""

from .load import ConfigError, load_config, load_default_config, parse_config
from .model import SERVICE_NAMES, Config, InstanceConfig, ServerConfig, ServiceConfig, Timeouts

__all__ = [
    "SERVICE_NAMES",
    "Config",
    "ConfigError",
    "InstanceConfig",
    "ServerConfig",
    "ServiceConfig",
    "Timeouts",
    "load_config",
    "load_default_config",
    "parse_config",
]
