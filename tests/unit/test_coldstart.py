"""batching.coldstart against the simulator's warm environments (sim.simulate, LRU reuse).

Per request. Stationary figures discard the first 20% of the run; "from cold" compares
the whole run with the model's horizon_s. Tolerances are absolute plus relative,
since small probabilities need an absolute bound. The cases the model does not yet
meet are strict xfails, saying by how much (see bench/coldstart_model.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from batching import FixedPolicy
from batching.arrivals import MAP
from batching.coldstart import cold_probability
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from sim import ServiceProfile, simulate

BURSTY_FAST = MAP.mmpp2((2000.0, 50.0), (5.0, 10.0))  # SCV 15, phases of 0.1-0.2 s
SLOW_LULLS = MAP.mmpp2((100.0, 0.05), (1 / 30, 1 / 120))  # SCV ~550, lulls of minutes


def _profile(cold_ms: float) -> ServiceProfile:
    return ServiceProfile.from_dict({"name": "cold", "faas": {
        "memory_mb": {"1024": {"base_ms": 40, "per_item_ms": 8}}, "cold_start_ms": cold_ms,
        "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002}})  # fmt: skip


def _compare(arrivals: MAP, b: int, t: float, keep: float, cold_ms: float, n: int) -> tuple[float, float, float, float]:
    """(simulated stationary, model stationary, simulated from cold, model from cold)."""
    prof = _profile(cold_ms)
    times = np.concatenate([[0.0], np.cumsum(arrivals.sample(n - 1, np.random.default_rng(11)))])
    sim = simulate(times, FixedPolicy(b, t), prof, memory_mb=1024, keep_alive_s=keep)
    late = sim.close_time >= 0.2 * times[-1]
    stationary = float((sim.cold * sim.size)[late].sum() / sim.size[late].sum())
    whole = float((sim.cold * sim.size).sum() / sim.size.sum())
    law = wait_distribution(WindowTables(CountingProcess(arrivals, b - 1, t), t, 64), b)
    busy = np.asarray(prof.faas_service_s(np.arange(1, b + 1), 1024))
    model = float(cold_probability(arrivals, law.size_pmf, busy, keep, t, cold_start_s=cold_ms / 1e3))
    horizon = float(cold_probability(arrivals, law.size_pmf, busy, keep, t, horizon_s=times[-1], cold_start_s=cold_ms / 1e3))
    return stationary, model, whole, horizon


@pytest.mark.parametrize("keep", [60.0, 600.0])
@pytest.mark.parametrize("cold_ms", [200.0, 1000.0])
def test_fast_bursts_keep_the_pool_warm(keep: float, cold_ms: float) -> None:
    # Phases far shorter than the keep-alive: once warm, no environment is reclaimed.
    stationary, model, whole, horizon = _compare(BURSTY_FAST, 8, 0.05, keep, cold_ms, 60_000)
    assert stationary == 0.0
    assert model < 1e-4
    # From cold: the start-up's cold starts, within 0.5e-3 + 50% (the model is low by 20-40% today).
    assert abs(horizon - whole) <= 5e-4 + 0.5 * whole, (horizon, whole)


@pytest.mark.parametrize("rate,keep", [(1.0, 1.0)])
def test_short_keep_alive_on_sparse_poisson(rate: float, keep: float) -> None:
    # Gaps longer than the keep-alive reclaim the single environment.
    stationary, model, _, _ = _compare(MAP.poisson(rate), 4, 0.1, keep, 500.0, 30_000)
    assert abs(model - stationary) <= 0.005 + 0.3 * stationary, (model, stationary)


@pytest.mark.xfail(strict=True, reason="death per release over-counts when several idle environments wait (LRU): "
                   "model 0.08 vs simulated 0.02 at Poisson 5/s, K = 1 s; 0.10 vs 0.07 at 1/s, K = 3 s")
@pytest.mark.parametrize("rate,keep", [(5.0, 1.0), (1.0, 3.0)])
def test_short_keep_alive_over_counts(rate: float, keep: float) -> None:
    stationary, model, _, _ = _compare(MAP.poisson(rate), 4, 0.1, keep, 500.0, 30_000)
    assert abs(model - stationary) <= 0.005 + 0.3 * stationary, (model, stationary)


@pytest.mark.xfail(strict=True, reason="lulls longer than the keep-alive: the model is 0.9-5x the simulated share "
                   "(it misses how the cold start's longer hold sets the regrowth after a lull)")
@pytest.mark.parametrize("b,t,cold_ms", [(8, 0.05, 200.0), (32, 0.2, 200.0)])
def test_lulls_longer_than_the_keep_alive(b: int, t: float, cold_ms: float) -> None:
    stationary, model, _, _ = _compare(SLOW_LULLS, b, t, 60.0, cold_ms, 150_000)
    assert abs(model - stationary) <= 5e-4 + 0.3 * stationary, (model, stationary)
