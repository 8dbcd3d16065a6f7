"""The z-domain wait tables (`batching.spectral`) against the time-domain ones (stepping and
uniformization, `CountingProcess.on_grid`), and the fall-back where the decomposition is
ill-conditioned."""

from __future__ import annotations

import numpy as np
import pytest

from batching.arrivals import MAP
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from batching.phase_fit import hyper_map
from batching.spectral import ALIASING, Spectrum

from support import ALTERNATING, BURSTY

ON_OFF = MAP([[-2.0, 2.0], [1.0, -1001.0]], [[0.0, 0.0], [0.0, 1000.0]])  # the first phase has no arrivals
PROCESSES = {
    "poisson": MAP.poisson(300.0),
    "bursty": BURSTY,
    "alternating": ALTERNATING,
    "slow-bursts": MAP.mmpp2((400.0, 5.0), (0.5, 2.0)),
    "on-off": ON_OFF,
    "erlang-2": MAP([[-400.0, 400.0], [0.0, -400.0]], [[0.0, 0.0], [400.0, 0.0]]),  # defective D0
    "hyper-3": hyper_map(np.array([0.3, 0.5, 0.2]), np.array([0.02, 0.5, 4.0]) / 50.0, 0.6),
    "hyper-4": hyper_map(np.array([0.2, 0.3, 0.3, 0.2]), np.array([0.01, 0.2, 1.0, 3.0]) / 50.0, -0.1),
}
TABLES = ("p_T", "i_T", "timeout_dens", "fill_dens", "opener_cum")


def both_ways(arrivals: MAP, max_count: int, max_time: float) -> tuple[CountingProcess, CountingProcess]:
    return CountingProcess(arrivals, max_count, max_time), CountingProcess(arrivals, max_count, max_time, spectral=False)


def natural_scales(arrivals: MAP, timeout: float) -> dict[str, float]:
    """What each table is measured in: probabilities, seconds, arrivals per second..."""
    rate = float(arrivals.D1.sum(axis=1).max())
    return {"p_T": 1.0, "i_T": timeout, "timeout_dens": rate, "fill_dens": rate**2 * timeout, "opener_cum": rate * timeout}


@pytest.mark.parametrize("name", PROCESSES)
def test_the_z_domain_tables_are_the_time_domain_ones(name: str) -> None:
    """Within 1e-9 of each table's natural scale: counts beyond the N points of the circle
    fold in with weight 1e-10 (where T holds hundreds of arrivals, P(63, T) is 1e-57 and
    comes back as 1e-12)."""
    arrivals = PROCESSES[name]
    z_domain, time_domain = both_ways(arrivals, 63, 1.0)
    assert z_domain.spectrum() is not None
    for timeout in (1e-5, 0.003, 0.1, 1.0):
        scales = natural_scales(arrivals, timeout)
        for grid in (16, 128):
            fast, slow = WindowTables(z_domain, timeout, grid), WindowTables(time_domain, timeout, grid)
            for key in TABLES:
                mine, reference = getattr(fast, key), getattr(slow, key)
                if key.endswith("dens"):  # the time domain's convolutions run further
                    reference = reference[..., : mine.shape[-1]]
                assert np.abs(mine - reference).max() <= 1e-9 * scales[key], (name, timeout, grid, key)
                assert (mine >= 0).all()
            # P(n, u) and I(n, u) on the whole grid (the capped law's), made when asked for
            np.testing.assert_allclose(fast.p_u, slow.p_u, rtol=0, atol=1e-9)
            np.testing.assert_allclose(fast.i_u, slow.i_u, rtol=0, atol=1e-9 * timeout)


@pytest.mark.parametrize("name", ["bursty", "hyper-3", "on-off"])
def test_laws_from_either_domain_agree(name: str) -> None:
    z_domain, time_domain = both_ways(PROCESSES[name], 39, 0.2)
    for b in (1, 2, 5, 40):
        fast = wait_distribution(WindowTables(z_domain, 0.05, 128), b)
        slow = wait_distribution(WindowTables(time_domain, 0.05, 128), b)
        np.testing.assert_allclose(fast.size_pmf, slow.size_pmf, rtol=0, atol=1e-10)
        np.testing.assert_allclose(fast.cumulative, slow.cumulative, rtol=0, atol=1e-9)
        assert fast.mean_batch_size == pytest.approx(slow.mean_batch_size, rel=1e-10)


def coalescing(counts: int) -> MAP:
    """An MMPP(2) whose two eigenvalues of D0 + z D1 meet at a point of the circle
    `Spectrum.of` samples for `counts` (k = 8): there V is singular. With switching
    rates a, b and arrival rates l1, l2 the discriminant vanishes where
    z = 1 - (a - b + 2i sqrt(ab)) / (l2 - l1)."""
    points = max(16, 1 << (2 * counts - 1).bit_length())
    radius, angle = ALIASING ** (1.0 / points), 2 * np.pi * 8 / points
    spread = 1000.0  # l2 - l1
    root_ab = spread * radius * np.sin(angle) / 2
    difference = spread * (1 - radius * np.cos(angle))  # a - b
    b = (-difference + np.sqrt(difference**2 + 4 * root_ab**2)) / 2
    return MAP.mmpp2((10.0, 10.0 + spread), (difference + b, b))


def test_eigenvalues_meeting_on_the_circle_fall_back_to_stepping_in_time() -> None:
    arrivals = coalescing(64)
    assert Spectrum.of(arrivals, 64) is None
    counting = CountingProcess(arrivals, 63, 0.1)
    assert counting.spectrum() is None
    tables = WindowTables(counting, 0.1, 32)  # by stepping in time
    u = np.linspace(0.0, 0.1, 33)
    np.testing.assert_allclose(tables.p_u, counting.P(u), rtol=0, atol=1e-11)
    # Near it, still well-conditioned enough, the z-domain holds
    near = MAP(arrivals.D0 * 1.3, arrivals.D1 * 1.3)
    z_domain, time_domain = both_ways(near, 63, 0.1)
    if z_domain.spectrum() is not None:
        fast, slow = WindowTables(z_domain, 0.1, 32), WindowTables(time_domain, 0.1, 32)
        assert np.abs(fast.p_T - slow.p_T).max() <= 1e-8


def test_a_condition_bound_decides_the_domain() -> None:
    assert Spectrum.of(BURSTY, 64) is not None
    assert Spectrum.of(ALTERNATING, 64, max_condition=1.0) is None  # no V is that well-conditioned
    assert CountingProcess(BURSTY, 63, 0.1, spectral=False).spectrum() is None
