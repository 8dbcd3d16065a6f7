"""Recorded traffic for the hybrid planner to start from (issue 15).

On a family of workloads the planner was not tuned on, the best baseline is most often a
fixed pool of the run's best size, and on 83 of 88 members a pool chosen on other draws of
the same traffic (its law, not this run) holds exactly that size (`sim.exante`). The planner
learns it from the run itself: its first pool comes from one minute, its fixed count from
the minutes seen so far, and on a 20-minute run that learning is most of what it pays over
the baseline.

A `Prior` is arrivals per second recorded from comparable traffic (the same hours
yesterday, say). The first pool is the count cheapest over it, and the fixed count is chosen
on the record and the window together, the record weighing `weight_s` seconds of the window:
the window takes over as it fills. A record of other traffic would hold the fixed count at
its size for as long as it weighs, so it is trusted only while the traffic agrees with it:
the mean rate seen (the window's; at the first plan, the seconds seen so far) within the range of the
record's minutes. Recorded at 4x the rate, a prior kept 9 instances starting where 2 were
best; out of that range it is set aside and the planner is as without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .lookback import PoolModel, replay_costs


class Prior:
    """Recorded arrivals per second, and how many seconds of the live window they weigh."""

    def __init__(self, counts: Sequence[float], weight_s: float = 1200.0) -> None:
        self.counts = np.asarray(counts, float)
        if self.counts.ndim != 1 or len(self.counts) == 0 or np.any(self.counts < 0):
            raise ValueError("a prior is a non-empty list of arrivals per second")
        if not weight_s >= 0:
            raise ValueError("a prior's weight is seconds, 0 or more")
        self.weight_s = weight_s
        whole = len(self.counts) // 60 * 60
        minutes = self.counts[:whole].reshape(-1, 60).mean(axis=1) if whole else np.array([self.counts.mean()])
        self.quietest, self.busiest = float(minutes.min()), float(minutes.max())  # the record's minutes' mean rates
        self._priced: tuple[tuple, np.ndarray] | None = None  # the last pricing: the record is long, the model rarely changes

    @classmethod
    def from_times(cls, times: Sequence[float], weight_s: float = 1200.0) -> Prior:
        """From recorded arrival times (seconds): their count in each second."""
        times = np.asarray(times, float)
        if len(times) == 0:
            raise ValueError("a prior needs recorded arrivals")
        seconds = (np.floor(times) - np.floor(times.min())).astype(int)  # the record's own seconds
        return cls(np.bincount(seconds).astype(float), weight_s)

    def agrees(self, rate: float, seconds: float) -> bool:
        """Whether a mean rate (requests/s) seen over `seconds` lies within the range of the
        record's minutes, widened by three standard errors of a Poisson mean over that time
        (two draws of one steady rate differ by that much)."""
        noise = 3.0 * math.sqrt(max(rate, 1.0) / max(seconds, 1.0))
        return self.quietest - noise <= rate <= self.busiest + noise

    def fixed_costs(self, model: PoolModel, candidates: int, instance_per_s: float,
                    price: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:  # fmt: skip
        """Each count's cost per second over the record (`price`: a request's bill on the
        function at each second's rate). Priced again only when the pool model, the prices or
        the candidates change: a day's record takes about 100 ms, an hour's 5."""
        key = (model.service_s, model.batch_size, model.slack_s, model.wait_s, candidates, instance_per_s,
               tuple(price(np.array([1.0, 10.0, 100.0, 1000.0]))))  # fmt: skip
        if self._priced is None or self._priced[0] != key:
            self._priced = (key, replay_costs(self.counts, model, candidates, instance_per_s, price(model.smoothed(self.counts))))
        return self._priced[1]

    def blend(self, window: np.ndarray, window_s: float, recorded: np.ndarray) -> np.ndarray:
        """The fixed counts' costs on the window and on the record, the record weighing `weight_s`."""
        return (self.weight_s * recorded + window_s * window) / (self.weight_s + window_s)
