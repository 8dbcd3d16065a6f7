"""The tuner: cheapest feasible choice (brute force on small grids), met in simulation."""

from __future__ import annotations

import numpy as np
import pytest

from batching.arrivals import MAP
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from batching.tuner import tune, tune_for_budget

from support import BURSTY, TARGETS, faas, simulated_latencies

GRID_B = [1, 2, 4, 8, 16, 32]
GRID_T = [0.002, 0.01, 0.05, 0.1]


def brute_force(arrivals: MAP, slo_s: float, percentile: float) -> list[tuple[float, int, float, str, float]]:
    """Every (B, T, target) of the small grid with its cost and attained share."""
    counting = CountingProcess(arrivals, max(GRID_B) - 1, max(GRID_T))
    rows = []
    for timeout in GRID_T:
        tables = WindowTables(counting, timeout, 128)
        for b in GRID_B:
            law = wait_distribution(tables, b)
            for target in TARGETS:
                attained = law.latency_cdf(np.array([slo_s]), target.service_s, target.overhead_s)[0]
                rows.append((law.cost_per_request(target.batch_cost), b, timeout, target.name, attained))
    return rows


@pytest.mark.parametrize("arrivals", [MAP.poisson(300.0), BURSTY], ids=["poisson", "bursty"])
@pytest.mark.parametrize("slo_s,percentile", [(0.15, 0.95), (0.3, 0.99)])
def test_no_cheaper_configuration_meets_the_slo(arrivals: MAP, slo_s: float, percentile: float) -> None:
    result = tune(arrivals, TARGETS, slo_s, percentile, batch_sizes=GRID_B, timeouts=GRID_T)
    choice = result.choice
    assert choice is not None
    assert choice.latency_s <= slo_s + 1e-6
    feasible = [row for row in brute_force(arrivals, slo_s, percentile) if row[4] >= percentile]
    assert min(row[0] for row in feasible) == pytest.approx(choice.cost_per_request, rel=1e-9)
    assert 0 < result.configs_evaluated <= len(GRID_B) * len(GRID_T) * len(TARGETS) - (len(GRID_T) - 1) * len(TARGETS)


def test_the_choice_meets_the_slo_when_the_queue_is_simulated() -> None:
    slo_s, percentile = 0.2, 0.99
    result = tune(BURSTY, TARGETS, slo_s, percentile)
    choice = result.choice
    assert choice is not None and choice.batch_size > 1, "batching should pay at this rate"
    times = np.cumsum(BURSTY.sample(200_000, np.random.default_rng(3)))
    latencies = simulated_latencies(times, choice.batch_size, choice.timeout_s,
                                    choice.target.service_s + choice.target.overhead_s)  # fmt: skip
    attained = float(np.mean(latencies <= slo_s))
    assert attained >= percentile - 0.002
    assert np.quantile(latencies, percentile) == pytest.approx(choice.latency_s, rel=0.03)


def test_an_impossible_slo_is_reported_with_the_closest_configuration() -> None:
    result = tune(MAP.poisson(100.0), TARGETS, slo_s=0.02, percentile=0.95)  # below overhead + s(1)
    assert result.choice is None
    assert result.fallback is not None and result.notes
    assert result.fallback.latency_s > 0.02


def test_cold_starts_are_counted_against_the_slo() -> None:
    warm = tune(MAP.poisson(50.0), [faas(2048)], slo_s=0.5, percentile=0.99)
    cold = tune(MAP.poisson(50.0), [faas(2048, cold_probability=0.05)], slo_s=0.5, percentile=0.99)
    assert warm.choice is not None
    assert cold.choice is None, "a 5% chance of a 0.9 s cold start cannot meet a 0.5 s p99"


def test_budget_dual_gives_the_fastest_within_budget() -> None:
    budget = 1.5e-6
    result = tune_for_budget(BURSTY, TARGETS, budget, 0.95, batch_sizes=GRID_B, timeouts=GRID_T)
    choice = result.choice
    assert choice is not None and choice.cost_per_request <= budget
    counting = CountingProcess(BURSTY, max(GRID_B) - 1, max(GRID_T))
    for timeout in GRID_T:
        tables = WindowTables(counting, timeout, 128)
        for b in GRID_B:
            law = wait_distribution(tables, b)
            for target in TARGETS:
                if law.cost_per_request(target.batch_cost) <= budget:
                    assert law.latency_percentile(0.95, target.service_s, target.overhead_s) >= choice.latency_s - 1e-6


@pytest.mark.parametrize("arrivals", [MAP.poisson(200.0), BURSTY, MAP.poisson(3.0)], ids=["poisson", "bursty", "sparse"])
def test_coarse_to_fine_lands_near_the_full_search(arrivals: MAP) -> None:
    from batching.tuner import tune_coarse_to_fine

    full = tune(arrivals, TARGETS, 0.3, 0.95).choice
    quick = tune_coarse_to_fine(arrivals, TARGETS, 0.3, 0.95).choice
    assert full is not None and quick is not None
    assert quick.latency_s <= 0.3 + 1e-6
    assert quick.cost_per_request <= full.cost_per_request * 1.05


@pytest.mark.parametrize("arrivals", [MAP.poisson(200.0), BURSTY, MAP.poisson(3.0)], ids=["poisson", "bursty", "sparse"])
@pytest.mark.parametrize("moved", [0.8, 1.0, 1.25])
def test_re_tuning_from_the_last_choice_lands_near_the_full_search(arrivals: MAP, moved: float) -> None:
    """Online, from the timeout chosen before the rate moved by `moved`: a few timeouts
    near it, walking downhill, and a choice costing within 5% of the full search's."""
    from batching.tuner import tune_coarse_to_fine

    before = tune(arrivals, TARGETS[:1], 0.3, 0.95).choice
    now = MAP(arrivals.D0 * moved, arrivals.D1 * moved)
    full = tune(now, TARGETS[:1], 0.3, 0.95)
    quick = tune_coarse_to_fine(now, TARGETS[:1], 0.3, 0.95, hint_s=before.timeout_s)
    assert full.choice is not None and quick.choice is not None
    assert quick.choice.latency_s <= 0.3 + 1e-6
    assert quick.choice.cost_per_request <= full.choice.cost_per_request * 1.05
    assert quick.configs_evaluated <= 4 * 63 + 1, "a few timeouts, not a search of all"
