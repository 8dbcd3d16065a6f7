"""Watching one model version's data for drift, live: the reference, the windows, the scores.

Every answered batch's inputs and outputs go to `DriftWatch.observe`, scheduled on the
event loop after the batch's answers are set (off the requests' path: `ModelRunner`
observers). The reference comes from a file (raw arrays named after the model's inputs,
and outputs if there, or the sketches `sluice reference` writes), or from the first
`reference_requests` rows the version serves; outputs missing from a file are taken from
the first rows too. A window closes after `window_s` seconds or `window_requests` rows,
whichever comes first, is scored against the reference (`gateway.drift.score`), and its
scores become the metrics; the last report is `GET /admin/models/{m}/drift`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .drift import TensorSketch, Thresholds, score

log = logging.getLogger("sluice.drift")
MIN_WINDOW_ROWS = 50  # fewer rows than this in a window that ends by time: not scored


@dataclass(frozen=True)
class DriftConfig:
    """`[models.<name>.drift]`."""

    reference: str | None = None  # a .npz of raw arrays, or of sketches from `sluice reference`
    reference_requests: int = 1000  # without a file (or for outputs it lacks): the first rows served
    window_s: float = 300.0
    window_requests: int = 1000
    threshold: float = 0.1  # PSI, per feature
    ks_threshold: float = 0.1
    max_features: int = 32  # features of a tabular input sketched one by one; the rest summarised

    def check(self, model: str) -> None:
        if self.reference_requests < 1 or self.window_requests < 1 or self.window_s <= 0 or self.max_features < 1:
            raise ValueError(f"model {model!r}: [drift] reference_requests, window_requests, max_features >= 1 and window_s > 0")
        if self.threshold <= 0 or not 0 < self.ks_threshold <= 1:
            raise ValueError(f"model {model!r}: [drift] threshold > 0 and ks_threshold in (0, 1]")
        if self.reference is not None and not Path(self.reference).is_file():
            raise ValueError(f"model {model!r}: [drift] reference {self.reference!r} is not a file")


def save_reference(path: str | Path, tensors: dict[str, TensorSketch]) -> None:
    """Sketches, not data: kilobytes whatever the rows."""
    arrays: dict[str, np.ndarray] = {"__sluice_reference__": np.array(1)}
    meta = {name: {"kind": t.kind, "rows": t.rows} for name, t in tensors.items()}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    for name, tensor in tensors.items():
        for feature, blob in tensor.to_bytes().items():
            data = np.asarray(blob, dtype=np.int64) if isinstance(blob, list) else np.frombuffer(blob, dtype=np.uint8)
            arrays[f"{name}/{feature}"] = data
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_reference(path: str | Path, inputs: dict[str, tuple], outputs: dict[str, tuple], max_features: int) -> dict[str, TensorSketch]:
    """The reference in `path`: sketches, or raw arrays (sketched here). `inputs`/`outputs`:
    the model's tensor names -> shapes without the batch axis (-1 for any); a raw array
    that is not one of them, or whose shape disagrees, is an error naming it."""
    with np.load(path, allow_pickle=False) as data:
        if "__sluice_reference__" in data.files:
            meta = json.loads(bytes(data["__meta__"]).decode())
            docs: dict[str, dict] = {name: {} for name in meta}
            for key in data.files:
                if "/" in key:
                    name, feature = key.split("/", 1)
                    value = data[key]
                    docs[name][feature] = value.tolist() if feature == "__classes__" else value.tobytes()
            return {name: TensorSketch.from_bytes(meta[name]["kind"], docs[name], meta[name]["rows"]) for name in meta}
        tensors: dict[str, TensorSketch] = {}
        for name in data.files:
            kind = "input" if name in inputs else "output" if name in outputs else None
            if kind is None:
                raise ValueError(f"reference array {name!r} is none of the model's inputs {sorted(inputs)} or outputs {sorted(outputs)}")
            array = data[name]
            expected = (inputs if kind == "input" else outputs)[name]
            if array.ndim != len(expected) + 1 or any(e not in (-1, s) for e, s in zip(expected, array.shape[1:])):
                raise ValueError(f"reference array {name!r} has shape {array.shape}; the model's is [N, {', '.join(map(str, expected))}]")
            tensors[name] = TensorSketch(kind)
            tensors[name].update(name, array, max_features)
        missing = sorted(set(inputs) - set(tensors))
        if missing:
            raise ValueError(f"the reference has no array for the model's input(s) {missing}")
        return tensors


class DriftWatch:
    def __init__(self, model: str, version: str, config: DriftConfig, metrics, reference: dict[str, TensorSketch] | None,
                 outputs: list[str]) -> None:  # fmt: skip
        self.model, self.version, self.config, self.metrics = model, version, config, metrics
        self.thresholds = Thresholds(config.threshold, config.ks_threshold)
        self.reference = dict(reference or {})
        # What still comes from the first rows served: everything, or the outputs a file lacks.
        self.learning = {n: TensorSketch("output") for n in outputs if n not in self.reference}
        if not reference:
            self.learning = {}
        self.building = reference is None
        self.window: dict[str, TensorSketch] = {}
        self.window_started: float | None = None
        self.windows = 0
        self.last: dict | None = None
        # With replicas (`share`): windows are wall-clock slots of window_s, handed to the
        # cluster (`gateway.shared_drift`), which scores the merge of every replica's.
        self.slot: int | None = None
        self.finished: list[tuple[int, dict[str, TensorSketch]]] = []
        self.shared = False

    def share(self) -> None:
        """Windows by wall-clock slot from now on, scored across replicas."""
        self.shared = True

    def take_finished(self, wall: float) -> list[tuple[int, dict[str, TensorSketch]]]:
        """The slots over by `wall` (a slot with no batch after it ends here too)."""
        if self.slot is not None and self.window and int(wall // self.config.window_s) > self.slot:
            self.finished.append((self.slot, self.window))
            self.window = {}
        finished, self.finished = self.finished, []
        return finished

    def observe(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], now: float, wall: float = 0.0) -> None:
        """One answered batch (`wall`: the wall clock, which replicas share)."""
        rows = int(np.shape(next(iter(inputs.values())))[0]) if inputs else 0
        if self.building:
            self._add(self.reference, inputs, outputs)
            if next(iter(self.reference.values())).rows >= self.config.reference_requests:
                self.building = False
                log.info("drift reference taken", extra={"model": self.model, "version": self.version, "rows": rows})
            return
        if self.learning:
            self._add(self.learning, {}, {n: outputs[n] for n in self.learning if n in outputs})
            if min(t.rows for t in self.learning.values()) >= self.config.reference_requests:
                self.reference.update(self.learning)
                self.learning = {}
        if self.shared:
            slot = int(wall // self.config.window_s)
            if self.slot is not None and slot != self.slot and self.window:
                self.finished.append((self.slot, self.window))
                self.window = {}
            self.slot = slot
            self._add(self.window, inputs, outputs)
            return
        if self.window_started is None:
            self.window_started = now
        self._add(self.window, inputs, outputs)
        held = max((t.rows for t in self.window.values()), default=0)
        if held >= self.config.window_requests or (now - self.window_started >= self.config.window_s and held >= MIN_WINDOW_ROWS):
            self.close(now)
        elif now - self.window_started >= self.config.window_s:  # too few rows to judge: start again
            self.window, self.window_started = {}, now

    def _add(self, into: dict[str, TensorSketch], inputs: dict, outputs: dict) -> None:
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for name, array in tensors.items():
                if into is self.window and name not in self.reference:
                    continue
                sketch = into.get(name)
                if sketch is None:
                    sketch = into[name] = TensorSketch(kind)
                sketch.update(name, array, self.config.max_features)

    def close(self, now: float, window: dict[str, TensorSketch] | None = None, replicas: int = 1) -> None:
        """Score the window (this replica's, or the cluster's merged one), set the metrics, start the next."""
        merged = window is not None
        report = score(self.reference, window if merged else self.window, self.thresholds)
        self.windows += 1
        self.last = {"window": self.windows, "closed_at": now, "started_at": None if merged else self.window_started,
                     "replicas": replicas, "tensors": report}  # fmt: skip
        for name, entry in report.items():
            for statistic, value in entry["max"].items():
                if entry["kind"] == "input":
                    self.metrics.drift_score.labels(self.model, self.version, name, statistic).set(value)
                else:
                    self.metrics.output_drift.labels(self.model, self.version, name, statistic).set(value)
            self.metrics.drift_over.labels(self.model, self.version, name).set(entry["over_threshold"])
            if entry["over_threshold"]:
                log.warning("drift", extra={"model": self.model, "version": self.version, "tensor": name,
                                            "max": entry["max"], "worst_feature": entry.get("worst_feature")})  # fmt: skip
        if not merged:
            self.window, self.window_started = {}, None

    def to_json(self) -> dict:
        return {"version": self.version, "state": "building reference" if self.building else "watching",
                "reference_rows": {n: t.rows for n, t in self.reference.items()}, "thresholds":
                {"psi": self.thresholds.psi, "ks": self.thresholds.ks}, "windows": self.windows, "last": self.last}  # fmt: skip
