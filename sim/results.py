"""What a simulation produced: per-request latencies, per-batch records, cost, and a summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from batching.formation import REASONS


@dataclass(eq=False)
class SimResult:
    """Per-request arrays are in arrival order; per-batch arrays in closing order.

    A request's latency is its wait in the batching queue, the batch's wait for a
    free slot or instance, the invocation overhead, any cold start, and the service time.
    """

    arrival: np.ndarray  # per request, seconds
    latency_s: np.ndarray  # per request
    batch: np.ndarray  # per request: index of its batch
    close_time: np.ndarray  # per batch: when the queue released it
    start_time: np.ndarray  # per batch: when it was invoked (after any wait for a slot)
    size: np.ndarray  # per batch: requests in it
    reason: np.ndarray  # per batch: code into batching.formation.REASONS
    cold: np.ndarray  # per batch: did it start a new execution environment
    service_s: np.ndarray  # per batch: service time (with jitter), the billed part on FaaS
    cost_usd: float
    wall_s: float
    target: str  # "faas" or "pool"
    memory_mb: int | None  # the FaaS memory size used
    path: str  # "fast" (vectorized formation) or "event" (event-by-event)
    slo_s: float | None = None
    pings: int = 0  # keep-warm invocations (FaaS), paid for in cost_usd
    # With a scheduler (sim.scheduled): the pool's billed hours, and where batches went.
    instance_hours: float | None = None
    faas_batches: int | None = None
    rejected_batches: int | None = None
    instances_started: int | None = None
    # Served as the gateway serves (sim.served): requests refused (429), past their deadline (504), failed (5xx).
    refused: int = 0
    timed_out: int = 0
    failed: int = 0

    @property
    def requests(self) -> int:
        return len(self.arrival)

    @property
    def batches(self) -> int:
        return len(self.size)

    def reasons(self) -> list[str]:
        return [REASONS[code] for code in self.reason.tolist()]

    def percentile_ms(self, percentile: float) -> float | None:
        done = self.latency_s[np.isfinite(self.latency_s)]
        return float(np.percentile(done, percentile) * 1000.0) if len(done) else None

    def summary(self, slo_s: float | None = None) -> dict[str, Any]:
        """Plain numbers for a report or JSON. `slo_s` defaults to the one given to simulate()."""
        slo = self.slo_s if slo_s is None else slo_s
        latency = self.latency_s
        done = latency[np.isfinite(latency)]
        if len(done):
            p50, p95, p99 = (float(x) * 1000.0 for x in np.percentile(done, [50, 95, 99]))
            latency_ms: dict[str, float | None] = {
                "p50": p50, "p95": p95, "p99": p99,
                "max": float(done.max()) * 1000.0, "mean": float(done.mean()) * 1000.0,
            }  # fmt: skip
        else:
            latency_ms = dict.fromkeys(("p50", "p95", "p99", "max", "mean"))
        requests = self.requests
        return {
            "requests": requests,
            "completed": int(len(done)),
            "latency_ms": latency_ms,
            "slo_ms": None if slo is None else slo * 1000.0,
            "slo_attainment": None if slo is None or not requests else float(np.count_nonzero(latency <= slo)) / requests,
            "cost_usd": self.cost_usd,
            "cost_per_million_usd": self.cost_usd / requests * 1e6 if requests else None,
            "batches": self.batches,
            "mean_batch_size": float(np.mean(self.size)) if self.batches else None,
            "refused": self.refused,
            "timed_out": self.timed_out,
            "failed": self.failed,
            "faas_share": self.faas_share,
            "cold_starts": int(np.count_nonzero(self.cold)),
            "keep_warm_pings": self.pings,
            "wall_s": self.wall_s,
        } | self._scheduled()

    @property
    def faas_share(self) -> float:
        """The share of batches that ran on the function."""
        if self.faas_batches is not None:
            return self.faas_batches / self.batches if self.batches else 0.0
        return 1.0 if self.target == "faas" and self.batches else 0.0

    def _scheduled(self) -> dict[str, Any]:
        if self.instance_hours is None:
            return {}
        return {
            "instance_hours": self.instance_hours,
            "rejected_batches": self.rejected_batches, "instances_started": self.instances_started,
        }  # fmt: skip
