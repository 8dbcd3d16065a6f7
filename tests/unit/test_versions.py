"""Which version takes a request (`gateway.traffic`, `gateway.versions`), what a model
repository holds (`gateway.repository`), and how shadow answers are compared (`gateway.shadow`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.config import ConfigError, load
from gateway.repository import ModelRepository
from gateway.shadow import compare_outputs, should_copy
from gateway.traffic import TrafficPolicy, choose, sticky_point, version_order


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


def test_traffic_changes_are_checked_against_the_serving_versions() -> None:
    policy = TrafficPolicy({"1": 100.0})
    changed = policy.changed({"weights": {"1": 90, "2": 10}, "sticky_header": "X-User", "shadow": "3"}, {"1", "2", "3"})
    assert changed.weights == {"1": 90.0, "2": 10.0} and changed.sticky_header == "X-User" and changed.shadow == "3"
    for bad, why in [({"weights": {"1": 90, "2": 20}}, "sum to 100"), ({"weights": {"9": 100}}, "not serving"),
                     ({"weights": {"1": -5, "2": 105}}, ">= 0"), ({"shadow": "9"}, "not serving"),
                     ({"shadow_fraction": 1.5}, r"\[0, 1\]"), ({"colour": "red"}, "unknown")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            policy.changed(bad, {"1", "2", "3"})
    assert policy.without("1").weights == {} and changed.without("3").shadow is None


def test_a_sticky_value_always_draws_the_same_point() -> None:
    points = [sticky_point(f"user-{i}") for i in range(4000)]
    assert points == [sticky_point(f"user-{i}") for i in range(4000)]
    assert 0.45 < float(np.mean(np.asarray(points) < 0.5)) < 0.55  # spread evenly
    assert all(0 <= p < 1 for p in points)


def test_outputs_compared_row_by_row() -> None:
    primary = {"y": np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)}
    shadow = {"y": np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7]], np.float32)}  # row 1's top class moves
    c = compare_outputs(primary, shadow)
    assert (c.rows, c.top_differs, c.elements) == (3, 1, 6)
    assert c.abs_sum == pytest.approx(0.1 + 0.1 + 0.4 + 0.4) and c.abs_max == pytest.approx(0.4)
    assert compare_outputs(primary, {"y": np.zeros((3, 3))}).mismatched
    assert compare_outputs(primary, {"z": primary["y"]}).mismatched


def test_shadow_work_is_shed_first() -> None:
    assert should_copy(primary_waiting=0, shadow_waiting=0, primary_batch=8)
    assert not should_copy(primary_waiting=8, shadow_waiting=0, primary_batch=8)  # a batch's worth waits
    assert not should_copy(primary_waiting=0, shadow_waiting=1, primary_batch=8)  # the shadow is behind
