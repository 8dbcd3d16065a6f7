"""Choose the batching policy: the (B, T, target) that meets a latency SLO at the lowest cost.

A target is a place a batch runs with its own service times and prices: a FaaS
memory size, or a server pool. For each timeout T the wait tables are built once
(`WindowTables`) and every batch size B and target reuses them; the memory size
only shifts the latency by s(b), so the wait law of a (B, T) is computed once for
all targets. Feasibility is one CDF evaluation at the SLO; the percentile itself is
computed only for what is reported.

`tune` minimises the expected cost per request subject to
P(latency <= SLO) >= percentile; `tune_for_budget` is the dual: the lowest
percentile latency whose expected cost per request stays within a budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .arrivals import MAP
from .counting import CountingProcess
from .capped import CappedTables, capped_wait_distribution
from .latency import WaitDistribution, WindowTables, wait_distribution

MAX_BATCH = 64


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
    """The shared machinery: one counting process, wait tables per T, laws per (B, T)."""

    def __init__(self, arrivals: MAP, batch_sizes: Sequence[int], timeouts: Sequence[float], grid: int) -> None:
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        if self.batch_sizes[0] < 1 or self.batch_sizes[-1] > MAX_BATCH:
            raise ValueError(f"batch sizes must be in 1..{MAX_BATCH}")
        self.timeouts = sorted(float(t) for t in timeouts if t > 0)
        self.counting = CountingProcess(arrivals, self.batch_sizes[-1] - 1 or 1, max(self.timeouts))
        self.grid = grid
        self.evaluated = 0

    def laws(self, targets: _Targets | None = None, deadline_s: float | None = None):
        """Yield (B, T, law) for every configuration, B = 1 once (T is moot there). With
        a deadline budget, also yield per target whose deadline-aware closing changes the
        law: (B, T, [(target index, its law), ...]) as a fourth item."""
        if self.batch_sizes[0] == 1:
            yield 1, 0.0, wait_distribution(WindowTables(self.counting, self.timeouts[0], 2), 1), []
        for timeout in self.timeouts:
            tables = WindowTables(self.counting, timeout, self.grid)
            capped = targets.capped(tables, deadline_s) if targets is not None and deadline_s is not None else {}
            for b in self.batch_sizes:
                if b > 1:
                    own = [(k, capped_wait_distribution(c, b)) for k, c in capped.items() if b <= len(c.k) and c.is_binding(b)]
                    yield b, timeout, wait_distribution(tables, b), own

    def judge(self, law: WaitDistribution, targets: _Targets, slo_s: float, rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """P(latency <= SLO) and cost per request of one (B, T) on every target at once
        (or on the targets in `rows`)."""
        shift, batch_cost = targets.shift[rows], targets.batch_cost[rows]
        probability, cold_start = targets.cold_probability[rows], targets.cold_start_s[rows]
        self.evaluated += len(shift)
        b = law.batch_size
        waits = slo_s - shift[:, :b]  # inf service where a target cannot run b
        mean = law.mean_batch_size
        attained = law.requests_within(waits).sum(axis=1) / mean
        cold = probability > 0
        if cold.any():
            late = law.requests_within(waits - cold_start[:, None]).sum(axis=1) / mean
            attained = np.where(cold, (1 - probability) * attained + probability * late, attained)
        cost = batch_cost[:, :b] @ law.size_pmf / mean
        return attained, cost


class _Targets:
    """The targets as matrices over batch sizes, so one (B, T) is judged on all at once."""

    def __init__(self, items: Sequence[Target], max_batch: int) -> None:
        self.items = list(items)
        n = len(self.items)
        self.shift = np.full((n, max_batch), np.inf)
        self.batch_cost = np.full((n, max_batch), np.inf)
        for k, target in enumerate(self.items):
            span = min(max_batch, len(target.service_s))
            self.shift[k, :span] = np.asarray(target.service_s[:span]) + target.overhead_s
            self.batch_cost[k, :span] = target.batch_cost[:span]
        self.span = [min(max_batch, len(t.service_s)) for t in self.items]
        self.cold_probability = np.array([t.cold_probability for t in self.items])
        self.cold_start_s = np.array([t.cold_start_s for t in self.items])

    def capped(self, tables: WindowTables, deadline_s: float) -> dict[int, CappedTables]:
        """Per target whose deadline-aware closing binds within T: its capped tables.
        Caps as the queue computes them (`BatchLimits.closing_caps`): the predicted time
        to answer a batch of b is the target's s(b) plus its overhead."""
        sizes = min(self.shift.shape[1], tables.counting.max_count + 1)
        capped = {}
        for k in range(len(self.items)):
            span = min(sizes, self.span[k])  # a target's caps stop where its service curve does
            caps = np.minimum(tables.timeout_s, np.maximum(0.0, deadline_s - self.shift[k, :span]))
            if caps.min() < tables.timeout_s:
                capped[k] = CappedTables(tables, caps)
        return capped


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
) -> TuneResult:
    """The cheapest (B, T, target) with P(latency <= slo_s) >= percentile. With
    `deadline_s`, batches close early by deadline-aware closing for that budget
    (`BatchLimits`), and the model accounts for it, per target."""
    if not 0 < percentile < 1:
        raise ValueError("percentile must be in (0, 1)")
    search = _Search(arrivals, batch_sizes, default_timeouts(slo_s) if timeouts is None else timeouts, grid)
    table = _Targets(targets, search.batch_sizes[-1])
    best: tuple[float, int, float, WaitDistribution, Target] | None = None
    closest: tuple[float, int, float, WaitDistribution, Target, float] | None = None
    for b, timeout, shared, own in search.laws(table, deadline_s):
        attained, cost = search.judge(shared, table, slo_s)
        laws = [shared] * len(table.items)
        for k, law in own:
            search.evaluated -= 1
            (attained[k],), (cost[k],) = search.judge(law, table, slo_s, slice(k, k + 1))
            laws[k] = law
        feasible = attained >= percentile
        if feasible.any():
            k = int(np.argmin(np.where(feasible, cost, np.inf)))
            # Cheapest first; on a tie, the smaller batch and timeout (less waiting).
            if best is None or (cost[k], b, timeout) < best[:3]:
                best = (float(cost[k]), b, timeout, laws[k], table.items[k])
        else:
            k = int(np.argmax(attained))
            if closest is None or attained[k] > closest[0]:
                closest = (float(attained[k]), b, timeout, laws[k], table.items[k], float(cost[k]))
    result = TuneResult(None, search.evaluated, percentile)
    if best is not None:
        cost, _, timeout, law, target = best
        result.choice = _choice(law, timeout, target, percentile, cost)
    elif closest is not None:
        attained, _, timeout, law, target, cost = closest
        result.fallback = _choice(law, timeout, target, percentile, cost)
        result.notes.append(f"no configuration meets the SLO; the best reaches {attained:.4f} within it")
    return result


