"""The gateway: the aiohttp application, protocol checks, configuration, metrics, the CLI."""

from .app import Gateway, create_app
from .config import ConfigError, GatewayConfig, ModelConfig
from .config import load as load_config
from .metrics import Metrics
from .runner import ModelRunner, RequestFailed

__all__ = [
    "ConfigError",
    "Gateway",
    "GatewayConfig",
    "Metrics",
    "ModelConfig",
    "ModelRunner",
    "RequestFailed",
    "create_app",
    "load_config",
]
