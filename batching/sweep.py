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
        sizes: Sequence[int], grid: int, deadline_s: float | None,
    ) -> None:  # fmt: skip
        if not timeouts:
            raise ValueError("no positive timeout to search")
        self.table, self.timeouts, self.slo_s, self.percentile = table, list(timeouts), slo_s, percentile
        self.sizes, self.grid, self.deadline_s = list(sizes), grid, deadline_s
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
        bound = table.floor[:, columns].copy() if sizes else np.zeros((targets, 0))  # no lower cost is possible
        best: tuple[float, int, float, int, int] | None = None  # cost, B, T, target, timeout index (-1: B = 1)

        def offer(cost: float, b: int, j: int, k: int) -> None:
            nonlocal best
            timeout = self.timeouts[j] if j >= 0 else 0.0
            if np.isfinite(cost) and (best is None or (cost, b, timeout) < best[:3]):
                best = (cost, b, timeout, k, j)

        if 1 in self.sizes:  # T is moot for B = 1: every request alone, no wait
            self.evaluated += targets
            for k in range(targets):
                attained = self.alone(k)
                if attained >= self.percentile:
                    offer(float(table.batch_cost[k, 0]), 1, -1, k)
        while sizes:
            ceiling = best[0] if best is not None else np.inf
            open_ = (hi - lo > 1) & (bound < ceiling)
            if not open_.any():
                break
            k, c = np.unravel_index(np.argmin(np.where(open_, bound, np.inf)), open_.shape)
            if lo[k, c] < 0:  # nothing feasible known yet: gallop down from the largest T
                j = max(0, int(2 * hi[k, c] - n - 1))  # n-1, n-3, n-7, ...: the cheapest T is the largest
            else:
                j = int((lo[k, c] + hi[k, c]) // 2)
            plane = self.plane(j)
            attained, cost = plane.attained[:, columns], plane.cost[:, columns]
            for kk in range(targets):
                for cc, b in enumerate(sizes):
                    if not self.binds(kk, b, j):
                        continue
                    # Uncapped, it costs less and attains less: only worth the capped law if it could win.
                    if hi[kk, cc] - lo[kk, cc] <= 1 or max(bound[kk, cc], cost[kk, cc]) >= (best[0] if best else np.inf):
                        attained[kk, cc], cost[kk, cc] = np.nan, np.inf
                        continue
                    attained[kk, cc], cost[kk, cc] = self.capped_cell(kk, b, j)
                    if attained[kk, cc] >= self.percentile:
                        offer(float(cost[kk, cc]), b, j, kk)
            judged = ~np.isnan(attained)
            feasible = judged & (attained >= self.percentile)
            lo = np.where(feasible, np.maximum(lo, j), lo)
            hi = np.where(judged & ~feasible, np.minimum(hi, j), hi)
            bound = np.where(judged & ~feasible, np.maximum(bound, cost), bound)  # smaller T: dearer
            for kk, cc in zip(*np.nonzero(feasible & (lo == j))):
                offer(float(cost[kk, cc]), sizes[cc], j, int(kk))
            if not judged[k, c]:  # the chosen cell was skipped as dominated: close it
                hi[k, c] = lo[k, c] + 1
        return self._found(best)

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