COARSE_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def tune_coarse_to_fine(
    arrivals: MAP, targets: Sequence[Target], slo_s: float, percentile: float, *, grid: int = 256,
    deadline_s: float | None = None,
) -> TuneResult:  # fmt: skip
    """`tune` on a coarse grid (12 batch sizes, 10 timeouts), then on every size and 10
    timeouts around the best: several times faster, for re-tuning online. Latency and
    cost change smoothly in B and T, so the refinement lands on or next to the full
    search's optimum (tests/unit/test_tuner.py compares them)."""
    timeouts = default_timeouts(slo_s, count=10)
    coarse = tune(
        arrivals, targets, slo_s, percentile, batch_sizes=COARSE_SIZES, timeouts=timeouts, grid=grid, deadline_s=deadline_s
    )
    best = coarse.choice or coarse.fallback
    if best is None:
        return coarse
    low, high = max(1, int(best.batch_size / 1.5)), min(MAX_BATCH, int(math.ceil(best.batch_size * 1.5)))
    position = int(np.searchsorted(timeouts, best.timeout_s)) if best.timeout_s > 0 else 0
    span = timeouts[max(0, position - 1)], timeouts[min(len(timeouts) - 1, position + 1)]
    fine_timeouts = np.geomspace(span[0], span[1], 10)
    fine = tune(
        arrivals, targets, slo_s, percentile, batch_sizes=range(low, high + 1), timeouts=fine_timeouts, grid=grid,
        deadline_s=deadline_s,
    )  # fmt: skip
    fine.configs_evaluated += coarse.configs_evaluated
    if fine.choice is None and coarse.choice is not None:
        coarse.configs_evaluated = fine.configs_evaluated
        return coarse
    return fine


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
    for _, timeout, law, _ in search.laws():
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
