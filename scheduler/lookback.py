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
    k = np.maximum(slack_s, 0.0) / max(service_s, 1e-9) * np.maximum(n, 1)
    return np.minimum(ceiling, 2 * k / (1 + 2 * k))


def replay_costs(counts: np.ndarray, capacity: np.ndarray, hold_s: float, instance_per_s: float,
                 per_request: float) -> np.ndarray:  # fmt: skip
    """Cost per second of each candidate pool over the replayed seconds.

    Candidate j is a pool of j instances. `counts`: arrivals per second (already shifted to the level forecast for when a pool
    started now would serve); `capacity[j]`: requests/s candidate j's instances take in all.
    A second's arrivals beyond the capacity may wait `hold_s` (what the SLO leaves after a
    batch's own wait and service), at most `hold_s` x capacity of them; beyond that, and
    what a full queue would keep past its slack, goes to FaaS. The queue is carried from
    second to second: a burst of 20 s fills it once, not 20 times."""
    if len(counts) == 0:
        return instance_per_s * _counts_of(len(capacity))
    cap = np.asarray(capacity, float)[:, None]
    room = cap * min(hold_s, 1.0)  # what may wait into the next second
    queue = np.zeros((cap.shape[0], 1))
    overflow = np.zeros(cap.shape[0])
    excess = counts[None, :] - cap  # per second, beyond what the pool serves at once
    if hold_s <= 0:
        overflow = np.maximum(excess, 0.0).sum(axis=1)
    elif np.any(excess > 0):
        for k in range(len(counts)):  # a carried queue: sequential, but only over the seconds that overflow
            e = excess[:, k : k + 1] + queue
            queue = np.clip(e, 0.0, room)
            overflow += np.maximum(e - room, 0.0)[:, 0]
    return instance_per_s * _counts_of(cap.shape[0]) + overflow / len(counts) * per_request


def _counts_of(candidates: int) -> np.ndarray:
    return np.arange(candidates, dtype=float)
