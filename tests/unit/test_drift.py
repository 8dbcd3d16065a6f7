"""Drift scores from sketches (`gateway.drift`) and the watch over windows (`gateway.drift_watch`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gateway.config import ConfigError, load
from gateway.drift import TensorSketch, Thresholds, features, ks, psi, score
from gateway.drift_watch import DriftConfig, DriftWatch, load_reference, save_reference
from gateway.metrics import Metrics


def sketch_of(x: np.ndarray, kind: str = "input", name: str = "x") -> dict[str, TensorSketch]:
    tensor = TensorSketch(kind)
    for i in range(0, len(x), 32):  # batch by batch, as served
        tensor.update(name, x[i : i + 32], 32)
    return {name: tensor}


def test_features_of_tabular_wide_and_image_tensors() -> None:
    rng = np.random.default_rng(0)
    assert sorted(features("x", rng.standard_normal((5, 3)), 32)) == ["x[0]", "x[1]", "x[2]"]
    wide = features("x", rng.standard_normal((5, 40)), 32)
    assert len(wide) == 34 and "x[32:].mean" in wide and "x[32:].std" in wide
    pixels = rng.standard_normal((5, 3, 8, 8))
    image = features("img", pixels, 32)
    assert sorted(image) == ["img.norm", "img[0].mean", "img[0].std", "img[1].mean", "img[1].std", "img[2].mean", "img[2].std"]
    np.testing.assert_allclose(image["img[1].mean"], pixels[:, 1].mean(axis=(1, 2)))
    np.testing.assert_allclose(image["img.norm"], np.linalg.norm(pixels.reshape(5, -1), axis=1))
    assert features("s", np.array(["a", "b"]), 32) == {}


def test_sketch_scores_agree_with_exact_ones_within_the_sketches_error() -> None:
    rng = np.random.default_rng(1)
    reference, window = rng.standard_normal(50_000), rng.normal(0.3, 1.2, 5_000)
    ref, win = sketch_of(reference[:, None])["x"].sketches["x[0]"], sketch_of(window[:, None])["x"].sketches["x[0]"]
    exact_ks = stats.ks_2samp(reference, window).statistic
    error = ref.normalized_rank_error(False) + win.normalized_rank_error(False)
    assert abs(ks(ref, win) - exact_ks) <= error
    deciles = np.quantile(reference, np.arange(1, 10) / 10)
    r = np.diff(np.concatenate([[0], np.searchsorted(np.sort(reference), deciles) / len(reference), [1]]))
    w = np.diff(np.concatenate([[0], np.searchsorted(np.sort(window), deciles) / len(window), [1]]))
    exact_psi = float(np.sum((w - r) * np.log(w / r)))
    assert psi(ref, win) == pytest.approx(exact_psi, abs=0.03)


def windows_over(reference: dict, make_window, count: int, thresholds: Thresholds) -> int:
    return sum(score(reference, make_window(i), thresholds)["x"]["over_threshold"] > 0 for i in range(count))


def test_undrifted_windows_stay_under_the_thresholds_and_shifts_pass_them() -> None:
    """8 features, a reference of 20000 rows, windows of 1000: false alarms measured over 100
    windows (the README quotes the rate); a mean shift of half a standard deviation in one
    feature and a change of scale each pass a threshold in the first window, naming the feature."""
    rng = np.random.default_rng(2)
    reference = sketch_of(rng.standard_normal((20_000, 8)))
    thresholds = Thresholds(psi=0.1, ks=0.1)
    alarms = windows_over(reference, lambda i: sketch_of(rng.standard_normal((1000, 8))), 100, thresholds)
    assert alarms <= 2, alarms
    shifted = rng.standard_normal((1000, 8))
    shifted[:, 5] += 0.5
    report = score(reference, sketch_of(shifted), thresholds)["x"]
    assert report["over_threshold"] >= 1 and report["worst_feature"] == "x[5]" and report["max"]["psi"] > 0.1
    scaled = rng.standard_normal((1000, 8))
    scaled[:, 2] *= 1.5
    report = score(reference, sketch_of(scaled), thresholds)["x"]
    assert report["worst_feature"] == "x[2]" and report["max"]["psi"] > 0.1


def test_a_change_of_class_balance_moves_the_output_score() -> None:
    rng = np.random.default_rng(3)

    def outputs(weights: list[float], n: int) -> np.ndarray:
        classes = rng.choice(len(weights), size=n, p=weights)
        logits = rng.standard_normal((n, len(weights)))
        logits[np.arange(n), classes] += 10
        return logits

    reference = sketch_of(outputs([0.25] * 4, 20_000), "output", "y")
    same = score(reference, sketch_of(outputs([0.25] * 4, 1000), "output", "y"), Thresholds())["y"]
    moved = score(reference, sketch_of(outputs([0.55, 0.15, 0.15, 0.15], 1000), "output", "y"), Thresholds())["y"]
    assert same["classes"]["psi"] < 0.02 and same["over_threshold"] == 0
    assert moved["classes"]["psi"] > 0.1 and moved["classes"]["chi2_pvalue"] < 1e-6 and moved["over_threshold"] == 1


def test_the_watch_takes_its_reference_then_scores_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    metrics = Metrics()
    watch = DriftWatch("m", "1", DriftConfig(reference_requests=2000, window_requests=1000), metrics, None, ["y"])
    t = 0.0
    for _ in range(2000 // 50 + 1000 // 50):
        x = rng.standard_normal((50, 4))
        watch.observe({"x": x}, {"y": x @ rng.standard_normal((4, 3))}, t)
        t += 0.1
    assert not watch.building and watch.windows == 1
    read = metrics.registry.get_sample_value
    assert read("sluice_drift_score", {"model": "m", "version": "1", "tensor": "x", "statistic": "psi"}) < 0.1
    assert read("sluice_drift_features_over_threshold", {"model": "m", "version": "1", "tensor": "x"}) == 0
    # a classifier's output: the class distribution
    assert read("sluice_output_drift_score", {"model": "m", "version": "1", "output": "y", "statistic": "psi"}) is not None
    # The reference written as sketches and read back scores alike.
    path = tmp_path / "ref.npz"
    save_reference(path, watch.reference)
    again = load_reference(path, {"x": (4,)}, {"y": (3,)}, 32)
    window = sketch_of(rng.standard_normal((1000, 4)) + 1.0)
    assert score(again, window, Thresholds())["x"]["max"] == score(watch.reference, window, Thresholds())["x"]["max"]


def test_a_reference_file_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ref.npz"
    np.savez(path, x=np.zeros((10, 5)))
    with pytest.raises(ValueError, match=r"shape \(10, 5\)"):
        load_reference(path, {"x": (4,)}, {}, 32)
    np.savez(path, z=np.zeros((10, 4)))
    with pytest.raises(ValueError, match="'z' is none of the model's inputs"):
        load_reference(path, {"x": (4,)}, {}, 32)
    with pytest.raises(ConfigError, match="not a file"):
        load(flags={"models": {"m": {"path": "m.onnx", "drift": {"reference": str(tmp_path / "missing.npz")}}}})
    with pytest.raises(ConfigError, match="window_requests"):
        load(flags={"models": {"m": {"path": "m.onnx", "drift": {"window_requests": 0}}}})
    with pytest.raises(ConfigError, match="unknown \\[drift\\]"):
        load(flags={"models": {"m": {"path": "m.onnx", "drift": {"colour": 1}}}})


def test_sluice_reference_sketches_inputs_and_computes_the_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main
    from support import linear_model

    model = linear_model(tmp_path / "lin.onnx", 1.0)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x)
    with pytest.raises(SystemExit) as done:
        main(["reference", "--model", str(model), "--data", str(tmp_path / "train.npz"), "--output", str(tmp_path / "ref.npz")])
    assert done.value.code == 0, capsys.readouterr().err
    reference = load_reference(tmp_path / "ref.npz", {"x": (4,)}, {"y": (3,)}, 32)
    assert reference["x"].rows == 3000 and reference["y"].rows == 3000
    # the outputs were computed by the model: their classes are those of x @ W
    expected = np.bincount(np.argmax(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), axis=1), minlength=3)
    np.testing.assert_array_equal(reference["y"].classes, expected)
    np.savez(tmp_path / "bad.npz", z=x)
    with pytest.raises(SystemExit) as done:
        main(["reference", "--model", str(model), "--data", str(tmp_path / "bad.npz"), "--output", str(tmp_path / "r2.npz")])
    assert done.value.code == 2 and "'z'" in capsys.readouterr().err
