"""An onnxruntime session with the metadata the protocol publishes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..metadata import ModelMetadata, TensorSpec
from ..oip import ProtocolError


class OnnxModel:
    """Loads an ONNX file once and runs whole batches through it."""

    def __init__(self, path: str, name: str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.metadata = ModelMetadata(
            name=name,
            inputs=tuple(TensorSpec.from_onnx(n) for n in self.session.get_inputs()),
            outputs=tuple(TensorSpec.from_onnx(n) for n in self.session.get_outputs()),
        )
        self._output_names = [t.name for t in self.metadata.outputs]

    def validate(self, inputs: Mapping[str, np.ndarray]) -> None:
        expected = {t.name: t for t in self.metadata.inputs}
        missing = expected.keys() - inputs.keys()
        unknown = inputs.keys() - expected.keys()
        if missing or unknown:
            raise ProtocolError(f"model {self.metadata.name!r} takes inputs {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}")
        for name, array in inputs.items():
            expected[name].check(array)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self._output_names
        unknown = set(names) - set(self._output_names)
        if unknown:
            raise ProtocolError(f"model {self.metadata.name!r} has no output(s) {sorted(unknown)}")
        feed = {k: (v.astype(str) if v.dtype.kind == "O" else v) for k, v in inputs.items()}
        return dict(zip(names, self.session.run(names, feed)))
