"""Batch formation for fixed limits, computed in one pass over a whole arrival sequence.

`BatchQueue` with a `FixedPolicy` decides batch by batch as requests arrive; when
all arrival times are known in advance (a trace, a synthetic process) the same
batches follow from a loop over batches rather than over requests, which is what
lets the simulator run millions of requests per second.

The batches are exactly those the queue returns when its owner polls at every due
`next_wakeup()`, at exactly that time, before pushing each arrival (every request
adds one row). A batch opened by request i closes:
- by size at arrivals[i + B - 1], if that request arrives before the timer is due;
- by timeout at arrivals[i] + T otherwise. An arrival at exactly that instant is
  NOT in the batch: the owner polls first, then pushes it into a new batch.
With an infinite timeout the last, unfilled batch would wait forever; it is drained
at the last arrival instead (reason "drain").
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

SIZE, TIMEOUT, DRAIN, DEADLINE, IDLE = 0, 1, 2, 3, 4
REASONS = ("size", "timeout", "drain", "deadline", "idle")  # REASONS[code] is the queue's `Batch.reason`


@dataclass(frozen=True, eq=False)
class Formation:
    """Batches as parallel arrays, in closing order; batch k holds requests start[k] .. start[k] + size[k] - 1."""

    start: np.ndarray  # int64 index of the batch's first request
    size: np.ndarray  # int64 requests in the batch
    close_time: np.ndarray  # float64 when the batch closed
    reason: np.ndarray  # int8 code: SIZE, TIMEOUT or DRAIN (DEADLINE and IDLE only from the queue)

    def __len__(self) -> int:
        return len(self.start)

    def batch_of_request(self) -> np.ndarray:
        """For each request, the index of its batch."""
        return np.repeat(np.arange(len(self.start)), self.size)

    def reasons(self) -> list[str]:
        return [REASONS[code] for code in self.reason.tolist()]


def form_batches(arrivals: np.ndarray, batch_size: int, timeout_s: float) -> Formation:
    """The batches a fixed (B, T) queue forms from sorted arrival times (seconds)."""
    times = np.asarray(arrivals, dtype=float)
    if times.ndim != 1:
        raise ValueError(f"arrivals must be one-dimensional, got shape {times.shape}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if not timeout_s >= 0:  # also rejects NaN
        raise ValueError(f"batch timeout must not be negative, got {timeout_s!r}")
    if len(times) and not np.isfinite(times).all():
        raise ValueError("arrival times must be finite")
    if len(times) > 1 and (np.diff(times) < 0).any():
        raise ValueError("arrival times must be sorted in non-decreasing order")

    n = len(times)
    if batch_size == 1 or timeout_s == 0:
        # Every request alone: B=1 closes it by size on arrival; T=0 times it out at
        # once, before any later arrival (even at the same instant) is pushed.
        start = np.arange(n, dtype=np.int64)
        code = SIZE if batch_size == 1 else TIMEOUT
        return Formation(start, np.ones(n, dtype=np.int64), times + 0.0, np.full(n, code, dtype=np.int8))

    # Python floats and bisect on a memoryview of the array (made at once, unlike a list of
    # millions of floats, and as fast to bisect): per batch this is a few hundred
    # nanoseconds, and `t + T` rounds exactly as the queue's `request.arrival + max_wait` does.
    t = memoryview(np.ascontiguousarray(times))
    b, timeout = int(batch_size), float(timeout_s)
    starts: list[int] = []
    closes: list[float] = []
    reasons: list[int] = []
    i = 0
    while i < n:
        due = t[i] + timeout
        full = i + b
        hi = full if full < n else n
        # First request of the batch window that arrives at or after the timer: the
        # owner polls at `due` before pushing it, so it opens the next batch.
        j = bisect_left(t, due, i + 1, hi)
        starts.append(i)
        if j < hi:
            closes.append(due)
            reasons.append(TIMEOUT)
            i = j
        elif full <= n:
            closes.append(t[full - 1])
            reasons.append(SIZE)
            i = full
        elif math.isinf(due):
            closes.append(t[-1])
            reasons.append(DRAIN)
            i = n
        else:
            closes.append(due)
            reasons.append(TIMEOUT)
            i = n
    start = np.array(starts, dtype=np.int64)
    size = np.diff(np.append(start, n)).astype(np.int64)
    return Formation(start, size, np.array(closes, dtype=float), np.array(reasons, dtype=np.int8))
