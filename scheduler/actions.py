"""What the dispatch core asks its driver to do: send batches, answer requests with errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from batching import Batch, Request

from .fleet import Seat


@dataclass(eq=False)
class Send:
    """Run `requests` (the batch's not yet answered) on `seat`, now."""

    batch: Batch
    seat: Seat
    requests: list[Request]
    rows: int
    started: float
    predicted_end: float
    on_function: bool


@dataclass
class Failure:
    """Answer `requests` with this HTTP status."""

    requests: list[Request]
    status: int
    message: str
    retry_after: float | None = None


@dataclass
class Actions:
    sends: list[Send] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    closed: list[Batch] = field(default_factory=list)  # batches that closed (for counting why)
    events: list[str] = field(default_factory=list)  # "retried", "bisected", "breaker-opened", "grace-ended"
