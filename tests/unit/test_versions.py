"""Which version takes a request (`gateway.versions`), and what a model repository holds
(`gateway.repository`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.config import ConfigError, load
from gateway.repository import ModelRepository
from gateway.versions import choose, version_order


def test_choose_shares_requests_by_weight() -> None:
    weights = {"1": 90.0, "2": 10.0, "3": 0.0}
    picks = [choose(weights, u) for u in np.linspace(0, 1, 10_000, endpoint=False)]
    assert picks.count("2") == 1000 and picks.count("1") == 9000 and "3" not in picks
    assert choose({"1": 0.0}, 0.5) is None and choose({}, 0.1) is None
    assert choose({"10": 50.0, "9": 50.0}, 0.25) == "9"  # numeric order: 9 before 10
    assert sorted(["10", "2", "b", "1"], key=version_order) == ["1", "2", "10", "b"]


def write_repository(root: Path) -> Path:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").write_bytes(b"onnx")
    (root / "m" / "2").mkdir()  # no model file
    (root / "m" / "sluice.toml").write_text(
        'batch_size = 4\n[versions.1]\ntimeout_ms = 7.0\n[versions.3]\nupstream = ["http://127.0.0.1:9"]\n'
    )
    (root / "empty").mkdir()
    return root


def test_a_repository_lists_versions_with_their_settings_and_failures(tmp_path: Path) -> None:
    repository = ModelRepository(write_repository(tmp_path), {"batch_size": 16, "workers": 1})
    assert repository.names() == ["m"]
    found = repository.read("m")
    assert sorted(found.configs) == ["1", "3"]
    one, three = found.configs["1"], found.configs["3"]
    assert (one.version, one.batch_size, one.timeout_ms, one.path) == ("1", 4, 7.0, str(tmp_path / "m" / "1" / "model.onnx"))
    assert three.upstream == ("http://127.0.0.1:9",) and three.path is None and three.key == "m@3"
    assert "no model.onnx" in found.failed["2"]


def test_bad_settings_fail_every_version_with_the_reason(tmp_path: Path) -> None:
    root = write_repository(tmp_path)
    (root / "m" / "sluice.toml").write_text("batch_size = 0\n")
    found = ModelRepository(root).read("m")
    assert not found.configs and "batch_size" in found.failed["1"]
    (root / "m" / "sluice.toml").write_text("[versions.one]\nbatch_size = 2\n")
    assert "positive integers" in ModelRepository(root).read("m").failed["1"]


def test_the_config_takes_a_repository_and_refuses_a_name_in_both(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo")
    config = load(flags={"model_repository": str(root), "batch_size": 2}, demo=lambda: "demo.onnx")
    assert config.model_repository == str(root) and not config.models  # no demo model beside a repository
    assert config.model_defaults["batch_size"] == 2
    with pytest.raises(ConfigError, match="both in"):
        load(flags={"model_repository": str(root), "models": {"m": {"path": "x.onnx"}}})
    with pytest.raises(ConfigError, match="not a directory"):
        load(flags={"model_repository": str(tmp_path / "missing")})
