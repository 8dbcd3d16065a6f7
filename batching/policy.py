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
    """Close a batch at `max_size` rows, or when its oldest request has waited `max_wait` s."""

    max_size: int
    max_wait: float

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.max_size}")
        if self.max_wait < 0:
            raise ValueError(f"batch timeout must not be negative, got {self.max_wait}")


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

    def __init__(self, batch_size: int, timeout_s: float) -> None:
        self._limits = BatchLimits(batch_size, timeout_s)

    def limits(self, now: float) -> BatchLimits:
        return self._limits

    def observe_arrival(self, now: float) -> None:
        pass

    def __repr__(self) -> str:
        return f"FixedPolicy(batch_size={self._limits.max_size}, timeout_s={self._limits.max_wait})"


class NoBatchingPolicy(FixedPolicy):
    """Every request is its own batch, released the moment it arrives."""

    name = "none"

    def __init__(self) -> None:
        super().__init__(batch_size=1, timeout_s=0.0)

    def __repr__(self) -> str:
        return "NoBatchingPolicy()"
