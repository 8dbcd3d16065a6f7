"""Choose the batching policy: the (B, T, target) that meets a latency SLO at the lowest cost.

A target is a place a batch runs with its own service times and prices: a FaaS
memory size, or a server pool. The memory size only shifts the latency by s(b), so
one timeout's wait tables (`WindowTables`) judge every B on every target at once
(`batching.plane`); the search (`batching.sweep`) bisects the timeouts and never
computes what cannot beat the best found. The percentile itself is computed only
for what is reported.

`tune` minimises the expected cost per request subject to
P(latency <= SLO) >= percentile; `tune_for_budget` is the dual: the lowest
percentile latency whose expected cost per request stays within a budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .arrivals import MAP
from .latency import WaitDistribution, WindowTables, wait_distribution
from .sweep import MAX_BATCH, Sweep, TargetTable, checked_sizes, counting_process



@dataclass(frozen=True)
class Target:
    """Where batches run: `service_s[b-1]` and `batch_cost[b-1]` for batches of b = 1..len."""

    name: str
    service_s: np.ndarray
    batch_cost: np.ndarray
    overhead_s: float = 0.0
    cold_probability: float = 0.0
    cold_start_s: float = 0.0
    memory_mb: int | None = None

    def __post_init__(self) -> None:
        if len(self.service_s) != len(self.batch_cost) or len(self.service_s) == 0:
            raise ValueError("service_s and batch_cost must cover the same batch sizes 1..n")


@dataclass(frozen=True)
class Choice:
    batch_size: int
    timeout_s: float
    target: Target
    latency_s: float  # at the percentile
    cost_per_request: float
    mean_batch_size: float


@dataclass
class TuneResult:
    choice: Choice | None  # None when nothing meets the constraint
    configs_evaluated: int
    percentile: float
    fallback: Choice | None = None  # when infeasible: the lowest-latency configuration seen
    notes: list[str] = field(default_factory=list)


def default_timeouts(slo_s: float, count: int = 30, smallest_s: float = 1e-4) -> np.ndarray:
    """About 30 timeouts, geometric from 0.1 ms up to the SLO."""
    largest = max(slo_s, smallest_s * 2)
    return np.geomspace(smallest_s, largest, count)


class _Search:
    """The shared machinery of `tune_for_budget`: one counting process, wait tables per T, laws per (B, T)."""

    def __init__(self, arrivals: MAP, batch_sizes: Sequence[int], timeouts: Sequence[float], grid: int) -> None:
        self.batch_sizes = checked_sizes(batch_sizes)
        self.timeouts = sorted(float(t) for t in timeouts if t > 0)
        self.counting = counting_process(arrivals, self.batch_sizes[-1] - 1 or 1, max(self.timeouts))
        self.grid = grid
        self.evaluated = 0

    def laws(self):
        """Yield (B, T, law) for every configuration, B = 1 once (T is moot there)."""
        if self.batch_sizes[0] == 1:
            yield 1, 0.0, wait_distribution(WindowTables(self.counting, self.timeouts[0], 2), 1)
        for timeout in self.timeouts:
            tables = WindowTables(self.counting, timeout, self.grid)
            for b in self.batch_sizes:
                if b > 1:
                    yield b, timeout, wait_distribution(tables, b)


def _choice(law: WaitDistribution, timeout: float, target: Target, percentile: float, cost: float) -> Choice:
    latency = law.latency_percentile(
        percentile, target.service_s, target.overhead_s, target.cold_probability, target.cold_start_s
    )
    return Choice(law.batch_size, timeout, target, latency, cost, law.mean_batch_size)


def tune(
    arrivals: MAP,
    targets: Sequence[Target],
    slo_s: float,
    percentile: float,
    *,
    batch_sizes: Sequence[int] = range(1, MAX_BATCH + 1),
    timeouts: Sequence[float] | None = None,
    grid: int = 256,
    deadline_s: float | None = None,
    hint_s: float | None = None,
    tolerance: float = 0.0,
) -> TuneResult:
    """The cheapest (B, T, target) with P(latency <= slo_s) >= percentile. With
    `deadline_s`, batches close early by deadline-aware closing for that budget
    (`BatchLimits`), and the model accounts for it, per target. The search is
    `batching.sweep.Sweep`'s: whole timeouts at once, bisected, dominated
    configurations never computed; `hint_s` (the last choice's timeout, re-tuning)
    is tried first. The hint changes how fast the optimum is found, not which. With a
    `tolerance`, a configuration is pursued only if it could cost less than
    (1 - tolerance) times the best found: the choice then costs at most that much
    more than the optimum, for fewer timeouts computed."""
    sweep = _sweep(arrivals, targets, slo_s, percentile, batch_sizes, timeouts, grid, deadline_s, hint_s, tolerance)
    return _result(sweep, sweep.run(), percentile)


def _sweep(arrivals: MAP, targets: Sequence[Target], slo_s: float, percentile: float, batch_sizes: Sequence[int],
           timeouts: Sequence[float] | None, grid: int, deadline_s: float | None, hint_s: float | None,
           tolerance: float) -> Sweep:  # fmt: skip
    if not 0 < percentile < 1:
        raise ValueError("percentile must be in (0, 1)")
    sizes = checked_sizes(batch_sizes)
    grid_t = sorted(float(t) for t in (default_timeouts(slo_s) if timeouts is None else timeouts) if t > 0)
    return Sweep(arrivals, TargetTable(targets, sizes[-1]), grid_t, slo_s, percentile, sizes, grid, deadline_s, hint_s, tolerance)


def _result(sweep: Sweep, found, percentile: float) -> TuneResult:
    result = TuneResult(None, sweep.evaluated, percentile)
    if found.best is not None:
        law, timeout, k, cost = found.best
        result.choice = _choice(law, timeout, sweep.table.items[k], percentile, cost)
    elif found.closest is not None:
        law, timeout, k, cost, attained = found.closest
        result.fallback = _choice(law, timeout, sweep.table.items[k], percentile, cost)
        result.notes.append(f"no configuration meets the SLO; the best reaches {attained:.4f} within it")
    return result


ONLINE_GRID = 128
ONLINE_TOLERANCE = 0.02


def tune_coarse_to_fine(
    arrivals: MAP, targets: Sequence[Target], slo_s: float, percentile: float, *, grid: int = ONLINE_GRID,
    deadline_s: float | None = None, hint_s: float | None = None,
) -> TuneResult:  # fmt: skip
    """`tune` for re-tuning online, on a coarser wait grid (128 points over [0, T], half
    the cost of a timeout). From the last choice's timeout (`hint_s`) it walks to the
    neighbouring timeouts while the best configuration at each gets cheaper
    (`Sweep.descend`: two or three timeouts when the traffic moved a little); without
    one, the full search, content with a choice within 2% of the cheapest. Its
    choices cost within a few percent of the full search's (tests/unit/test_tuner.py
    compares them); the fitted arrival model's own error is larger than either."""
    sweep = _sweep(arrivals, targets, slo_s, percentile, range(1, MAX_BATCH + 1), None, grid, deadline_s, hint_s,
                   ONLINE_TOLERANCE)  # fmt: skip
    return _result(sweep, sweep.descend() if sweep.hint is not None else sweep.run(), percentile)


def tune_for_budget(
    arrivals: MAP,
    targets: Sequence[Target],
    budget_per_request: float,
    percentile: float,
    *,
    batch_sizes: Sequence[int] = range(1, MAX_BATCH + 1),
    timeouts: Sequence[float],
    grid: int = 256,
) -> TuneResult:
    """The dual: the (B, T, target) with the lowest percentile latency whose expected
    cost per request is at most `budget_per_request`."""
    search = _Search(arrivals, batch_sizes, timeouts, grid)
    best: Choice | None = None
    for _, timeout, law in search.laws():
        for target in targets:
            if law.batch_size > len(target.service_s):
                continue
            search.evaluated += 1
            cost = law.cost_per_request(target.batch_cost)
            if cost > budget_per_request:
                continue
            floor = float(target.service_s[0] + target.overhead_s)
            if best is not None and floor >= best.latency_s:
                continue  # cannot beat the best: its fastest batch is already slower
            candidate = _choice(law, timeout, target, percentile, cost)
            if best is None or (candidate.latency_s, cost) < (best.latency_s, best.cost_per_request):
                best = candidate
    result = TuneResult(best, search.evaluated, percentile)
    if best is None:
        result.notes.append("no configuration stays within the budget")
    return result
