"""`sluice reference`: a drift reference written ahead of time, as sketches.

    sluice reference --model model.onnx --data train.npz --output reference.npz

`--data` holds arrays named after the model's inputs (rows along the first axis), and
optionally its outputs; outputs it lacks are computed by running the model on the inputs
(onnxruntime, in chunks), so the output reference needs no live traffic. The result is
kilobytes of KLL sketches (`gateway.drift`), read by `[models.<name>.drift] reference`.
`--model` may also name a model of a config (`--config FILE --model NAME`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .drift import TensorSketch
from .drift_watch import DriftConfig, save_reference

CHUNK_ROWS = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an ONNX file, or with --config the name of a model in it")
    parser.add_argument("--config", help="the TOML file `sluice serve --config` reads (for --model NAME and its [drift])")
    parser.add_argument("--data", required=True, help=".npz of arrays named after the model's inputs (and outputs)")
    parser.add_argument("--output", required=True, help="where to write the reference (.npz of sketches)")
    parser.add_argument("--max-features", type=int, help="features sketched one by one (default: the model's [drift], else 32)")


def _model_path(args: argparse.Namespace) -> tuple[str, int]:
    max_features = DriftConfig().max_features
    if args.config is None:
        return args.model, args.max_features or max_features
    from . import config as config_mod

    config = config_mod.load(args.config)
    model = config.models.get(args.model)
    if model is None or model.path is None:
        raise ValueError(f"no model {args.model!r} served from an ONNX file in {args.config}")
    if model.drift is not None:
        max_features = model.drift.max_features
    return model.path, args.max_features or max_features


def build(model_path: str, data: dict[str, np.ndarray], max_features: int) -> dict[str, TensorSketch]:
    """The reference's sketches: the data's inputs, and outputs (given, or computed)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    unknown = sorted(set(data) - set(inputs) - set(outputs))
    if unknown:
        raise ValueError(f"array(s) {unknown} are none of the model's inputs {sorted(inputs)} or outputs {outputs}")
    missing = sorted(set(inputs) - set(data))
    if missing:
        raise ValueError(f"the data has no array for the model's input(s) {missing}")
    rows = {len(a) for name, a in data.items() if name in inputs}
    if len(rows) != 1:
        raise ValueError(f"the inputs' rows differ: {sorted(rows)}")
    tensors = {name: TensorSketch("input") for name in inputs}
    tensors.update({name: TensorSketch("output") for name in outputs})
    computed = [name for name in outputs if name not in data]
    for start in range(0, rows.pop(), CHUNK_ROWS):
        chunk = {name: data[name][start : start + CHUNK_ROWS] for name in inputs}
        for name, array in chunk.items():
            tensors[name].update(name, array, max_features)
        answers = dict(zip(computed, session.run(computed, chunk))) if computed else {}
        for name in outputs:
            array = answers[name] if name in answers else data[name][start : start + CHUNK_ROWS]
            tensors[name].update(name, array, max_features)
    return tensors


def run(args: argparse.Namespace) -> int:
    try:
        model_path, max_features = _model_path(args)
        with np.load(args.data, allow_pickle=False) as loaded:
            data = {name: loaded[name] for name in loaded.files}
        tensors = build(model_path, data, max_features)
        save_reference(args.output, tensors)
    except (OSError, ValueError) as exc:
        print(f"sluice reference: {exc}", file=sys.stderr)
        return 2
    rows = {name: t.rows for name, t in tensors.items()}
    print(f"wrote {args.output} ({Path(args.output).stat().st_size} bytes): rows {rows}")
    return 0
