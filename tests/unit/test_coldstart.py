"""batching.coldstart and batching.coldmix against the simulator's warm environments
(sim.simulate: idle-longest reuse, no warm environment at the start).

Per request, over whole runs of a few minutes from cold, pooled over seeds (the share
of all requests, which is what the model's expectation is of). The share's tolerance,
1e-3 + 35% of the simulated share (small shares need an absolute bound), is what the
model meets today: it over-predicts by up to 30% where lulls longer than K cut the
pool within a short run (bench/coldstart_model.py prints the grid, worst case first).
"""

from __future__ import annotations

import numpy as np
import pytest

from batching import FixedPolicy
from batching.arrivals import MAP
from batching.coldmix import predict
from batching.coldstart import cold_probability
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from sim import simulate

from support import BURSTY, make_profile

ON_OFF = MAP.mmpp2((200.0, 0.01), (1 / 15, 1 / 100))  # SCV ~2300: bursts of 15 s, lulls of 100 s
SLOW = MAP.mmpp2((100.0, 0.02), (1 / 20, 1 / 90))  # SCV ~960: lulls of 90 s, mostly longer than 60 s
OVERHEAD_MS = 15.0


def _runs(arrivals: MAP, b: int, t: float, keep: float, cold_ms: float, horizon: float, seeds: int) -> list:
    profile = make_profile(overhead_ms=OVERHEAD_MS, cold_ms=cold_ms)
    runs = []
    for seed in range(seeds):
        gaps = arrivals.sample(int(arrivals.rate * horizon * 1.5) + 20, np.random.default_rng(seed))
        times = np.concatenate([[0.0], np.cumsum(gaps)])
        runs.append(simulate(times[times <= horizon], FixedPolicy(b, t), profile, memory_mb=1024, keep_alive_s=keep))
    return runs


def _service(b: int) -> np.ndarray:
    return np.asarray(make_profile().faas_service_s(np.arange(1, b + 1), 1024), dtype=float)


def _model(arrivals: MAP, b: int, t: float, keep: float, cold_ms: float, horizon: float | None) -> float:
    law = wait_distribution(WindowTables(CountingProcess(arrivals, max(b - 1, 1), t), t, 64), b)
    busy = _service(b) + OVERHEAD_MS / 1e3
    return float(cold_probability(arrivals, law.size_pmf, busy, keep, t, horizon_s=horizon, cold_start_s=cold_ms / 1e3))


def _simulated_share(runs: list) -> float:
    return sum(float((r.cold * r.size).sum()) for r in runs) / sum(float(r.size.sum()) for r in runs)


GRID = [
    # Poisson, keep-alives of 1-10 s: gaps longer than K empty the pool; the cold start's
    # longer hold makes the next closings cold too.
    ("poisson-1", MAP.poisson(1.0), 1, 0.01, 1.0, 200.0, 300.0, 8),
    ("poisson-1", MAP.poisson(1.0), 8, 0.05, 3.0, 1000.0, 300.0, 8),
    ("poisson-5", MAP.poisson(5.0), 1, 0.01, 1.0, 1000.0, 300.0, 8),
    ("poisson-5", MAP.poisson(5.0), 8, 0.05, 3.0, 200.0, 300.0, 8),
    ("poisson-5", MAP.poisson(5.0), 8, 0.05, 10.0, 1000.0, 300.0, 8),
    # Poisson, keep-alives of minutes: only the start-up and concurrency's peaks.
    ("poisson-50", MAP.poisson(50.0), 8, 0.05, 60.0, 200.0, 300.0, 8),
    ("poisson-50", MAP.poisson(50.0), 32, 0.2, 600.0, 1000.0, 300.0, 8),
    # Bursty MMPP(2), keep-alives of minutes: phases far shorter than K (the pool only grows) ...
    ("bursty", BURSTY, 8, 0.05, 60.0, 200.0, 60.0, 8),
    ("bursty", BURSTY, 32, 0.2, 600.0, 1000.0, 60.0, 8),
    # ... and lulls longer than K, which cut the pool, and the bursts regrow it.
    ("on-off", ON_OFF, 8, 0.05, 60.0, 200.0, 300.0, 48),
    ("on-off", ON_OFF, 32, 0.2, 600.0, 1000.0, 300.0, 48),
    ("slow", SLOW, 8, 0.05, 60.0, 1000.0, 300.0, 48),
    ("slow", SLOW, 32, 0.2, 60.0, 200.0, 120.0, 48),
]


@pytest.mark.parametrize("name,arrivals,b,t,keep,cold_ms,horizon,seeds", GRID, ids=[
    f"{g[0]}-B{g[2]}-K{g[4]:g}-c{g[5]:g}" for g in GRID])  # fmt: skip
def test_cold_share_against_simulation(name: str, arrivals: MAP, b: int, t: float, keep: float, cold_ms: float,
                                       horizon: float, seeds: int) -> None:  # fmt: skip
    simulated = _simulated_share(_runs(arrivals, b, t, keep, cold_ms, horizon, seeds))
    model = _model(arrivals, b, t, keep, cold_ms, horizon)
    assert abs(model - simulated) <= 1e-3 + 0.35 * simulated, (model, simulated)


