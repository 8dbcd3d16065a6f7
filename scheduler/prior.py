"""Recorded traffic for the hybrid planner to start from (issue 15).

On a family of workloads the planner was not tuned on, the best baseline is most often a
fixed pool of the run's best size, and on 83 of 88 members a pool chosen on other draws of
the same traffic (its law, not this run) holds exactly that size (`sim.exante`). The planner
learns it from the run itself: its first pool comes from one minute, its fixed count from
the minutes seen so far, and on a 20-minute run that learning is most of what it pays over
the baseline.

A `Prior` is arrivals per second recorded from comparable traffic (the same hours yesterday,
say), and the record's second at the run's first plan (`start_s`): 0 when the record begins
when the run does, else the second at the run's time of day (`same_time_of_day`, for a record
whose arrivals carry date-times). It is read in step with the run: at each plan, the record's
next `weight_s` seconds (what came next yesterday) say what the coming minutes hold. The first
pool is the count cheapest over them, and the fixed count is chosen on them and the live window
together, the record weighing as many seconds of the window as it has left ahead, up to
`weight_s`; past the record's end the planner is as without one. An hour ahead by default: 20
minutes of a record hold too few of the rare, large bursts to say how often they come (over an
hour, bursts#308 cost 1.05x the best baseline reading 20 minutes ahead, 1.00x reading an hour;
README, "What knowing the traffic's law is worth"). Read as one whole instead, a day's record would
have held every hour's fixed count at the day's compromise for good (the window holds at most
30 minutes: the record weighed 40% of the choice ever after). A record of other traffic would
hold the fixed count at its size while it weighs, so it is trusted only while the traffic
agrees with it: the mean rate seen (the window's; at the first plan, the seconds seen so far)
within the range of the record's minutes over the same span and the one ahead, widened by the
Poisson noise of that mean. Recorded at 4x the rate, a prior kept 9 instances starting where 2
were best; out of that range it is set aside and the planner is as without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np

from .lookback import PoolModel, enough_instances

DAY_S = 86400.0
WEIGHT_S = 3600.0  # how many seconds of the record ahead of each plan weigh in its fixed count


def same_time_of_day(first: datetime, start: datetime, span_s: float) -> float | None:
    """The second of a record that began at `first` and lasts `span_s` seconds at `start`'s time
    of day (UTC), on the record's last day that holds it; None if no day of it does."""
    second = (start - first).total_seconds() % DAY_S
    if second >= span_s:
        return None
    return second + DAY_S * (math.ceil((span_s - second) / DAY_S) - 1)


class Prior:
    """Recorded arrivals per second, the record's second at the run's first plan, and how many
    seconds of it ahead of each plan weigh in its fixed count."""

    def __init__(self, counts: Sequence[float], weight_s: float = WEIGHT_S, start_s: float = 0.0) -> None:
        self.counts = np.asarray(counts, float)
        if self.counts.ndim != 1 or len(self.counts) == 0 or np.any(self.counts < 0):
            raise ValueError("a prior is a non-empty list of arrivals per second")
        if not weight_s >= 0:
            raise ValueError("a prior's weight is seconds, 0 or more")
        if not 0 <= start_s < len(self.counts):
            raise ValueError("a prior's start is one of its seconds")
        self.weight_s = weight_s
        self.start_s = start_s
        whole = max(1, math.ceil(len(self.counts) / 60))
        padded = np.full(whole * 60, np.nan)
        padded[: len(self.counts)] = self.counts
        self.minutes = np.nanmean(padded.reshape(whole, 60), axis=1)  # each minute's mean rate (the last may be short)
        self._priced: tuple[tuple, np.ndarray] | None = None  # running totals of each count's cost: priced once per model
        self._busiest = self.counts[[int(np.argmax(self.counts))]]  # the record's busiest second, as `enough_instances` reads it

    @classmethod
    def from_times(cls, times: Sequence[float], weight_s: float = WEIGHT_S, start_s: float = 0.0) -> Prior:
        """From recorded arrival times (seconds): their count in each second."""
        times = np.asarray(times, float)
        if len(times) == 0:
            raise ValueError("a prior needs recorded arrivals")
        seconds = (np.floor(times) - np.floor(times.min())).astype(int)  # the record's own seconds
        return cls(np.bincount(seconds).astype(float), weight_s, start_s)

    def candidates(self, model: PoolModel, most: int) -> int:
        """How many counts (0 ..) to price over the record: past these, more instances only add
        their price (`lookback.enough_instances`, from the busiest second, kept at construction)."""
        return enough_instances(model, self._busiest, most) + 1

    def ahead(self, elapsed_s: float) -> tuple[int, int]:
        """The record's seconds [begin, end) that say what comes next, `elapsed_s` into the run."""
        begin = min(len(self.counts), int(self.start_s + max(0.0, elapsed_s)))
        return begin, min(len(self.counts), begin + int(self.weight_s))

    def agrees(self, rate: float, seconds: float, elapsed_s: float = 0.0) -> bool:
        """Whether a mean rate (requests/s) seen over the last `seconds`, `elapsed_s` into the run,
        lies within the range of the record's minutes over that span and the one ahead, widened by
        three standard errors of a Poisson mean over that time (two draws of one steady rate differ
        by that much). Past the record's end: no."""
        begin, end = self.ahead(elapsed_s)
        if end <= begin:
            return False
        minutes = self.minutes[max(0, int(self.start_s + elapsed_s - seconds)) // 60 : math.ceil(end / 60)]
        noise = 3.0 * math.sqrt(max(rate, 1.0) / max(seconds, 1.0))
        return float(minutes.min()) - noise <= rate <= float(minutes.max()) + noise

    def fixed_costs(self, model: PoolModel, candidates: int, instance_per_s: float,
                    price: Callable[[np.ndarray], np.ndarray], elapsed_s: float = 0.0) -> tuple[np.ndarray, int]:  # fmt: skip
        """Each count's cost per second over the record's seconds ahead (`ahead`), and how many
        seconds that is (0 past the record's end; `price`: a request's bill on the function at
        each second's rate). The whole record is priced once per pool model, prices and
        candidates (a day's record takes about 100 ms, an hour's 5), as running totals."""
        key = (model.service_s, model.batch_size, model.slack_s, model.wait_s, candidates, instance_per_s,
               tuple(price(np.array([1.0, 10.0, 100.0, 1000.0]))))  # fmt: skip
        if self._priced is None or self._priced[0] != key:
            per_request = price(model.smoothed(self.counts))
            per_second = model.turned_away(candidates, self.counts) * (self.counts * per_request)
            per_second += instance_per_s * np.arange(candidates, dtype=float)[:, None]
            totals = np.zeros((candidates, len(self.counts) + 1))
            np.cumsum(per_second, axis=1, out=totals[:, 1:])
            self._priced = (key, totals)
        begin, end = self.ahead(elapsed_s)
        if end <= begin:
            return np.zeros(candidates), 0
        totals = self._priced[1]
        return (totals[:, end] - totals[:, begin]) / (end - begin), end - begin

    @staticmethod
    def blend(window: np.ndarray, window_s: float, recorded: np.ndarray, recorded_s: float) -> np.ndarray:
        """The fixed counts' costs on the window and on the record ahead, each weighing its seconds."""
        return (recorded_s * recorded + window_s * window) / (recorded_s + window_s)
