"""The embedded demo model: a deterministic MLP built with the onnx package.

FP32 input `x` [N, 256] -> 1024 -> 1024 -> 10, output `y`. Its 1024x1024 layer
makes a single-row inference memory-bound, so batching pays as it does for real
models. Built once into a cache directory; the file name carries a version so a
change here never reuses a stale file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

DEMO_NAME = "demo"
_VERSION = 1
_LAYERS = (256, 1024, 1024, 10)
_SEED = 20201


def cache_dir() -> Path:
    root = os.environ.get("SLUICE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sluice"
    )
    return Path(root)


def build_demo_model() -> bytes:
    """Serialise the demo MLP; the same bytes on every call."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(_SEED)
    nodes, inits = [], []
    current = "x"
    for i, (fan_in, fan_out) in enumerate(zip(_LAYERS[:-1], _LAYERS[1:])):
        weight = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        last = i == len(_LAYERS) - 2
        out = "y" if last else f"h{i}"
        gemm_out = out if last else f"g{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_out], name=f"dense{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [out], name=f"relu{i}"))
        current = out
    graph = helper.make_graph(
        nodes,
        "sluice_demo_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", _LAYERS[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", _LAYERS[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sluice")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def demo_model_path(directory: Path | None = None) -> Path:
    """Return the demo model's path, building it on first use (atomically)."""
    directory = directory or cache_dir()
    path = directory / f"demo-mlp-v{_VERSION}.onnx"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".onnx.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(build_demo_model())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
