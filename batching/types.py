"""The two values that travel through the house: one `Request`, and a `Batch` of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Request:
    """One admitted client request, as the batching layer sees it.

    `arrival` and `deadline` are on the caller's clock (seconds); the queue never
    reads a clock itself. `size` is the number of rows the request adds to a batch
    (its extent along the batch axis), usually 1. `payload` is opaque here: the
    gateway keeps the decoded tensors in it.
    """

    id: str
    arrival: float
    size: int = 1
    deadline: float | None = None
    priority: int = 0
    payload: Any = None


@dataclass(eq=False, slots=True)
class Batch:
    """Requests released together. `reason` says what closed it."""

    requests: list[Request]
    closed_at: float
    reason: str
    attempts: int = 0
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Rows along the batch axis."""
        return sum(r.size for r in self.requests)

    @property
    def oldest_arrival(self) -> float:
        return self.requests[0].arrival

    @property
    def earliest_deadline(self) -> float | None:
        return earliest_deadline(self.requests)


def earliest_deadline(requests: list[Request]) -> float | None:
    """The soonest deadline among requests that have one."""
    deadlines = [r.deadline for r in requests if r.deadline is not None]
    return min(deadlines) if deadlines else None
