"""Planning by looking back: the recent arrivals, second by second, replayed against candidate pools.

The hybrid planner sized its pool on 10-second rates, so a burst of 5-20 s was averaged
away (and went to FaaS at the function's price, a pool a little larger would have taken
it for less), and it let an instance run only as busy as one M/D/1 queue may keep its
wait within a quarter of the SLO (0.64 at worst in the family), while n instances that
share a queue, with FaaS taking what would be late, run busier (issue 15).

Here the last minutes' arrivals are kept per second (`SecondCounts`), and each candidate
count n is replayed over them (`replay_costs`): every second, n instances take up to n x
their capacity, queueing what they cannot take at once for as long as the SLO leaves room;
the rest goes to the function at its price per request. The plan's cost is the pool's price
plus the function's bill of that overflow, per second; the cheapest count is the plan. The
replay is a few numpy operations over (candidates x seconds): well inside the planning
period (the benchmark measures it).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

TAIL = 1.0  # the mean wait within the slack


class SecondCounts:
    """Arrivals per whole second, for the last `keep_s` seconds (the current second still open)."""

    def __init__(self, keep_s: int = 900) -> None:
        self.keep_s = keep_s
        self.counts: deque[int] = deque(maxlen=keep_s)
        self._second: int | None = None
        self._open = 0

    def add(self, arrivals: int, now: float) -> None:
        second = math.floor(now)
        if self._second is None:
            self._second = second
        if second > self._second:
            self.counts.append(self._open)
            gap = min(second - self._second - 1, self.keep_s)
            self.counts.extend([0] * gap)  # seconds with no arrivals
            self._second, self._open = second, 0
        self._open += arrivals

    def window(self, seconds: int) -> tuple[np.ndarray, np.ndarray]:
        """(start of each second, its count) for the last `seconds` closed seconds."""
        counts = self.last(seconds)
        end = self._second if self._second is not None else 0
        return np.arange(end - len(counts), end, dtype=float), counts

    def last(self, seconds: int) -> np.ndarray:
        """The last `seconds` closed seconds' counts (fewer if not seen yet), oldest first."""
        n = min(seconds, len(self.counts))
        return np.fromiter((self.counts[i] for i in range(len(self.counts) - n, len(self.counts))), float, n)


def pooled_utilization(n: np.ndarray, service_s: float, slack_s: float, ceiling: float = 0.97) -> np.ndarray:
    """How busy n instances sharing one queue may run with their wait inside `slack_s`.

    M/D/1's mean wait rho s / (2 (1 - rho)) within the slack gives rho = 2k / (1 + 2k),
    k = slack / s; n servers behind one queue wait about n times less at the same rho
    (Erlang's heavy-traffic scaling), so k counts n times over. What the instances still
    cannot take goes to FaaS: a busier pool costs only the function's bill, never the SLO."""
    k = np.maximum(slack_s, 0.0) / max(service_s, 1e-9) * np.maximum(n, 1) / TAIL
    return np.minimum(ceiling, 2 * k / (1 + 2 * k))


def replay_overflow(counts: np.ndarray, capacity: np.ndarray, hold_s: float) -> np.ndarray:
    """Requests each candidate pool leaves to FaaS over the replayed seconds.

    `counts`: arrivals per second; `capacity[j]` (or `capacity[j, k]`, second by second):
    requests/s candidate j's instances take in all. A second's arrivals beyond the capacity
    may wait `hold_s` (what the SLO leaves after a batch's own wait and service), at most
    `hold_s` x capacity of them; the rest goes to FaaS. The queue is carried from second to
    second: a burst of 20 s fills it once, not 20 times."""
    cap = np.asarray(capacity, float)
    cap = cap[:, None] if cap.ndim == 1 else cap
    excess = counts[None, :] - cap  # per second, beyond what the pool serves at once
    if hold_s <= 0 or len(counts) == 0:
        return np.maximum(excess, 0.0).sum(axis=1)
    overflow = np.zeros(cap.shape[0])
    room = np.broadcast_to(cap * min(hold_s, 1.0), excess.shape)  # what may wait into the next second
    for j in np.flatnonzero((excess > 0).any(axis=1)):  # a pool never exceeded leaves nothing over
        queue, over = 0.0, 0.0
        for e, r in zip(excess[j].tolist(), room[j].tolist()):  # a carried queue: sequential over the seconds
            e += queue
            queue = min(max(e, 0.0), r)
            if e > r:
                over += e - r
        overflow[j] = over
    return overflow


def replay_costs(counts: np.ndarray, capacity: np.ndarray, hold_s: float, instance_per_s: float,
                 per_request: float) -> np.ndarray:  # fmt: skip
    """Cost per second of each candidate pool over the replayed seconds: candidate j is a
    pool of j instances (`capacity[j]` requests/s in all), plus the FaaS bill of what it
    leaves over (`replay_overflow`)."""
    if len(counts) == 0:
        return instance_per_s * _counts_of(len(capacity))
    overflow = replay_overflow(counts, capacity, hold_s)
    return instance_per_s * _counts_of(len(capacity)) + overflow / len(counts) * per_request


def _counts_of(candidates: int) -> np.ndarray:
    return np.arange(candidates, dtype=float)
