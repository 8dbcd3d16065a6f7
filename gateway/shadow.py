"""Shadow traffic: a version that gets copies of requests, answers nobody, and is compared.

A copy is made only when the gateway can spare it: never while the primary version
has a backlog or the shadow version still works on earlier copies (shadow work is
shed first, `should_copy`), and it is queued at the lowest priority. The primary's
answer never waits for the copy. When both are answered, their outputs are compared
(`compare_outputs`): the share of rows whose top class differs (for outputs with a
class axis) and the mean and largest absolute difference. Latency and errors of the
copies are recorded beside.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .runner import RequestFailed

if TYPE_CHECKING:
    from .app import Gateway
    from .served import ServedModel

SHADOW_PRIORITY = -(2**31)  # below every request a client can send


@dataclass(frozen=True)
class Comparison:
    rows: int
    top_differs: int  # rows whose top class differs (outputs with a class axis)
    abs_sum: float
    elements: int
    abs_max: float
    mismatched: bool = False  # the outputs' names or shapes differ


def compare_outputs(primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> Comparison:
    """How far the shadow's outputs are from the primary's, for one request."""
    names = sorted(primary)
    rows = int(np.shape(primary[names[0]])[0]) if names and np.ndim(primary[names[0]]) >= 1 else 1
    if sorted(shadow) != names or any(np.shape(primary[n]) != np.shape(shadow[n]) for n in names):
        return Comparison(rows, rows, 0.0, 0, 0.0, mismatched=True)
    differs = np.zeros(rows, dtype=bool)
    abs_sum, elements, abs_max = 0.0, 0, 0.0
    for name in names:
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            differs |= (a != b).reshape(rows, -1).any(axis=1) if a.size else differs
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        gap = np.abs(a - b)
        abs_sum, elements = abs_sum + float(gap.sum()), elements + gap.size
        abs_max = max(abs_max, float(gap.max())) if gap.size else abs_max
        if a.ndim >= 2 and a.shape[-1] > 1:  # a class axis: the top class per row
            top = np.argmax(a, axis=-1) != np.argmax(b, axis=-1)
            differs |= top.reshape(rows, -1).any(axis=1)
    return Comparison(rows, int(differs.sum()), abs_sum, elements, abs_max)


def should_copy(primary_waiting: int, shadow_waiting: int, primary_batch: int) -> bool:
    """Shed shadow work first: copy only while the primary holds less than one batch and
    the shadow has nothing of its own waiting."""
    return primary_waiting < max(1, primary_batch) and shadow_waiting == 0


@dataclass
class ShadowStats:
    """A model's shadow comparisons so far (what `GET /admin/models/{m}/traffic` shows)."""

    copied: int = 0
    shed: int = 0
    errors: int = 0
    compared: int = 0
    rows: int = 0
    top_differs: int = 0
    mismatched: int = 0
    abs_sum: float = 0.0
    elements: int = 0
    abs_max: float = 0.0
    latency_s: list[float] = field(default_factory=list)  # of the last copies (at most 1000)

    def record(self, comparison: Comparison | None, latency_s: float | None) -> None:
        if latency_s is not None:
            self.latency_s = (self.latency_s + [latency_s])[-1000:]
        if comparison is None:
            return
        self.compared += 1
        self.rows += comparison.rows
        self.top_differs += comparison.top_differs
        self.mismatched += comparison.mismatched
        self.abs_sum += comparison.abs_sum
        self.elements += comparison.elements
        self.abs_max = max(self.abs_max, comparison.abs_max)

    def to_json(self) -> dict:
        latency = np.asarray(self.latency_s)
        return {
            "copied": self.copied, "shed": self.shed, "errors": self.errors, "compared": self.compared,
            "rows": self.rows, "top_class_differs_share": self.top_differs / self.rows if self.rows else None,
            "mean_abs_difference": self.abs_sum / self.elements if self.elements else None,
            "max_abs_difference": self.abs_max if self.elements else None,
            "mismatched": self.mismatched,
            "latency_p50_ms": round(float(np.quantile(latency, 0.5)) * 1e3, 3) if len(latency) else None,
            "latency_p99_ms": round(float(np.quantile(latency, 0.99)) * 1e3, 3) if len(latency) else None,
        }  # fmt: skip


class Shadowing:
    """The live side: copies requests to a model's shadow version, and compares the answers."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._pending: set[asyncio.Task] = set()  # comparisons waiting for both answers

    def copy(self, model: ServedModel, request_id: str, inputs: dict, rows: int, deadline: float) -> asyncio.Future | None:
        """A copy of the request for the model's shadow version, when the policy samples it
        and the gateway can spare it (`should_copy`); queued at the lowest priority."""
        gateway = self.gateway
        versions = gateway.models.get(model.name)
        shadow = versions.shadow_for(model, random.random()) if versions is not None else None
        if shadow is None or shadow.retired:
            return None
        limit = int(model.runner.core.policy.limits(time.monotonic()).max_size)
        future = None
        if should_copy(model.runner.waiting, shadow.runner.waiting, limit):
            try:
                future = shadow.runner.submit(f"{request_id}.shadow", inputs, rows, deadline, priority=SHADOW_PRIORITY,
                                              slo_s=gateway.slo_s(shadow), edge_s=gateway.lag.edge_s)  # fmt: skip
            except RequestFailed:  # its own admission refused it
                future = None
        if future is None:
            versions.shadow_stats.shed += 1
            gateway.metrics.shadow(model.name, shadow.version, "shed")
            return None
        versions.shadow_stats.copied += 1
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # its error is counted, never left unread
        return future

    def compare_later(self, primary: ServedModel, copy: asyncio.Future, answered: asyncio.Future) -> None:
        task = asyncio.create_task(self._compare(primary, copy, answered, time.monotonic()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _compare(self, primary: ServedModel, copy: asyncio.Future, answered: asyncio.Future, started: float) -> None:
        versions = self.gateway.models.get(primary.name)
        shadow = versions.traffic.shadow if versions is not None else None
        if versions is None or shadow is None:
            return
        metrics, stats = self.gateway.metrics, versions.shadow_stats
        try:
            answer = await copy
        except Exception:
            stats.errors += 1
            metrics.shadow(primary.name, shadow, "error")
            return
        latency = time.monotonic() - started
        try:
            outputs = await answered
        except Exception:  # the primary failed: the copy's latency still counts
            stats.record(None, latency)
            metrics.shadow(primary.name, shadow, "answered", None, latency)
            return
        comparison = compare_outputs(outputs, answer)
        stats.record(comparison, latency)
        metrics.shadow(primary.name, shadow, "compared", comparison, latency, largest=stats.abs_max)
