"""The exact latency model against closed forms and against BatchQueue itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from batching.arrivals import MAP
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution

from support import ALTERNATING, BURSTY, simulated_latencies


def model(arrivals: MAP, batch_size: int, timeout_s: float, grid: int = 256):
    counting = CountingProcess(arrivals, max_count=max(batch_size - 1, 1), max_time=timeout_s)
    return wait_distribution(WindowTables(counting, timeout_s, grid), batch_size)


def test_the_processes_under_test_are_what_they_claim() -> None:
    assert BURSTY.scv >= 5 and BURSTY.acf(1) >= 0.3
    assert ALTERNATING.acf(1) <= -0.25


@pytest.mark.parametrize("batch_size,timeout_s", [(4, 0.01), (16, 0.01), (64, 0.002)])
def test_poisson_batch_sizes_are_truncated_poisson_counts(batch_size: int, timeout_s: float) -> None:
    rate = 500.0
    dist = model(MAP.poisson(rate), batch_size, timeout_s)
    counts = stats.poisson(rate * timeout_s)
    expected = np.append(counts.pmf(np.arange(batch_size - 1)), counts.sf(batch_size - 2))
    np.testing.assert_allclose(dist.size_pmf, expected, atol=1e-9)


def test_poisson_waits_without_a_size_limit_are_uniform_plus_the_opener() -> None:
    # Given k arrivals after the opener, Poisson arrivals are uniform over the window:
    # a random request waits T (the opener) or a uniform time in (0, T).
    rate, timeout_s = 400.0, 0.01
    dist = model(MAP.poisson(rate), 64, timeout_s)  # B far above any count that happens
    waits = np.linspace(0.0, timeout_s * 0.999, 25)
    service = np.zeros(64)
    expected = (rate * timeout_s * waits / timeout_s) / (1 + rate * timeout_s)
    np.testing.assert_allclose(dist.latency_cdf(waits, service), expected, atol=2e-4)
    assert dist.latency_cdf(np.array([timeout_s]), service)[0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("arrivals", [MAP.poisson(300.0), BURSTY, ALTERNATING], ids=["poisson", "bursty", "alternating"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 8, 32])
def test_every_request_is_accounted_for(arrivals: MAP, batch_size: int) -> None:
    dist = model(arrivals, batch_size, 0.01)
    assert dist.size_pmf.sum() == pytest.approx(1.0, abs=1e-9)
    assert (dist.size_pmf >= -1e-12).all()
    # The expected number of requests over all waits is the mean batch size.
    total = dist.cumulative[:, -1].sum() + dist.at_cap.sum()
    assert total == pytest.approx(dist.mean_batch_size, rel=1e-3)
    service = 0.002 + 0.0001 * np.arange(1, batch_size + 1)
    xs = np.linspace(0.0, 0.02, 200)
    cdf = dist.latency_cdf(xs, service)
    assert (np.diff(cdf) >= -1e-9).all() and cdf[-1] == pytest.approx(1.0, abs=1e-6)


def test_batches_of_one_wait_nothing() -> None:
    dist = model(BURSTY, 1, 0.01)
    assert dist.latency_percentile(0.99, np.array([0.004])) == pytest.approx(0.004, abs=1e-6)


def test_cold_starts_mix_in_as_a_shift() -> None:
    dist = model(MAP.poisson(100.0), 8, 0.01)
    service = np.full(8, 0.005)
    xs = np.array([0.012, 0.2, 0.215])
    warm = dist.latency_cdf(xs, service)
    shifted = dist.latency_cdf(xs - 0.2, service)
    mixed = dist.latency_cdf(xs, service, cold_probability=0.1, cold_start_s=0.2)
    np.testing.assert_allclose(mixed, 0.9 * warm + 0.1 * shifted)


@pytest.mark.parametrize(
    "arrivals,batch_size,timeout_s",
    [(MAP.poisson(500.0), 16, 0.01), (BURSTY, 32, 0.01), (BURSTY, 8, 0.02), (ALTERNATING, 10, 0.02)],
    ids=["poisson", "bursty-B32", "bursty-B8", "alternating"],
)
def test_percentiles_match_simulation_of_the_queue(arrivals: MAP, batch_size: int, timeout_s: float) -> None:
    rng = np.random.default_rng(7)
    times = np.cumsum(arrivals.sample(150_000, rng))
    service = 0.005 + 0.0005 * np.arange(1, batch_size + 1)
    simulated = simulated_latencies(times, batch_size, timeout_s, service)
    dist = model(arrivals, batch_size, timeout_s)
    for p in (0.5, 0.95, 0.99):
        predicted = dist.latency_percentile(p, service)
        assert predicted == pytest.approx(np.quantile(simulated, p), rel=0.02), p
