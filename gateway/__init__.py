"""The gateway: the aiohttp application, protocol checks, configuration, metrics, the CLI.

Its names load on first use (PEP 562), so that `sluice sim` and `sluice tune`, which need
none of the server, do not pay for importing it (aiohttp, the runner, the replicas).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Gateway, create_app
    from .config import ConfigError, GatewayConfig, ModelConfig
    from .config import load as load_config
    from .metrics import Metrics
    from .runner import ModelRunner, RequestFailed

_LAZY = {
    "Gateway": ("app", "Gateway"),
    "create_app": ("app", "create_app"),
    "ConfigError": ("config", "ConfigError"),
    "GatewayConfig": ("config", "GatewayConfig"),
    "ModelConfig": ("config", "ModelConfig"),
    "load_config": ("config", "load"),
    "Metrics": ("metrics", "Metrics"),
    "ModelRunner": ("runner", "ModelRunner"),
    "RequestFailed": ("runner", "RequestFailed"),
}


def __getattr__(name: str) -> Any:
    """Load a name's module on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


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
