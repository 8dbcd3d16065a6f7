"""Batching policies: what the queue should currently aim for.

A policy answers one question, "what are the batch size B and the timeout T now?",
as a pure function of its state and `now`. The queue asks it at every decision, so
a policy that re-tunes itself takes effect at the next arrival without the queue
knowing anything about how it was tuned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """Close a batch at `max_size` rows, or when its oldest request has waited `max_wait` s.

    Deadline-aware closing, when `service_s` is given: `service_s[b-1]` predicts the
    time from closing a batch of b rows to its answer, and a batch also closes as soon
    as its earliest deadline is nearer than that. A request's deadline is its own, or
    `deadline_s` after its arrival (the SLO), whichever is sooner.

    `work_conserving`: the open batch also closes the moment an instance is free to run
    it and no closed batch waits (the owner asks `BatchQueue.idle`), as Triton's dynamic
    batcher does with no queue delay. On a pool that is already paid for, holding a
    request back while an instance idles buys nothing: B and T then only bound how large
    and how old a batch gets while every instance is busy. `idle_rows` and `hold_s` hold
    it back only as far as the load needs: a free instance takes the open batch once it
    has `idle_rows` rows or its oldest request has waited `hold_s` (at high load, batches
    of one row would spend the CPU that the instances and the gateway share).
    """

    max_size: int
    max_wait: float
    service_s: tuple[float, ...] = ()
    deadline_s: float | None = None
    work_conserving: bool = False
    idle_rows: int = 1
    hold_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.max_size}")
        if self.max_wait < 0:
            raise ValueError(f"batch timeout must not be negative, got {self.max_wait}")
        if any(not s >= 0 for s in self.service_s):
            raise ValueError("predicted service times must be non-negative")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"the deadline budget must be positive, got {self.deadline_s}")
        if self.idle_rows < 1 or not self.hold_s >= 0:
            raise ValueError("idle_rows must be at least 1 and hold_s non-negative")

    def predicted_service(self, rows: int) -> float:
        """Predicted close-to-answer time of a batch of `rows` (the last known size beyond the curve)."""
        return self.service_s[min(rows, len(self.service_s)) - 1] if self.service_s else 0.0

    def closing_caps(self) -> list[float]:
        """For b = 1..B rows, the wait of a batch's first request from which a batch of b
        is released (or, at b+1, would be late): deadline-aware closing when requests
        carry only the `deadline_s` budget, else `max_wait`, whichever comes first. What
        the latency model (`batching.capped`) needs to account for early closing."""
        caps = []
        for rows in range(1, self.max_size + 1):
            cap = self.max_wait
            if self.service_s and self.deadline_s is not None:
                cap = min(cap, max(0.0, self.deadline_s - self.predicted_service(rows)))
            caps.append(cap)
        return caps


class BatchPolicy(Protocol):
    """What a queue needs from a policy."""

    name: str

    def limits(self, now: float) -> BatchLimits:
        """The (B, T) to apply at time `now`."""
        ...

    def observe_arrival(self, now: float) -> None:
        """Told of every arrival; adaptive policies learn the traffic from it."""
        ...


class FixedPolicy:
    """A constant (B, T): Triton's dynamic batcher with a max queue delay."""

    name = "fixed"

    def __init__(
        self, batch_size: int, timeout_s: float, *, service_s: tuple[float, ...] = (), deadline_s: float | None = None,
        work_conserving: bool = False,
    ) -> None:
        self._limits = BatchLimits(batch_size, timeout_s, tuple(service_s), deadline_s, work_conserving)

    def limits(self, now: float) -> BatchLimits:
        return self._limits

    def observe_arrival(self, now: float) -> None:
        pass

    def __repr__(self) -> str:
        wc = ", work_conserving=True" if self._limits.work_conserving else ""
        return f"FixedPolicy(batch_size={self._limits.max_size}, timeout_s={self._limits.max_wait}{wc})"


class NoBatchingPolicy(FixedPolicy):
    """Every request is its own batch, released the moment it arrives."""

    name = "none"

    def __init__(self) -> None:
        super().__init__(batch_size=1, timeout_s=0.0)

    def __repr__(self) -> str:
        return "NoBatchingPolicy()"
