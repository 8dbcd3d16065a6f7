"""The online arrival estimator: rate, fitted model, change detection, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from batching.arrivals import MAP
from batching.estimator import ArrivalEstimator, _bin_counts, _TimeRing


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


# -- arrivals in bulk (observe_many) ----------------------------------------------------


def state(estimator: ArrivalEstimator) -> dict[str, object]:
    """Everything the estimator holds, floats by their bits, its buffer by what it holds and where."""
    out: dict[str, object] = {}
    for name, value in vars(estimator).items():
        out[name] = float(value).hex() if isinstance(value, (float, np.floating)) else value
    ring = estimator._times
    out["_times"] = (ring._start, ring.size, ring.slots, ring.array().tobytes())
    return out


def changing_times(rng: np.random.Generator, rates: tuple[float, ...] = (20.0, 200.0, 1000.0)) -> np.ndarray:
    """Poisson stretches whose rate jumps, with silences, bursts of simultaneous arrivals
    and arrivals closer than a nanosecond: the detector raises alarms up and down."""
    parts, start = [], 0.0
    for k in range(int(rng.integers(4, 8))):
        rate, length = float(rng.choice(rates)), float(rng.uniform(12.0, 20.0) if k == 0 else rng.uniform(1.0, 15.0))
        times = start + np.cumsum(rng.exponential(1.0 / rate, int(rate * length * 1.3) + 5))
        times = times[times < start + length]
        if rng.random() < 0.3:  # bursts: several arrivals at the same instant
            times = np.repeat(times, rng.integers(1, 5, len(times)))
        if rng.random() < 0.2:
            times = np.sort(np.concatenate([times, times + 1e-10]))
        parts.append(times)
        start += length + (float(rng.uniform(5.0, 40.0)) if rng.random() < 0.3 else 0.0)
    return np.concatenate(parts)


def assert_bulk_equals_one_by_one(times: np.ndarray, rng: np.random.Generator, **options: float) -> int:
    """Feed `times` one by one to one estimator and in chunks of random sizes (with queries
    in between) to another: the same state after every chunk, the same answers after all.
    The alarms raised."""
    one, bulk = ArrivalEstimator(**options), ArrivalEstimator(**options)  # type: ignore[arg-type]
    i = 0
    while i < len(times):
        chunk = times[i : i + int(rng.choice([1, 7, 300, 5000, 100_000], p=[0.05, 0.1, 0.25, 0.3, 0.3]))]
        changes = bulk.changes
        told = bulk.observe_many(chunk)
        assert 1 <= told <= len(chunk)
        if told < len(chunk):  # it stops only just after an alarm
            assert bulk.changes == changes + 1
        for t in chunk[:told].tolist():
            one.observe(t)
        i += told
        assert state(bulk) == state(one)
        if i < len(times) and rng.random() < 0.1:  # a query moves the clock (and the detector) between arrivals
            later = float(times[i - 1]) + float(rng.choice([0.0, 0.5, 1.0])) * float(times[i] - times[i - 1])
            assert bulk.rate(later) == one.rate(later)
    end = float(times[-1])
    assert state(bulk) == state(one)
    for now in (end, end + 0.5, end + 60.0):
        gaps_bulk, gaps_one = bulk.gaps(now), one.gaps(now)
        assert (gaps_bulk is None) == (gaps_one is None)
        assert gaps_bulk is None or gaps_bulk.tobytes() == gaps_one.tobytes()  # type: ignore[union-attr]
        assert float(bulk.rate(now)).hex() == float(one.rate(now)).hex()
        assert state(bulk) == state(one)
    return one.changes


@pytest.mark.parametrize("seed", range(5))
def test_bulk_observe_equals_one_by_one(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    alarms = assert_bulk_equals_one_by_one(changing_times(rng), rng)
    short = {"window_s": 3.0, "warmup_s": 1.5, "refit_s": 0.25}
    alarms += assert_bulk_equals_one_by_one(changing_times(rng), rng, **short, max_arrivals=500)
    alarms += assert_bulk_equals_one_by_one(changing_times(rng, (50.0, 400.0)), rng, **short, max_arrivals=3000)
    assert alarms >= 3  # the streams do move the detector


@pytest.mark.parametrize("seed", range(3))
def test_bulk_observe_equals_one_by_one_through_small_steps(seed: int) -> None:
    # Rates three times apart: a downward alarm often comes in the decay before an
    # arrival, by less than that arrival's own step would take back.
    rng = np.random.default_rng(400 + seed)
    rates = [300.0, 100.0, 300.0, 100.0, 300.0]
    times = np.concatenate([poisson_times(rate, 12.0 * k, 12.0 * (k + 1), rng) for k, rate in enumerate(rates)])
    assert assert_bulk_equals_one_by_one(times, rng) >= 2


@given(
    gaps=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.05), st.floats(0.0, 3.0)), min_size=1, max_size=600),
    seed=st.integers(0, 2**32 - 1),
    window=st.floats(0.2, 20.0),
    refit=st.sampled_from([0.0, 0.1, 1.0]),
    capacity=st.sampled_from([3, 40, 1_000_000]),
)
@settings(max_examples=150, deadline=None)
def test_bulk_observe_equals_one_by_one_on_any_gaps(
    gaps: list[float], seed: int, window: float, refit: float, capacity: int
) -> None:
    # A touchy detector on little data: alarms, refreshes and a full buffer are common.
    options = {"window_s": window, "refit_s": refit, "max_arrivals": capacity, "min_arrivals": 5, "threshold": 2.0,
               "dispersion_bin_s": 0.05, "warmup_s": 0.3}  # fmt: skip
    assert_bulk_equals_one_by_one(np.cumsum(gaps), np.random.default_rng(seed), **options)


def test_bulk_observe_stops_just_after_an_alarm_and_refuses_time_going_backwards() -> None:
    rng = np.random.default_rng(31)
    times = np.concatenate([poisson_times(100.0, 0.0, 20.0, rng), poisson_times(400.0, 20.0, 25.0, rng)])
    one = ArrivalEstimator()
    alarm = next(i for i, t in enumerate(times.tolist()) if one.observe(t) is None and one.changes)
    bulk = ArrivalEstimator()
    assert bulk.observe_many(times) == alarm + 1 and bulk.changes == 1
    assert state(bulk) == state(one)
    backwards = np.array([30.0, 31.0, 30.5, 32.0])
    with pytest.raises(ValueError):
        bulk.observe_many(backwards)
    for t in (30.0, 31.0):
        one.observe(t)
    assert state(bulk) == state(one)  # the arrivals before the bad one were taken, as one by one


@given(
    held=st.lists(st.floats(0.0, 1.0), max_size=60),
    added=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=200),
    window=st.floats(0.0, 2.0),
    capacity=st.integers(1, 80),
)
@settings(max_examples=300, deadline=None)
def test_time_ring_extend_through_equals_drop_and_append_one_by_one(
    held: list[float], added: list[float], window: float, capacity: int
) -> None:
    one, bulk = _TimeRing(capacity), _TimeRing(capacity)
    first = np.cumsum(held)
    for t in first.tolist():
        one.append(t), bulk.append(t)
    times = (first[-1] if len(first) else 0.0) + np.cumsum(added)
    for t in times.tolist():
        one.drop_through(t - window)
        assume(one.size < one.slots)  # the estimator takes a filling buffer one by one
        one.append(t)
    bulk.extend_through(times, float(times[-1]) - window)
    assert (bulk._start, bulk.size, bulk.slots) == (one._start, one.size, one.slots)
    assert bulk.array().tobytes() == one.array().tobytes()
    assert np.array_equal(bulk.count_through(times), np.count_nonzero(one.array()[:, None] <= times, axis=0))


@given(
    ticks=st.lists(st.integers(0, 64), min_size=2, max_size=300),
    tick=st.sampled_from([0.25, 0.1, 1 / 3]),
    bins=st.integers(2, 16),
    before=st.sampled_from([0.0, 0.25, 0.7]),
    after=st.sampled_from([0.0, 0.5]),
)
@settings(max_examples=300, deadline=None)
def test_bin_counts_equal_bincount(ticks: list[int], tick: float, bins: int, before: float, after: float) -> None:
    times = np.sort(np.array(ticks, dtype=float)) * tick  # many times right on a bin's edge
    start = float(times[0]) - before
    width = (float(times[-1]) + after - start) / bins
    assume(width > 0)
    expected = np.bincount(np.minimum(((times - start) / width).astype(int), bins - 1), minlength=bins)
    counts = _bin_counts(times, start, width, bins)
    assert counts.dtype == expected.dtype and counts.tolist() == expected.tolist()
