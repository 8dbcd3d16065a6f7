"""The tuner's search: whole timeouts at a time, bisected, dominated configurations skipped.

A configuration is (B, T, target). Three facts of the model make most of them
unnecessary to compute:

- For fixed B and target, the share within the SLO falls as T grows (every wait
  is min(time to fill, T), and batches that wait longer are larger and slower),
  and the cost per request falls (batches fill more). So the best T of a
  (B, target) is the largest feasible one: a bisection over the timeouts.
- One timeout judges every B and every target at once (`batching.plane`), so the
  bisections of all (B, target) share their timeouts: each step evaluates the
  timeout that halves the bracket of the most promising (B, target) still open,
  and narrows every bracket with it.
- No batch of B costs less per request than min over b <= B of cost(b) / b, and
  none costs less at a smaller T than at a larger one: a (B, target) whose bound
  is no lower than the best cost found is closed without being computed.

Deadline-aware closing only closes batches earlier: the share within the SLO
rises and the cost rises. The uncapped plane is therefore a bound for a capped
configuration; the capped law (`batching.capped`) is computed only where the
caps bind and the configuration could still beat the best.

The search returns what an exhaustive search of the same grid returns wherever the
two monotonicities hold (tests/unit/test_tuner.py compares them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arrivals import MAP
from .capped import CappedTables, capped_wait_distribution
from .counting import CountingProcess
from .latency import WaitDistribution, WindowTables, wait_distribution
from .plane import Plane, judge_plane

MAX_BATCH = 64


def checked_sizes(batch_sizes: Sequence[int]) -> list[int]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > MAX_BATCH:
        raise ValueError(f"batch sizes must be in 1..{MAX_BATCH}")
    return sizes


_COUNTING: OrderedDict[tuple, CountingProcess] = OrderedDict()
_COUNTING_KEPT = 4


def counting_process(arrivals: MAP, max_count: int, max_time: float) -> CountingProcess:
    """The counting process of `arrivals`, kept across calls: a re-tune for a fitted
    process that has not changed (the same D0, D1) starts from the one built last
    time. A few are kept, the least recently used leaves first."""
    key = (arrivals.D0.tobytes(), arrivals.D1.tobytes(), arrivals.order, max_count, max_time)
    counting = _COUNTING.get(key)
    if counting is None:
        counting = _COUNTING[key] = CountingProcess(arrivals, max_count, max_time)
        while len(_COUNTING) > _COUNTING_KEPT:
            _COUNTING.popitem(last=False)
    _COUNTING.move_to_end(key)
    return counting


class TargetTable:
    """The targets (`batching.Target`) as matrices over batch sizes, so one timeout is judged on all at once."""

    def __init__(self, items: Sequence[Any], max_batch: int) -> None:
        self.items = list(items)
        n = len(self.items)
        self.shift = np.full((n, max_batch), np.inf)
        self.batch_cost = np.full((n, max_batch), np.inf)
        for k, target in enumerate(self.items):
            span = min(max_batch, len(target.service_s))
            self.shift[k, :span] = np.asarray(target.service_s[:span]) + target.overhead_s
            self.batch_cost[k, :span] = target.batch_cost[:span]
        self.span = [min(max_batch, len(t.service_s)) for t in self.items]
        self.cold_probability = np.array([t.cold_probability for t in self.items], dtype=float)
        self.cold_start_s = np.array([t.cold_start_s for t in self.items], dtype=float)
        # No batch of up to B requests costs less per request than the cheapest b <= B full.
        sizes = np.arange(1, max_batch + 1)
        self.floor = np.minimum.accumulate(self.batch_cost / sizes[None, :], axis=1)

    def caps(self, k: int, timeout_s: float, deadline_s: float) -> np.ndarray:
        """Deadline-aware closing's caps for target k, as the queue computes them
        (`BatchLimits.closing_caps`): the answer of a batch of b takes s(b) plus the overhead."""
        return np.minimum(timeout_s, np.maximum(0.0, deadline_s - self.shift[k, : self.span[k]]))


@dataclass
class Found:
    best: tuple[WaitDistribution, float, int, float] | None = None  # law, T, target index, cost
    closest: tuple[WaitDistribution, float, int, float, float] | None = None  # ... and the share attained


class Sweep:
    """Planes by timeout index, computed once each; capped configurations one by one."""

    def __init__(
        self, arrivals: MAP, table: TargetTable, timeouts: Sequence[float], slo_s: float, percentile: float,
        sizes: Sequence[int], grid: int, deadline_s: float | None, hint_s: float | None = None, tolerance: float = 0.0,
    ) -> None:  # fmt: skip
        if not timeouts:
            raise ValueError("no positive timeout to search")
        self.table, self.timeouts, self.slo_s, self.percentile = table, list(timeouts), slo_s, percentile
        self.sizes, self.grid, self.deadline_s = list(sizes), grid, deadline_s
        # A configuration is pursued only if it could cost less than (1 - tolerance) x the best found.
        self.tolerance = tolerance
        # The timeout to try first (the last choice's, when re-tuning): its index on this grid.
        self.hint = int(np.argmin(np.abs(np.log(np.asarray(self.timeouts) / hint_s)))) if hint_s else None
        self.max_batch = self.sizes[-1]
        self.counting = counting_process(arrivals, max(self.max_batch - 1, 1), max(self.timeouts))
        self.evaluated = 0
        self._tables: dict[int, WindowTables] = {}
        self._planes: dict[int, Plane] = {}
        self._capped: dict[tuple[int, int], CappedTables] = {}

    # -- what one timeout says ---------------------------------------------------

    def tables(self, j: int) -> WindowTables:
        if j not in self._tables:
            self._tables[j] = WindowTables(self.counting, self.timeouts[j], self.grid)
        return self._tables[j]

    def plane(self, j: int) -> Plane:
        if j not in self._planes:
            t = self.table
            self._planes[j] = judge_plane(self.tables(j), t.shift, t.batch_cost, self.slo_s, t.cold_probability, t.cold_start_s)
            self.evaluated += len(t.items) * sum(1 for b in self.sizes if b > 1)
        return self._planes[j]

    def binds(self, k: int, b: int, j: int) -> bool:
        """Does deadline-aware closing change (b, T_j) on target k?"""
        if self.deadline_s is None or b == 1 or b > self.table.span[k]:
            return False
        return bool(self.deadline_s - self.table.shift[k, b - 1] < self.timeouts[j])

    def law(self, k: int, b: int, j: int) -> WaitDistribution:
        if self.binds(k, b, j):
            key = (j, k)
            if key not in self._capped:
                self._capped[key] = CappedTables(self.tables(j), self.table.caps(k, self.timeouts[j], self.deadline_s))
            return capped_wait_distribution(self._capped[key], b)
        return wait_distribution(self.tables(j), b)

    def alone(self, k: int) -> float:
        """The share within the SLO of B = 1 on target k: no wait, its own service (and cold start)."""
        t = self.table
        warm = float(t.shift[k, 0] <= self.slo_s)
        late = float(t.shift[k, 0] + t.cold_start_s[k] <= self.slo_s)
        return (1 - t.cold_probability[k]) * warm + t.cold_probability[k] * late

    def capped_cell(self, k: int, b: int, j: int) -> tuple[float, float]:
        """(share within the SLO, cost per request) of a configuration whose caps bind."""
        self.evaluated += 1
        law, t = self.law(k, b, j), self.table
        waits = (self.slo_s - t.shift[k, :b])[None, :]
        attained = law.requests_within(waits).sum() / law.mean_batch_size
        p = t.cold_probability[k]
        if p > 0:
            late = law.requests_within(waits - t.cold_start_s[k]).sum() / law.mean_batch_size
            attained = (1 - p) * attained + p * late
        return float(attained), law.cost_per_request(t.batch_cost[k])

    # -- the search --------------------------------------------------------------

    def run(self) -> Found:
        table, n = self.table, len(self.timeouts)
        targets = len(table.items)
        sizes = [b for b in self.sizes if b > 1]
        columns = np.array([b - 1 for b in sizes], dtype=int)
        lo = np.full((targets, len(sizes)), -1)  # the largest timeout index known feasible
        hi = np.full((targets, len(sizes)), n)  # the smallest known infeasible
        at_lo = np.full(lo.shape, np.nan)  # the shares within the SLO there
        at_hi = np.full(lo.shape, np.nan)
        bound = table.floor[:, columns].copy() if sizes else np.zeros((targets, 0))  # no lower cost is possible
        best = self._alone_best()  # cost, B, T, target, timeout index (-1: B = 1)

        def offer(cost: float, b: int, j: int, k: int) -> None:
            nonlocal best
            timeout = self.timeouts[j] if j >= 0 else 0.0
            if np.isfinite(cost) and (best is None or (cost, b, timeout) < best[:3]):
                best = (cost, b, timeout, k, j)

        while sizes:
            ceiling = best[0] * (1 - self.tolerance) if best is not None else np.inf
            open_ = (hi - lo > 1) & (bound < ceiling)
            if not open_.any():
                break
            k, c = np.unravel_index(np.argmin(np.where(open_, bound, np.inf)), open_.shape)
            j = self._probe(int(lo[k, c]), int(hi[k, c]), float(at_lo[k, c]), float(at_hi[k, c]))
            attained, cost = self.judge(j, sizes, np.maximum(bound, 0.0), ceiling, (hi - lo > 1))
            judged = ~np.isnan(attained)
            feasible = judged & (attained >= self.percentile)
            rises, falls = feasible & (j > lo), judged & ~feasible & (j < hi)
            lo, at_lo = np.where(rises, j, lo), np.where(rises, attained, at_lo)
            hi, at_hi = np.where(falls, j, hi), np.where(falls, attained, at_hi)
            bound = np.where(judged & ~feasible, np.maximum(bound, cost), bound)  # smaller T: dearer
            for kk, cc in zip(*np.nonzero(feasible & (lo == j))):
                offer(float(cost[kk, cc]), sizes[cc], j, int(kk))
            if not judged[k, c]:  # the chosen cell was skipped as dominated: close it
                hi[k, c] = lo[k, c] + 1
        return self._found(best)

    def judge(self, j: int, sizes: list[int], bound: np.ndarray, ceiling: float, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(share within the SLO, cost) of every (target, B in sizes) at timeout j. Where
        deadline-aware closing binds, the capped law is computed only for a wanted
        configuration that could cost less than `ceiling` (uncapped, it costs less:
        its cost and `bound` are lower bounds); the others come back NaN and inf."""
        plane = self.plane(j)
        columns = np.array([b - 1 for b in sizes], dtype=int)
        attained, cost = plane.attained[:, columns].copy(), plane.cost[:, columns].copy()
        for k in range(len(self.table.items)):
            for c, b in enumerate(sizes):
                if not self.binds(k, b, j):
                    continue
                if not wanted[k, c] or max(bound[k, c], cost[k, c]) >= ceiling:
                    attained[k, c], cost[k, c] = np.nan, np.inf
                else:
                    attained[k, c], cost[k, c] = self.capped_cell(k, b, j)
        return attained, cost

    def descend(self) -> Found:
        """Online, from the hint: the timeouts next to it, one after another, for as long as
        the cheapest configuration meeting the SLO at each keeps getting cheaper (the best
        at timeout j, f(j), is a valley in j: short timeouts leave batches small, long ones
        allow only small B), by more than a tenth of the tolerance. Two or three
        timeouts when the traffic moved a little; a local optimum, where `run` finds
        the global one."""
        assert self.hint is not None
        n, targets = len(self.timeouts), len(self.table.items)
        sizes = [b for b in self.sizes if b > 1]
        best = self._alone_best()
        wanted = np.ones((targets, len(sizes)), dtype=bool)
        bound = self.table.floor[:, [b - 1 for b in sizes]]

        def at(j: int) -> float:
            nonlocal best
            attained, cost = self.judge(j, sizes, bound, best[0] if best else np.inf, wanted)
            cost = np.where(np.nan_to_num(attained, nan=-1.0) >= self.percentile, cost, np.inf)
            k, c = np.unravel_index(np.argmin(cost), cost.shape)
            if np.isfinite(cost[k, c]) and (best is None or (cost[k, c], sizes[c], self.timeouts[j]) < best[:3]):
                best = (float(cost[k, c]), sizes[c], self.timeouts[j], int(k), j)
            return float(cost[k, c])

        j = self.hint
        here = at(j) if sizes else np.inf
        for step in (1, -1):
            moved = False
            while sizes and 0 <= j + step < n and (value := at(j + step)) < here * (1 - self.tolerance / 10):
                here, j, moved = value, j + step, True
            if moved:
                break
        return self._found(best)

    def _alone_best(self) -> tuple[float, int, float, int, int] | None:
        """B = 1 on the cheapest target that meets the SLO with it (T is moot: reported as 0)."""
        best = None
        if 1 in self.sizes:
            self.evaluated += len(self.table.items)
            for k in range(len(self.table.items)):
                cost = float(self.table.batch_cost[k, 0])
                if self.alone(k) >= self.percentile and np.isfinite(cost) and (best is None or cost < best[0]):
                    best = (cost, 1, 0.0, k, -1)
        return best

    def _probe(self, lo: int, hi: int, at_lo: float, at_hi: float) -> int:
        """The next timeout index to evaluate for a bracket (lo feasible, hi not; -1 and
        n where unknown). The `hint` first (the last choice's timeout, re-tuning
        online). An open end is searched by galloping away from where the search
        started, the hint or else the largest T (the cheapest T is the largest
        feasible): n-1, n-3, n-7, ... down, or hint+1, hint+3, ... up. With both ends
        known, halfway between the bisection's midpoint and where the shares within
        the SLO, interpolated, cross the percentile (a quarter of the bracket or more
        goes each step)."""
        n = len(self.timeouts)
        if self.hint is not None and lo < self.hint < hi:
            return self.hint
        anchor = self.hint if self.hint is not None else n
        if lo < 0:
            j = 2 * hi - anchor - 1
        elif hi >= n:
            j = 2 * lo - anchor + 1
        else:
            middle = (lo + hi) / 2
            if at_lo > at_hi:
                crossing = lo + (hi - lo) * (at_lo - self.percentile) / (at_lo - at_hi)
                middle = (middle + crossing) / 2
            j = int(round(middle))
        return min(hi - 1, max(lo + 1, j))

    def _found(self, best: tuple[float, int, float, int, int] | None) -> Found:
        if best is not None:
            cost, b, timeout, k, j = best
            law = self.law(k, b, j) if j >= 0 else wait_distribution(self.tables(0), 1)
            return Found(best=(law, timeout, k, cost))
        # Nothing feasible: the configuration closest to the SLO. The share within
        # falls with T, so it is at the smallest timeout (or B = 1).
        plane, candidates = self.plane(0), []
        for k in range(len(self.table.items)):
            for b in self.sizes:
                if b > self.table.span[k]:
                    continue
                if self.binds(k, b, 0):
                    attained, cost = self.capped_cell(k, b, 0)
                else:
                    attained, cost = float(plane.attained[k, b - 1]), float(plane.cost[k, b - 1])
                candidates.append((attained, -b, k, cost))
        if not candidates:
            return Found()
        attained, minus_b, k, cost = max(candidates)
        b = -minus_b
        law = self.law(k, b, 0) if b > 1 else wait_distribution(self.tables(0), 1)
        return Found(closest=(law, self.timeouts[0] if b > 1 else 0.0, k, cost, attained))
