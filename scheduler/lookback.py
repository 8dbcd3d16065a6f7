"""Planning by looking back: the recent arrivals, second by second, replayed against candidate pools.

The hybrid planner sized its pool on 10-second rates, so a burst of 5-20 s was averaged
away (and went to FaaS at the function's price, a pool a little larger would have taken
it for less), and it let an instance run only as busy as one M/D/1 queue may keep its
wait within a quarter of the SLO (0.64 at worst in the family), while n instances that
share a queue, with FaaS taking what would be late, run busier (issue 15).

Here the last minutes' arrivals are kept per second (`SecondCounts`), and each candidate
count n is replayed over them (`replay_costs`): every second, what n instances would turn
away at that second's rate (`PoolModel`) goes to the function at its price per request.
The plan's cost is the pool's price plus the function's bill, per second; the cheapest
count is the plan. The replay is a few numpy operations over (candidates x seconds): well
inside the planning period (the benchmark measures it).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from .fill import batch_fill


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
        newest_first = np.fromiter(itertools.islice(reversed(self.counts), n), float, n)  # one pass: a day of
        return newest_first[::-1]  # seconds in 3.5 ms here, against 72 ms indexing the deque one by one


_LOCAL_S = 31  # seconds around each one that give its level and variance (`PoolModel.smoothed`)


class PoolModel:
    """Which share of a second's arrivals n instances leave to the function, at that second's rate.

    The dispatcher puts a batch on an instance when it would finish there in time, and on
    the function otherwise: n servers behind one queue, with a batch turned away when the
    wait ahead of it passes the slack. That is the Erlang loss system with a waiting room,
    M/M/n/(n+K), whose turned-away share has a closed form (Erlang's B times the room's
    geometric tail). Service here is nearly constant, and a constant service time's wait
    tail falls twice as fast as an exponential one's (Kingman: the exponent is
    2 n (1 - rho) / (s (ca^2 + cs^2)), cs^2 = 0 against 1), so the room holds K = 2 n x
    slack / s batches. Units are batches: B requests each, s seconds each.

    A fluid model (n instances take n x capacity a second, the rest overflows) missed
    what queueing turns away below full load: one instance at 91% of its capacity, batches
    of one and a slack of nine service times, leaves several percent of the traffic to
    the function, and a pool one instance short looked cheaper than it was (issue 15).
    A burst over the pool's capacity overflows 1 - 1/rho of its arrivals, the fluid
    limit.

    Batches close when full or when the oldest has waited the timeout, whether or not an
    instance is free, so at a rate that fills them partly (`scheduler.fill`) each request
    carries more of a batch's fixed time: given `wait_s` and the service curve `service`
    (s(b)), each second's load and room are those of the batches its rate fills. A model
    with a 25% fixed time, B = 64 and batches of 3 takes a sixth of the requests a second
    that full batches would (issue 15, light members). Without `wait_s`: full batches."""

    def __init__(self, service_s: float, batch_size: int, slack_s: float, *, wait_s: float | None = None,
                 service: Callable[[int], float] | None = None) -> None:  # fmt: skip
        self.service_s = max(service_s, 1e-9)
        self.batch_size = max(1, batch_size)
        self.slack_s = max(0.0, slack_s)
        self.wait_s = wait_s if service is not None else None
        sizes = range(1, self.batch_size + 1)
        self._service = np.array([max(service(b), 1e-9) for b in sizes]) if service is not None else None

    @classmethod
    def for_slo(cls, service_s: float, batch_size: int, slo_s: float, batch_wait_s: float, margin: float,
                service: Callable[[int], float] | None = None) -> PoolModel:  # fmt: skip
        """The pool placement keeps inside an SLO: a batch may wait at an instance what
        placement leaves it (the SLO less the margin) after its oldest request waited for
        it to close (at most the batch timeout, where it has more than one row) and before
        its service (`service_s`, a full batch's). With `service` (s(b)), batches as full
        as each second's rate fills them."""
        closing = batch_wait_s if batch_size > 1 else 0.0
        slack = (1.0 - margin) * slo_s - closing - service_s
        return cls(service_s, batch_size, slack, wait_s=batch_wait_s, service=service)

    def capacity(self, n: int) -> float:
        """Requests/s n instances serve at full use, in full batches."""
        return n * self.batch_size / self.service_s

    def batches(self, rates: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
        """(batch size, its service time) at each rate: full batches, or as the rate fills them."""
        if self._service is None or self.wait_s is None:
            return float(self.batch_size), self.service_s
        fill = batch_fill(rates, self.batch_size, self.wait_s)
        return fill, np.interp(fill, np.arange(1, self.batch_size + 1), self._service)

    def load(self, rates: np.ndarray) -> np.ndarray:
        """The offered load at each rate, in busy instances."""
        size, service = self.batches(rates)
        return rates / size * service

    def smoothed(self, counts: np.ndarray) -> np.ndarray:
        """The rate behind each second's count, as the pool feels it. The model already
        counts the arrivals' randomness at a given rate, and near full load the loss is
        convex in the rate: taking each second's Poisson noise for a change of rate priced
        a pool nearly full as turning away many times what it does (3 instances at 90% of
        their capacity, 17 arrivals a second: 5% of the traffic, not 0.1%; on bursts#208 of
        issue 15, a third more than the simulated bill). So each count is
        shrunk towards the level around it by the share of the local variance that is not
        Poisson's (empirical Bayes: steady traffic gives its level, a burst keeps its
        counts), then averaged over the time the room takes to drain (2 x slack), which
        carries work from one second to the next. Against 181 simulated fixed pools (48
        members of the family) the priced bill's median error went from 0.7% to 0.0%, its
        mean |log| error from 0.042 to 0.026, and the cheapest count in the model is the
        simulation's on 42 members, not 37."""
        if len(counts) <= 1:
            return counts
        level = _moving_mean(counts, min(_LOCAL_S, len(counts)))
        spread = _moving_mean((counts - level) ** 2, min(_LOCAL_S, len(counts)))
        with np.errstate(divide="ignore", invalid="ignore"):
            signal = np.where(spread > 0, np.clip((spread - level) / spread, 0.0, 1.0), 0.0)
        return _moving_mean(level + signal * (counts - level), int(round(2.0 * self.slack_s)))

    def turned_away(self, candidates: int, rates: np.ndarray) -> np.ndarray:
        """(candidates x len(rates)): the share of arrivals at each rate that a pool of 0, 1,
        ..., candidates - 1 instances leaves to the function."""
        rates = self.smoothed(np.asarray(rates, float))
        size, service = self.batches(rates)
        a = rates / size * service  # offered load, in busy instances
        share = np.ones((candidates, len(rates)))
        erlang_b = np.ones_like(a)  # B(0, a)
        for n in range(1, candidates):
            erlang_b = a * erlang_b / (n + a * erlang_b)
            room = np.floor(2.0 * n * self.slack_s / service)
            share[n] = _lost(a / n, erlang_b, room)
        share[:, rates <= 0] = 0.0
        return share


def _moving_mean(x: np.ndarray, window: int) -> np.ndarray:
    """The mean over `window` values centred on each (fewer at the ends)."""
    if window <= 1:
        return x
    kernel = np.ones(window)
    return np.convolve(x, kernel, "same") / np.convolve(np.ones(len(x)), kernel, "same")


def _lost(rho: np.ndarray, erlang_b: np.ndarray, room: np.ndarray | float) -> np.ndarray:
    """M/M/n/(n + room) blocking from B(n, a) and rho = a / n:
    rho^K / (1 / B + rho + ... + rho^K), written so that no power overflows (K = 0: B)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        inverse_b = 1.0 / erlang_b
        near = np.abs(rho - 1.0) < 1e-9
        below = rho < 1.0
        r = np.where(near | (rho <= 0), 0.5, rho)  # placeholders where the other branches answer
        # rho < 1: rho^K (1 - rho) / ((1 - rho) / B + rho (1 - rho^K))
        low_k = np.where(below, r, 0.5) ** room
        low = low_k * (1 - r) / ((1 - r) * inverse_b + r * (1 - low_k))
        # rho > 1: divide through by rho^K; x = rho^-K vanishes, leaving 1 - 1/rho
        x = np.where(below, 0.5, r) ** -room
        high = (r - 1) / (r - r * x + (r - 1) * x * inverse_b)
        lost = np.where(below, low, high)
        lost = np.where(near, 1.0 / (inverse_b + room), lost)
        return np.where(rho > 0, np.clip(lost, 0.0, 1.0), 0.0)


def replay_costs(counts: np.ndarray, model: PoolModel, candidates: int, instance_per_s: float,
                 per_request: float | np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Cost per second of pools of 0 .. candidates - 1 instances over the replayed seconds
    (`counts`: arrivals in each, each second weighing `weights`, default alike): the
    instances' price, plus the function's bill for what each pool turns away (`PoolModel`;
    `per_request`: a request's bill on the function, in each second or in all)."""
    if len(counts) == 0:
        return instance_per_s * np.arange(candidates, dtype=float)
    return priced(model.turned_away(candidates, counts), counts, instance_per_s, per_request, weights)


def priced(turned_away: np.ndarray, counts: np.ndarray, instance_per_s: float, per_request: float | np.ndarray,
           weights: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """`replay_costs` from the shares each pool turns away (`PoolModel.turned_away`), so that
    one replay prices the counts both ways (alike and recent-weighted)."""
    pool = instance_per_s * np.arange(len(turned_away), dtype=float)
    weights = np.ones(len(counts)) if weights is None else weights
    return pool + turned_away @ (counts * weights * per_request) / weights.sum()


def enough_instances(model: PoolModel, counts: np.ndarray, most: int) -> int:
    """A count past which more instances only add their price: half again the busiest
    second's full-use need (what they turn away there is negligible), at most `most`."""
    busiest = float(np.max(counts, initial=0.0))
    return min(most, math.ceil(1.5 * float(model.load(np.array([busiest]))[0])) + 1)