def test_stationary_share_vanishes_when_the_pool_never_shrinks() -> None:
    # Phases far shorter than a minute's keep-alive: once warm, no environment is reclaimed.
    assert _model(BURSTY, 8, 0.05, 60.0, 1000.0, None) < 1e-4
    # A longer run dilutes the start-up: the share falls about as 1/H.
    short, long = _model(BURSTY, 8, 0.05, 60.0, 1000.0, 60.0), _model(BURSTY, 8, 0.05, 60.0, 1000.0, 600.0)
    assert 5.0 <= short / long <= 12.0


def test_targets_at_once_equal_one_at_a_time() -> None:
    law = wait_distribution(WindowTables(CountingProcess(ON_OFF, 15, 0.1), 0.1, 64), 16)
    busy = np.stack([_service(16), 0.5 * _service(16), 2.0 * _service(16)])
    together = cold_probability(ON_OFF, law.size_pmf, busy, 60.0, 0.1, horizon_s=300.0, cold_start_s=0.5)
    apart = [float(cold_probability(ON_OFF, law.size_pmf, row, 60.0, 0.1, horizon_s=300.0, cold_start_s=0.5)) for row in busy]
    np.testing.assert_allclose(together, apart, rtol=1e-9)


def test_a_concurrency_limit_of_one_leaves_only_gaps_and_the_start() -> None:
    law = wait_distribution(WindowTables(CountingProcess(MAP.poisson(50.0), 7, 0.05), 0.05, 64), 8)
    capped = float(cold_probability(MAP.poisson(50.0), law.size_pmf, _service(8), 60.0, 0.05, concurrency=1,
                                    horizon_s=300.0, cold_start_s=1.0))  # fmt: skip
    free = float(cold_probability(MAP.poisson(50.0), law.size_pmf, _service(8), 60.0, 0.05, horizon_s=300.0,
                                  cold_start_s=1.0))  # fmt: skip
    assert capped <= free


P99_GRID = [(arrivals, b, t, keep, cold_ms, horizon)
            for arrivals in ("on-off", "slow") for b, t in ((8, 0.05), (32, 0.2))
            for keep in (60.0, 600.0) for cold_ms in (200.0, 1000.0) for horizon in (120.0, 300.0)]  # fmt: skip


@pytest.mark.parametrize("name,b,t,keep,cold_ms,horizon", P99_GRID, ids=[
    f"{g[0]}-B{g[1]}-K{g[3]:g}-c{g[4]:g}-H{g[5]:g}" for g in P99_GRID])  # fmt: skip
def test_p99_with_cold_starts_within_5_percent(name: str, b: int, t: float, keep: float, cold_ms: float, horizon: float) -> None:
    """Bursty MAPs, keep-alives of 60-600 s, cold starts of 0.2-1 s: the predicted p99,
    cold starts included, within 5% of the simulated one where cold starts move it.

    Where the cold share is within a factor 2 of 1% the p99 sits on the edge between
    the warm tail and the cold requests (it jumps by the cold start for a change of a
    fraction of a percent in the share, less than runs of a few minutes differ by);
    there the share is left to test_cold_share_against_simulation."""
    arrivals = {"on-off": ON_OFF, "slow": SLOW}[name]
    runs = _runs(arrivals, b, t, keep, cold_ms, horizon, 48)
    latency = np.concatenate([r.latency_s for r in runs])
    warm = np.concatenate([r.latency_s - np.where(r.cold[r.batch], cold_ms / 1e3, 0.0) for r in runs])
    simulated, simulated_warm = np.quantile(latency, 0.99), np.quantile(warm, 0.99)
    share = _simulated_share(runs)
    model_share, predicted = predict(arrivals, b, t, _service(b), OVERHEAD_MS / 1e3, cold_ms / 1e3, keep, horizon, 0.99)
    if simulated <= 1.01 * simulated_warm:
        pytest.skip(f"cold starts do not move the p99 here ({simulated_warm * 1e3:.1f} -> {simulated * 1e3:.1f} ms)")
    if 0.005 <= share <= 0.02:
        pytest.skip(f"the cold share {share:.4f} is on the p99's edge")
    assert abs(predicted / simulated - 1) <= 0.05, (predicted, simulated, share, model_share)


def test_phase_laws_weighed_by_alpha_are_the_stationary_law() -> None:
    # The per-phase laws the cold mixture uses read batching.latency's tables directly.
    from batching.coldmix import phase_laws

    tables = WindowTables(CountingProcess(ON_OFF, 15, 0.1), 0.1, 64)
    law, laws = phase_laws(tables, 16)
    np.testing.assert_allclose(sum(a * x.size_pmf for a, x in zip(law.alpha, laws)), law.size_pmf, atol=1e-12)
    np.testing.assert_allclose(sum(a * x.cumulative for a, x in zip(law.alpha, laws)), law.cumulative, atol=1e-9)


def test_cold_by_size_is_cold_probability_per_batch_size() -> None:
    from batching.coldstart import cold_by_size

    tables = WindowTables(CountingProcess(ON_OFF, 31, 0.1), 0.1, 64)
    pmfs = [wait_distribution(tables, b).size_pmf for b in (1, 4, 16, 32)]
    busy = np.stack([_service(32), 0.5 * _service(32)])
    grid = cold_by_size(ON_OFF, pmfs, busy, 60.0, 0.1, horizon_s=300.0, cold_start_s=0.5)
    assert grid.shape == (2, 4)
    for k, pmf in enumerate(pmfs):
        np.testing.assert_allclose(grid[:, k], cold_probability(ON_OFF, pmf, busy[:, : len(pmf)], 60.0, 0.1, horizon_s=300.0,
                                                                cold_start_s=0.5), rtol=1e-12)  # fmt: skip
