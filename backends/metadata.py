"""Model metadata in the shape the Open Inference Protocol publishes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .oip import DTYPES, ProtocolError

# onnxruntime's type strings, e.g. "tensor(float)".
_ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor; -1 in `shape` marks a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TensorSpec:
        return cls(doc["name"], doc["datatype"], tuple(int(d) for d in doc["shape"]))

    @classmethod
    def from_onnx(cls, node: Any) -> TensorSpec:
        """From an onnxruntime NodeArg: symbolic or unknown dimensions become -1."""
        try:
            datatype = _ONNX_TYPES[node.type]
        except KeyError:
            raise ValueError(f"{node.name}: unsupported ONNX type {node.type}") from None
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
        return cls(node.name, datatype, shape)

    def check(self, array: np.ndarray) -> None:
        """Raise ProtocolError unless `array` fits this spec."""
        if array.dtype != DTYPES[self.datatype] and not (self.datatype == "BYTES" and array.dtype.kind in "OSU"):
            raise ProtocolError(f"input {self.name!r} must be {self.datatype}")
        if len(array.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, array.shape)
        ):
            raise ProtocolError(f"input {self.name!r} has shape {list(array.shape)}, the model takes {list(self.shape)}")


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = "onnxruntime_onnx"
    versions: tuple[str, ...] = ("1",)
    parameters: dict[str, Any] = field(default_factory=dict)

    batchable: bool = field(init=False)  # every input and output has a free first (batch) dimension

    def __post_init__(self) -> None:
        free = all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))
        object.__setattr__(self, "batchable", free)  # derived once: read on every request

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ModelMetadata:
        return cls(
            name=doc["name"],
            inputs=tuple(TensorSpec.from_json(t) for t in doc.get("inputs", [])),
            outputs=tuple(TensorSpec.from_json(t) for t in doc.get("outputs", [])),
            platform=doc.get("platform", ""),
            versions=tuple(doc.get("versions") or ("1",)),
        )

    def renamed(self, name: str) -> ModelMetadata:
        return ModelMetadata(name, self.inputs, self.outputs, self.platform, self.versions, self.parameters)

    def versioned(self, version: str) -> ModelMetadata:
        """As one version of a model serves it: that version alone."""
        return ModelMetadata(self.name, self.inputs, self.outputs, self.platform, (version,), self.parameters)
