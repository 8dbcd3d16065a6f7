"""Drift of a model version's inputs and outputs against a reference, from quantile sketches.

What is sketched, per tensor (`features`):
- a tabular input [N, F]: each feature (up to `max_features`; the rest summarised by the
  row's mean and standard deviation over them);
- a larger tensor ([N, C, H, W] and the like): per-row summaries, the mean and standard
  deviation per channel (for up to 16 channels) or per tensor, and the L2 norm;
- a classifier's output [N, K]: the predicted class (argmax), as counts per class;
  any other output as an input is.

Each feature is a KLL sketch (Apache DataSketches; Karnin, Lang, Liberty 2016: k = 200,
normalised rank error about 1.3%), so a reference and a window cost kilobytes whatever
their size, and sketches from several replicas merge. Scores of a window against the
reference, per feature:
- PSI, the population stability index over the reference's deciles: sum (w - r) ln(w/r)
  (0.1 is commonly read as a moderate shift, 0.2 as a large one);
- KS, the largest distance between the two CDFs, read from both sketches at the
  union of their quantiles: exact up to the two sketches' rank errors (about 0.027);
- for classes: PSI over the class proportions, and a chi-square test's p-value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SKETCH_K = 200
BINS = 10
FLOOR = 1e-4  # of a bin's share in PSI: an empty bin would make it infinite
CLASS_LIMIT = 1000  # an output [N, K] with 2 <= K <= this is read as a classifier's


def _kll():
    from datasketches import kll_floats_sketch  # loads only where drift is watched

    return kll_floats_sketch


def features(name: str, array: np.ndarray, max_features: int) -> dict[str, np.ndarray]:
    """A tensor's sketched features: name -> one value per row."""
    a = np.asarray(array)
    if a.dtype.kind not in "biuf":
        return {}
    a = a.astype(np.float64, copy=False)
    rows = a.shape[0] if a.ndim else 1
    if a.ndim <= 1:
        return {name: a.reshape(rows)}
    if a.ndim == 2:
        width = a.shape[1]
        out = {f"{name}[{j}]": a[:, j] for j in range(min(width, max_features))}
        if width > max_features:
            rest = a[:, max_features:]
            out[f"{name}[{max_features}:].mean"] = rest.mean(axis=1)
            out[f"{name}[{max_features}:].std"] = rest.std(axis=1)
        return out
    flat = a.reshape(rows, -1)
    out = {f"{name}.norm": np.sqrt((flat * flat).sum(axis=1))}
    if a.ndim == 4 and a.shape[1] <= 16:  # channels first
        per_channel = a.reshape(rows, a.shape[1], -1)
        for c in range(a.shape[1]):
            out[f"{name}[{c}].mean"] = per_channel[:, c].mean(axis=1)
            out[f"{name}[{c}].std"] = per_channel[:, c].std(axis=1)
    else:
        out[f"{name}.mean"] = flat.mean(axis=1)
        out[f"{name}.std"] = flat.std(axis=1)
    return out


def is_classifier(array: np.ndarray) -> bool:
    a = np.asarray(array)
    return a.ndim == 2 and 2 <= a.shape[1] <= CLASS_LIMIT and a.dtype.kind == "f"


@dataclass
class TensorSketch:
    """One tensor's sketches: per feature a KLL sketch, or per class a count."""

    kind: str  # "input" or "output"
    sketches: dict[str, object] = field(default_factory=dict)
    classes: np.ndarray | None = None  # counts per predicted class, for a classifier's output
    rows: int = 0

    def update(self, name: str, array: np.ndarray, max_features: int) -> None:
        self.rows += int(np.shape(array)[0]) if np.ndim(array) else 1
        if self.kind == "output" and is_classifier(array):
            counts = np.bincount(np.argmax(array, axis=1), minlength=np.shape(array)[1])
            self.classes = counts if self.classes is None else self.classes + counts
            return
        for feature, values in features(name, array, max_features).items():
            sketch = self.sketches.get(feature)
            if sketch is None:
                sketch = self.sketches[feature] = _kll()(SKETCH_K)
            sketch.update(np.ascontiguousarray(values, dtype=np.float32))

    def merge(self, other: TensorSketch) -> None:
        self.rows += other.rows
        for feature, sketch in other.sketches.items():
            mine = self.sketches.get(feature)
            if mine is None:
                self.sketches[feature] = _kll().deserialize(sketch.serialize())
            else:
                mine.merge(sketch)
        if other.classes is not None:
            self.classes = other.classes.copy() if self.classes is None else _add_counts(self.classes, other.classes)

    def to_bytes(self) -> dict[str, bytes | list[int]]:
        out: dict[str, bytes | list[int]] = {f: bytes(s.serialize()) for f, s in self.sketches.items()}
        if self.classes is not None:
            out["__classes__"] = self.classes.tolist()
        return out

    @classmethod
    def from_bytes(cls, kind: str, doc: dict, rows: int) -> TensorSketch:
        made = cls(kind, rows=rows)
        for feature, blob in doc.items():
            if feature == "__classes__":
                made.classes = np.asarray(blob, dtype=np.int64)
            else:
                made.sketches[feature] = _kll().deserialize(bytes(blob))
        return made


