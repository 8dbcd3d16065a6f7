"""The online arrival estimator: rate, fitted model, change detection, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching.arrivals import MAP
from batching.estimator import ArrivalEstimator


def poisson_times(rate: float, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    times = start + np.cumsum(rng.exponential(1.0 / rate, int(rate * (end - start) * 1.2) + 50))
    return times[times < end]


def map_times(process: MAP, end: float, rng: np.random.Generator) -> np.ndarray:
    times = np.cumsum(process.sample(int(process.rate * end * 1.5) + 100, rng))
    return times[times < end]


def feed(estimator: ArrivalEstimator, times: np.ndarray) -> None:
    for t in times:
        estimator.observe(float(t))


def test_stationary_poisson_rate_and_model() -> None:
    estimator = ArrivalEstimator()
    feed(estimator, poisson_times(100.0, 0.0, 60.0, np.random.default_rng(21)))
    assert estimator.rate(60.0) == pytest.approx(100.0, rel=0.05)
    result = estimator.model(60.0)
    assert result is not None
    assert result.map.rate == pytest.approx(100.0, rel=0.05)
    assert result.map.scv == pytest.approx(1.0, abs=0.1)
    assert estimator.changes == 0


def test_step_up_is_detected_and_tracked_within_two_seconds() -> None:
    rng = np.random.default_rng(22)
    estimator = ArrivalEstimator()
    feed(estimator, poisson_times(100.0, 0.0, 20.0, rng))
    assert estimator.changes == 0
    after = poisson_times(400.0, 20.0, 30.0, rng)
    feed(estimator, after[after <= 22.0])
    assert estimator.changes == 1
    assert estimator.last_change == pytest.approx(20.0, abs=0.2)
    assert estimator.rate(22.0) == pytest.approx(400.0, rel=0.10)
    result = estimator.model(22.0)
    assert result is not None and result.map.rate == pytest.approx(400.0, rel=0.10)


def test_step_down_and_silence_are_detected() -> None:
    rng = np.random.default_rng(23)
    estimator = ArrivalEstimator()
    feed(estimator, poisson_times(400.0, 0.0, 20.0, rng))
    feed(estimator, poisson_times(100.0, 20.0, 25.0, rng))
    assert estimator.changes == 1
    assert estimator.rate(25.0) == pytest.approx(100.0, rel=0.15)
    # Then nothing arrives: the detector notices without any arrival to prompt it.
    assert estimator.rate(27.0) < 70.0
    assert estimator.changes == 2
    assert estimator.rate(28.0) == 0.0


@pytest.mark.parametrize(
    "process",
    [MAP.mmpp2((10.0, 500.0), (0.5, 5.0)), MAP.mmpp2((40.0, 400.0), (2.0, 10.0))],
    ids=["scv8.5-acf0.42", "scv3.1-acf0.32"],
)
def test_no_change_flagged_on_stationary_bursty_traffic(process: MAP) -> None:
    assert process.scv > 3 and process.acf(1) > 0.3
    estimator = ArrivalEstimator()
    times = map_times(process, 60.0, np.random.default_rng(24))
    feed(estimator, times)
    assert estimator.changes == 0
    assert estimator.rate(60.0) == pytest.approx(process.rate, rel=0.25)  # 30 s of bursty traffic


def test_window_eviction_bounds_memory() -> None:
    estimator = ArrivalEstimator(window_s=5.0)
    feed(estimator, poisson_times(1000.0, 0.0, 60.0, np.random.default_rng(25)))
    assert 4500 < estimator.arrivals_held < 5500
    assert estimator.rate(60.0) == pytest.approx(1000.0, rel=0.05)
    assert estimator.rate(70.0) == 0.0 and estimator.arrivals_held == 0


def test_capacity_bounds_memory_and_keeps_the_rate_right() -> None:
    estimator = ArrivalEstimator(window_s=30.0, max_arrivals=2000)
    feed(estimator, poisson_times(1000.0, 0.0, 10.0, np.random.default_rng(26)))
    assert estimator.arrivals_held == 2000
    assert estimator.rate(10.0) == pytest.approx(1000.0, rel=0.1)


def test_model_needs_min_arrivals_and_is_refit_lazily() -> None:
    estimator = ArrivalEstimator(min_arrivals=50, refit_s=1.0)
    times = poisson_times(100.0, 0.0, 10.0, np.random.default_rng(27))
    feed(estimator, times[:30])
    assert estimator.model(float(times[29])) is None
    feed(estimator, times[30:])
    first = estimator.model(10.0)
    assert first is not None
    assert estimator.model(10.5) is first
    assert estimator.model(11.0) is not first


def test_time_must_not_go_backwards() -> None:
    estimator = ArrivalEstimator()
    estimator.observe(5.0)
    estimator.observe(5.0)  # simultaneous arrivals are fine
    with pytest.raises(ValueError):
        estimator.observe(4.0)
    with pytest.raises(ValueError):
        estimator.rate(4.9)


def test_rate_counts_arrivals_after_the_first() -> None:
    estimator = ArrivalEstimator()
    assert estimator.rate(0.0) == 0.0 and estimator.model(0.0) is None
    for t in (1.0, 1.5, 2.0, 2.5, 3.0):
        estimator.observe(t)
    assert estimator.rate(3.0) == pytest.approx(2.0)


@given(gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=400), window=st.floats(0.5, 20.0))
@settings(max_examples=100, deadline=None)
def test_held_arrivals_are_exactly_the_window(gaps: list[float], window: float) -> None:
    estimator = ArrivalEstimator(window_s=window)
    times = np.cumsum(gaps)
    feed(estimator, times)
    now = float(times[-1])
    held = estimator.arrivals_held
    if estimator.changes:
        expected = np.count_nonzero((times > now - window) & (times > estimator.last_change))
    else:  # every arrival after the first, which opens the record
        expected = np.count_nonzero(times[1:] > now - window)
    assert held == expected
    assert estimator.rate(now) >= 0.0
