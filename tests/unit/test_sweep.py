"""The tuner's fast search: a whole timeout at once (`judge_plane`), the counting process on a
grid by stepping, and the pruned bisection against an exhaustive search of the same grid."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from batching.arrivals import MAP
from batching.capped import CappedTables, capped_wait_distribution
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from batching.plane import judge_plane
from batching.sweep import TargetTable
from batching.tuner import Target, default_timeouts, tune

from support import ALTERNATING, BURSTY, TARGETS, faas

PROCESSES = [MAP.poisson(300.0), BURSTY, ALTERNATING, MAP.mmpp2((400.0, 5.0), (0.5, 2.0))]
IDS = ["poisson", "bursty", "alternating", "slow-bursts"]


@pytest.mark.parametrize("arrivals", PROCESSES, ids=IDS)
def test_the_grid_by_stepping_is_the_uniformised_one(arrivals: MAP) -> None:
    counting = CountingProcess(arrivals, 40, 0.2)
    for timeout in (0.2, 0.004):
        p, i = counting.on_grid(timeout, 64)
        u = np.linspace(0.0, timeout, 65)
        np.testing.assert_allclose(p, counting.P(u), rtol=0, atol=1e-11)
        np.testing.assert_allclose(i, counting.I(u), rtol=0, atol=1e-11 * timeout)


@pytest.mark.parametrize("arrivals", PROCESSES, ids=IDS)
def test_a_plane_holds_what_each_law_says(arrivals: MAP) -> None:
    """Every (B, target) of one timeout, against `wait_distribution` judged one by one."""
    targets = [faas(1024), faas(4096, cold_probability=0.03), Target("short", TARGETS[0].service_s[:12], TARGETS[0].batch_cost[:12])]
    table = TargetTable(targets, 40)
    counting = CountingProcess(arrivals, 39, 0.25)
    rng = np.random.default_rng(5)
    for timeout in (0.25, 0.03, 0.001):
        tables = WindowTables(counting, timeout, 128)
        slo = float(rng.uniform(0.08, 0.4))
        plane = judge_plane(tables, table.shift, table.batch_cost, slo, table.cold_probability, table.cold_start_s)
        for b in (1, 2, 3, 7, 12, 13, 40):
            law = wait_distribution(tables, b)
            for k, target in enumerate(targets):
                if b > len(target.service_s):
                    assert plane.cost[k, b - 1] == np.inf
                    continue
                attained = law.latency_cdf(np.array([slo]), target.service_s, target.overhead_s,
                                           target.cold_probability, target.cold_start_s)[0]  # fmt: skip
                # latency_cdf clips at 1; the tuner's shares are not clipped.
                assert min(plane.attained[k, b - 1], 1.0) == pytest.approx(attained, abs=1e-9)
                assert plane.cost[k, b - 1] == pytest.approx(law.cost_per_request(target.batch_cost), rel=1e-9)
            assert plane.mean_batch_size[b - 1] == pytest.approx(law.mean_batch_size, rel=1e-9)


def exhaustive(arrivals: MAP, targets: list[Target], slo_s: float, percentile: float, timeouts, sizes, deadline_s=None):
    """(cost, B, T, target name) of the cheapest feasible configuration, every cell computed."""
    table = TargetTable(targets, max(sizes))
    counting = CountingProcess(arrivals, max(max(sizes) - 1, 1), max(timeouts))
    best = None
    for timeout in timeouts:
        tables = WindowTables(counting, timeout, 256)
        plane = judge_plane(tables, table.shift, table.batch_cost, slo_s, table.cold_probability, table.cold_start_s)
        for k, target in enumerate(targets):
            capped = None
            if deadline_s is not None:
                caps = table.caps(k, timeout, deadline_s)
                capped = CappedTables(tables, caps) if caps.min() < timeout else None
            for b in sizes:
                attained, cost = plane.attained[k, b - 1], plane.cost[k, b - 1]
                if capped is not None and 1 < b <= len(capped.k) and capped.is_binding(b):
                    law = capped_wait_distribution(capped, b)
                    waits = (slo_s - table.shift[k, :b])[None, :]
                    attained = law.requests_within(waits).sum() / law.mean_batch_size
                    cost = law.cost_per_request(target.batch_cost)
                key = (cost, b, timeout if b > 1 else 0.0, target.name)
                if attained >= percentile and np.isfinite(cost) and (best is None or key < best):
                    best = key
    return best


def same(choice, best: tuple[float, int, float, str]) -> bool:
    """The same cost, batch size and target. The timeout may differ where batches fill
    before either: then the costs tie to rounding, and no search could tell them apart."""
    cost, b, timeout, name = best
    return choice.cost_per_request == pytest.approx(cost, rel=1e-9) and choice.batch_size == b and choice.target.name == name


@pytest.mark.parametrize("arrivals", PROCESSES, ids=IDS)
@pytest.mark.parametrize("slo_s,percentile", [(0.12, 0.95), (0.3, 0.99), (0.8, 0.9)])
def test_the_pruned_search_finds_the_exhaustive_optimum(arrivals: MAP, slo_s: float, percentile: float) -> None:
    targets = [faas(m) for m in (1024, 1536, 2048, 4096)]
    timeouts = default_timeouts(slo_s)
    result = tune(arrivals, targets, slo_s, percentile)
    best = exhaustive(arrivals, targets, slo_s, percentile, timeouts, range(1, 65))
    if best is None:
        assert result.choice is None and result.fallback is not None
        return
    choice = result.choice
    assert choice is not None
    assert same(choice, best)
    assert result.configs_evaluated < len(timeouts) * 63 * len(targets) / 2, "most of the grid was never computed"


@pytest.mark.parametrize("arrivals", [MAP.poisson(300.0), BURSTY], ids=["poisson", "bursty"])
def test_the_pruned_search_finds_the_exhaustive_optimum_with_deadline_aware_closing(arrivals: MAP) -> None:
    targets = [faas(1024), faas(4096)]
    slo_s, percentile = 0.2, 0.95
    timeouts = default_timeouts(slo_s, count=12)
    sizes = range(1, 41, 3)
    result = tune(arrivals, targets, slo_s, percentile, batch_sizes=sizes, timeouts=timeouts, deadline_s=slo_s)
    best = exhaustive(arrivals, targets, slo_s, percentile, timeouts, sizes, deadline_s=slo_s)
    choice = result.choice
    assert best is not None and choice is not None
    assert same(choice, best)


def test_cold_starts_enter_the_search() -> None:
    warm = tune(BURSTY, [faas(2048)], 0.2, 0.95).choice
    cold = tune(BURSTY, [replace(faas(2048), cold_probability=0.03)], 0.2, 0.95).choice
    assert warm is not None and cold is not None
    assert cold.timeout_s < warm.timeout_s and cold.cost_per_request > warm.cost_per_request, \
        "a 0.9 s cold start for 3% of requests leaves less room to wait"


@pytest.mark.parametrize("arrivals", PROCESSES, ids=IDS)
def test_a_hint_changes_the_planes_computed_not_the_choice(arrivals: MAP) -> None:
    targets = [faas(2048)]
    plain = tune(arrivals, targets, 0.2, 0.99)
    assert plain.choice is not None
    for hint in (1e-4, 0.003, plain.choice.timeout_s, 0.2):
        hinted = tune(arrivals, targets, 0.2, 0.99, hint_s=hint)
        assert hinted.choice is not None and same(hinted.choice, (plain.choice.cost_per_request, plain.choice.batch_size,
                                                                   plain.choice.timeout_s, plain.choice.target.name))  # fmt: skip
    at_the_choice = tune(arrivals, targets, 0.2, 0.99, hint_s=plain.choice.timeout_s)
    assert at_the_choice.configs_evaluated <= plain.configs_evaluated
