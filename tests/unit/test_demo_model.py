"""The embedded demo model: deterministic bytes, cached once, runnable, with the metadata it promises."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import backends.worker.demo as demo
from backends.worker.demo import build_demo_model, demo_model_path
from backends.metadata import ModelMetadata, TensorSpec
from backends.worker.onnx_model import OnnxModel

FILE_NAME = "demo-mlp-v1.onnx"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_model_path(tmp_path_factory.mktemp("demo-cache"))


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def numpy_reference(path: Path, x: np.ndarray) -> np.ndarray:
    """The MLP computed from the file's own weights: Gemm (x @ w + b), Relu between layers."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    layers = len([name for name in weights if name.startswith("w")])
    h = x.astype(np.float64)
    for i in range(layers):
        h = h @ weights[f"w{i}"].astype(np.float64) + weights[f"b{i}"].astype(np.float64)
        if i < layers - 1:
            h = np.maximum(h, 0.0)
    return h


def inputs(rows: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 256)).astype(np.float32)


# ---------------------------------------------------------------------------
# Building and caching


def test_build_gives_the_same_bytes_every_time() -> None:
    first, second = build_demo_model(), build_demo_model()
    assert isinstance(first, bytes)
    assert first == second
    # 256x1024 + 1024x1024 + 1024x10 FP32 weights: over 5 MB, so the weights are really in there.
    assert len(first) > (256 * 1024 + 1024 * 1024 + 1024 * 10) * 4


def test_built_model_is_a_valid_onnx_graph() -> None:
    model = onnx.load_from_string(build_demo_model())
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*model.graph.input, *model.graph.output)
    }
    assert shapes == {"x": ["N", 256], "y": ["N", 10]}
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert weights["w0"] == (256, 1024) and weights["w1"] == (1024, 1024) and weights["w2"] == (1024, 10)


def test_demo_model_path_builds_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "cache" / "sluice"  # does not exist yet
    path = demo_model_path(directory)
    assert path == directory / FILE_NAME
    assert path.read_bytes() == build_demo_model()
    # An old mtime, so that any rewrite would show even on a coarse-grained file system.
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))

    def must_not_build() -> bytes:
        raise AssertionError("the cached demo model was rebuilt")

    monkeypatch.setattr(demo, "build_demo_model", must_not_build)
    assert demo_model_path(directory) == path
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert sorted(p.name for p in directory.iterdir()) == [FILE_NAME]  # no temporary files left behind


def test_demo_model_path_mtime_unchanged_on_second_call(tmp_path: Path) -> None:
    path = demo_model_path(tmp_path)
    before = path.stat()
    again = demo_model_path(tmp_path)
    after = again.stat()
    assert again == path
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (before.st_mtime_ns, before.st_ino, before.st_size)


def test_failed_build_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bytes:
        raise RuntimeError("no onnx today")

    monkeypatch.setattr(demo, "build_demo_model", broken)
    with pytest.raises(RuntimeError, match="no onnx today"):
        demo_model_path(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_default_directory_follows_sluice_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setattr(demo, "build_demo_model", lambda: b"stand-in model bytes")
    path = demo_model_path()
    assert path == tmp_path / "c" / FILE_NAME
    assert path.read_bytes() == b"stand-in model bytes"


# ---------------------------------------------------------------------------
# Running it


@pytest.mark.parametrize("rows", [1, 5])
def test_runs_in_onnxruntime(model_path: Path, rows: int) -> None:
    x = inputs(rows)
    (y,) = session(model_path).run(["y"], {"x": x})
    assert y.dtype == np.float32
    assert y.shape == (rows, 10)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, numpy_reference(model_path, x), rtol=1e-4, atol=1e-4)


def test_same_input_same_output_across_sessions(model_path: Path) -> None:
    x = inputs(4)
    (first,) = session(model_path).run(["y"], {"x": x})
    (second,) = session(model_path).run(["y"], {"x": x})
    np.testing.assert_array_equal(first, second)
    # ... and a different input does give a different output.
    (other,) = session(model_path).run(["y"], {"x": inputs(4, seed=8)})
    assert not np.allclose(first, other)


def test_rows_are_independent(model_path: Path) -> None:
    """Batching must not change a row's answer: row i of a batch is row i run alone."""
    x = inputs(6)
    s = session(model_path)
    (batch,) = s.run(["y"], {"x": x})
    for i in range(len(x)):
        (alone,) = s.run(["y"], {"x": x[i : i + 1]})
        np.testing.assert_allclose(batch[i : i + 1], alone, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Metadata


def test_onnx_model_metadata(model_path: Path) -> None:
    model = OnnxModel(str(model_path), "demo")
    meta = model.metadata
    assert meta.name == "demo"
    assert meta.inputs == (TensorSpec("x", "FP32", (-1, 256)),)
    assert meta.outputs == (TensorSpec("y", "FP32", (-1, 10)),)
    assert meta.batchable is True
    assert meta.to_json() == {
        "name": "demo",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}],
    }
    again = ModelMetadata.from_json(meta.to_json())
    assert (again.inputs, again.outputs, again.platform, again.versions) == (
        meta.inputs,
        meta.outputs,
        meta.platform,
        meta.versions,
    )


def test_onnx_model_runs_like_a_plain_session(model_path: Path) -> None:
    model = OnnxModel(str(model_path), "demo")
    x = inputs(3)
    model.validate({"x": x})
    result = model.run({"x": x})
    assert list(result) == ["y"]
    (expected,) = session(model_path).run(["y"], {"x": x})
    np.testing.assert_array_equal(result["y"], expected)