def _add_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(len(a), len(b))
    return np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b)))


def psi(reference, window) -> float:
    """PSI of a window's sketch against the reference's deciles."""
    splits = np.unique(np.asarray(reference.get_quantiles([i / BINS for i in range(1, BINS)]), dtype=np.float64))
    r = np.diff(np.concatenate([[0.0], reference.get_cdf(splits.astype(np.float32).tolist())[:-1], [1.0]]))
    w = np.diff(np.concatenate([[0.0], window.get_cdf(splits.astype(np.float32).tolist())[:-1], [1.0]]))
    return _psi(r, w)


def _psi(r: np.ndarray, w: np.ndarray) -> float:
    r, w = np.maximum(r, FLOOR), np.maximum(w, FLOOR)
    return float(np.sum((w - r) * np.log(w / r)))


def ks(reference, window) -> float:
    """The largest distance between the two sketches' CDFs."""
    ranks = np.linspace(0.0, 1.0, 65)
    points = np.unique(np.concatenate([reference.get_quantiles(ranks.tolist()), window.get_quantiles(ranks.tolist())]))
    points = points.astype(np.float32).tolist()
    fr = np.asarray(reference.get_cdf(points))[:-1]
    fw = np.asarray(window.get_cdf(points))[:-1]
    return float(np.max(np.abs(fr - fw))) if len(points) else 0.0


def class_scores(reference: np.ndarray, window: np.ndarray) -> dict[str, float]:
    """PSI of the predicted-class proportions, and the chi-square test's p-value."""
    size = max(len(reference), len(window))
    r, w = np.pad(reference, (0, size - len(reference))).astype(float), np.pad(window, (0, size - len(window))).astype(float)
    if r.sum() == 0 or w.sum() == 0:
        return {"psi": 0.0, "chi2_pvalue": 1.0}
    expected = np.maximum(r / r.sum(), FLOOR) * w.sum()
    statistic = float(np.sum((w - expected) ** 2 / expected))
    from scipy.special import chdtrc

    return {"psi": _psi(r / r.sum(), w / w.sum()), "chi2_pvalue": float(chdtrc(max(size - 1, 1), statistic))}


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks: float = 0.2


def score(reference: dict[str, TensorSketch], window: dict[str, TensorSketch], thresholds: Thresholds) -> dict:
    """Per tensor: each feature's PSI and KS (or the classes' scores), the largest, and how
    many features are over their threshold."""
    report: dict = {}
    for name, win in window.items():
        ref = reference.get(name)
        if ref is None:
            continue
        entry: dict = {"kind": win.kind, "rows": win.rows, "features": {}}
        if win.classes is not None and ref.classes is not None:
            entry["classes"] = class_scores(ref.classes, win.classes)
            entry["max"] = {"psi": entry["classes"]["psi"]}
            entry["over_threshold"] = int(entry["classes"]["psi"] > thresholds.psi)
        else:
            for feature, sketch in win.sketches.items():
                base = ref.sketches.get(feature)
                if base is None or base.is_empty() or sketch.is_empty():
                    continue
                entry["features"][feature] = {"psi": round(psi(base, sketch), 6), "ks": round(ks(base, sketch), 6)}
            values = entry["features"].values()
            entry["max"] = {"psi": max((v["psi"] for v in values), default=0.0), "ks": max((v["ks"] for v in values), default=0.0)}
            entry["over_threshold"] = sum(v["psi"] > thresholds.psi or v["ks"] > thresholds.ks for v in values)
            worst = max(entry["features"].items(), key=lambda kv: kv[1]["psi"], default=None)
            entry["worst_feature"] = worst[0] if worst else None
        report[name] = entry
    return report
