"""A model repository in Triton's layout: `DIR/<model>/<version>/model.onnx`.

`DIR/<model>/sluice.toml`, if there, holds the model's settings: the keys of a
`[models.<name>]` table at its top level, a `[versions.<v>]` table per version
whose keys override them for that version, and a `[traffic]` table (weights,
sticky_header, shadow, shadow_fraction: `gateway.traffic`). A version served by an upstream server or
a function has no directory of its own: its table declares it (`upstream = [...]` or a
`[versions.<v>.faas]` table). Versions are positive integers, as in Triton.

The repository is read when the gateway starts and again at every load
(`POST /v2/repository/models/{m}/load`), so versions added since are picked up. A
version that cannot be served (no model.onnx, settings that do not check) is kept
with the reason, for the repository index.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, ModelConfig, model_config

MODEL_FILE = "model.onnx"
SETTINGS_FILE = "sluice.toml"


@dataclass
class RepositoryModel:
    """One model's versions as the repository holds them: configs to serve, and the failures."""

    name: str
    configs: dict[str, ModelConfig] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # version -> why it cannot be served
    traffic: dict[str, Any] = field(default_factory=dict)  # its [traffic] table (`gateway.traffic`)


class ModelRepository:
    def __init__(self, root: str | Path, defaults: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.defaults = dict(defaults or {})  # [batching] and the command line's model flags
        if not self.root.is_dir():
            raise ConfigError(f"model repository {str(self.root)!r} is not a directory")

    def names(self) -> list[str]:
        """The models: directories holding a version directory or a sluice.toml."""
        return sorted(
            d.name for d in self.root.iterdir()
            if d.is_dir() and not d.name.startswith(".")
            and ((d / SETTINGS_FILE).is_file() or any(v.is_dir() and v.name.isdigit() for v in d.iterdir()))
        )  # fmt: skip

    def read(self, name: str) -> RepositoryModel:
        """The model's versions now: a directory per version, plus those its settings declare."""
        directory = self.root / name
        if not directory.is_dir():
            raise ConfigError(f"model {name!r} is not in the repository {str(self.root)!r}")
        found = RepositoryModel(name)
        try:
            settings = self._settings(directory)
        except ConfigError as exc:
            for version in self._version_dirs(directory):
                found.failed[version] = str(exc)
            return found
        declared = settings.pop("versions", {})
        found.traffic = settings.pop("traffic", {})
        versions = set(self._version_dirs(directory)) | set(declared)
        for version in sorted(versions, key=int):
            values = {**self.defaults, **settings, **declared.get(version, {})}
            model_file = directory / version / MODEL_FILE
            if not any(k in values for k in ("upstream", "registered", "faas")):
                if not model_file.is_file():
                    found.failed[version] = f"no {MODEL_FILE} in {directory / version}"
                    continue
                values["path"] = str(model_file)
            try:
                config = model_config(name, values, version)
                config.check()
            except ConfigError as exc:
                found.failed[version] = str(exc)
                continue
            found.configs[version] = config
        return found

    @staticmethod
    def _version_dirs(directory: Path) -> list[str]:
        return [v.name for v in directory.iterdir() if v.is_dir() and v.name.isdigit() and int(v.name) > 0]

    @staticmethod
    def _settings(directory: Path) -> dict[str, Any]:
        path = directory / SETTINGS_FILE
        if not path.is_file():
            return {}
        try:
            with open(path, "rb") as f:
                settings = tomllib.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        if not isinstance(settings.get("traffic", {}), dict):
            raise ConfigError(f"{path}: [traffic] must be a table")
        declared = settings.get("versions", {})
        if not isinstance(declared, dict) or not all(
            isinstance(v, dict) and k.isdigit() and int(k) > 0 for k, v in declared.items()
        ):  # fmt: skip
            raise ConfigError(f"{path}: [versions.<v>] tables must be named by positive integers")
        return settings
