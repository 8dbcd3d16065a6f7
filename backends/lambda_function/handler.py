"""An AWS Lambda handler that runs one ONNX model on a whole batch.

The batch contract: the event is an Open Inference Protocol request whose tensors
hold the whole batch (first dimension = batch size), in JSON; the result is an Open
Inference Protocol response in JSON. The onnxruntime session lives in a module
global, so only a cold start pays for loading the model; warm invocations reuse it.

Deployable on its own: it needs numpy and onnxruntime, nothing else from Sluice
(see README.md beside it). The model file is `SLUICE_MODEL_PATH`, by default
`model.onnx` next to this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
NAMES = {np.dtype(t): name for name, t in DTYPES.items()}
ONNX_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
}  # fmt: skip

_session: ort.InferenceSession | None = None


def model_path() -> Path:
    return Path(os.environ.get("SLUICE_MODEL_PATH") or Path(__file__).with_name("model.onnx"))


def session() -> ort.InferenceSession:
    """Loaded once per execution environment (the cold start), then reused."""
    global _session
    if _session is None:
        options = ort.SessionOptions()
        threads = int(os.environ.get("SLUICE_THREADS", "1"))
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        _session = ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
    return _session


def decode_inputs(event: dict[str, Any], expected: dict[str, str]) -> dict[str, np.ndarray]:
    """The request's tensors, checked against the model's inputs; ValueError says what is wrong."""
    if not isinstance(event, dict) or not isinstance(event.get("inputs"), list):
        raise ValueError("the event must be an Open Inference Protocol request with an 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    for tensor in event["inputs"]:
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if name not in expected:
            raise ValueError(f"unknown input {name!r}; the model takes {sorted(expected)}")
        if datatype not in DTYPES:
            raise ValueError(f"input {name!r}: unsupported datatype {datatype!r}")
        if datatype != expected[name]:
            raise ValueError(f"input {name!r}: datatype {datatype}, the model wants {expected[name]}")
        array = np.asarray(tensor.get("data"), dtype=DTYPES[datatype])
        if not isinstance(shape, list) or array.size != int(np.prod(shape)):
            raise ValueError(f"input {name!r}: {array.size} values do not fill shape {shape}")
        inputs[name] = array.reshape(shape)
    missing = set(expected) - set(inputs)
    if missing:
        raise ValueError(f"missing inputs {sorted(missing)}")
    return inputs


def encode_outputs(names: list[str], arrays: list[np.ndarray]) -> list[dict[str, Any]]:
    outputs = []
    for name, array in zip(names, arrays):
        array = np.asarray(array)
        outputs.append({"name": name, "datatype": NAMES[array.dtype], "shape": list(array.shape), "data": array.ravel().tolist()})
    return outputs


def metadata() -> dict[str, Any]:
    """The model's metadata as the Open Inference Protocol publishes it (-1: any size)."""
    model = session()

    def spec(node: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape]
        return {"name": node.name, "datatype": ONNX_TYPES.get(node.type, node.type), "shape": shape}

    return {
        "name": model_path().stem, "platform": "onnxruntime_onnx", "versions": ["1"],
        "inputs": [spec(i) for i in model.get_inputs()], "outputs": [spec(o) for o in model.get_outputs()],
    }  # fmt: skip


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("sluice") == "metadata":  # how a gateway learns what to validate
        return metadata()
    if isinstance(event, dict) and event.get("sluice") == "ping":  # keeps this environment warm, runs nothing
        session()
        return {"ok": True}
    model = session()
    expected = {i.name: ONNX_TYPES.get(i.type, i.type) for i in model.get_inputs()}
    inputs = decode_inputs(event, expected)
    wanted = [o["name"] for o in event.get("outputs") or []] or [o.name for o in model.get_outputs()]
    arrays = model.run(wanted, inputs)
    response: dict[str, Any] = {"model_name": event.get("model_name") or model_path().stem, "outputs": encode_outputs(wanted, arrays)}
    if "id" in event:
        response["id"] = event["id"]
    return response
