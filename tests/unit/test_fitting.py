"""MAP(2) fitting: recovery of known processes, exact moments, fallbacks, real traces."""

from __future__ import annotations

import csv
import time
from datetime import datetime

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from batching.arrivals import MAP
from batching.fitting import FitResult, describe, fit_map2, map2_from_moments
from support import TRACES, needs_traces

N = 200_000

KNOWN = {
    # Phases of 0.5 s at 5/s and 0.05 s at 200/s: SCV 5.2, acf1 0.27.
    "bursty": MAP.mmpp2((5.0, 200.0), (2.0, 20.0)),
    # Long and short gaps mostly alternate (gamma = -0.8): acf1 -0.25.
    "negative": MAP([[-1.0, 0.0], [0.0, -20.0]], [[0.1, 0.9], [18.0, 2.0]]),
    "poisson": MAP.poisson(50.0),
    "erlang2": MAP([[-20.0, 20.0], [0.0, -20.0]], [[0.0, 0.0], [20.0, 0.0]]),
}


def assert_valid(result: FitResult) -> None:
    process = result.map
    assert np.isfinite(process.D0).all() and np.isfinite(process.D1).all()
    assert process.rate > 0 and np.isfinite(process.scv)
    assert result.achieved["rate"] == pytest.approx(process.rate)


@pytest.mark.parametrize("name", KNOWN)
def test_recovers_known_map2(name: str) -> None:
    truth = KNOWN[name]
    result = fit_map2(truth.sample(N, np.random.default_rng(11)))
    assert_valid(result)
    assert result.map.order <= 2
    assert result.achieved["rate"] == pytest.approx(truth.rate, rel=0.02)
    assert result.achieved["scv"] == pytest.approx(truth.scv, rel=0.10)
    assert result.achieved["acf1"] == pytest.approx(truth.acf(1), abs=0.05)
    assert result.achieved["rate"] == pytest.approx(result.target["rate"], rel=1e-9)  # the mean, exactly


def test_correlated_fits_are_map2_and_renewal_fits_are_not() -> None:
    rng = np.random.default_rng(12)
    assert fit_map2(KNOWN["bursty"].sample(N, rng)).kind == "map2"
    assert fit_map2(KNOWN["negative"].sample(N, rng)).kind == "map2"
    assert fit_map2(KNOWN["poisson"].sample(N, rng)).kind in {"renewal-h2", "renewal-hypo", "poisson"}
    assert fit_map2(KNOWN["erlang2"].sample(N, rng)).kind in {"renewal-hypo", "erlang"}


def test_matches_scv_and_acf1_exactly_when_a_map2_can() -> None:
    result = fit_map2(KNOWN["bursty"].sample(N, np.random.default_rng(13)))
    assert result.achieved["scv"] == pytest.approx(result.target["scv"], rel=1e-6)
    assert result.achieved["acf1"] == pytest.approx(result.target["acf1"], abs=1e-6)


# -- exact moments ------------------------------------------------------------------------


@st.composite
def map2s(draw: st.DrawFn) -> MAP:
    rate = st.one_of(st.just(0.0), st.floats(0.01, 100.0))
    d0_off = np.array([[0.0, draw(rate)], [draw(rate), 0.0]])
    d1 = np.array([[draw(rate), draw(rate)], [draw(rate), draw(rate)]])
    assume(d1.sum() > 0 and (d0_off.sum(axis=1) + d1.sum(axis=1) > 0).all())
    return MAP(d0_off - np.diag(d0_off.sum(axis=1) + d1.sum(axis=1)), d1)


@given(process=map2s())
@settings(max_examples=300, deadline=None)
def test_exact_moments_of_any_map2_come_back(process: MAP) -> None:
    """Mean and SCV always; the third moment and acf1 too unless they had to be clipped."""
    moments = (process.moment(1), process.moment(2), process.moment(3))
    scv, acf1 = process.scv, process.acf(1)
    assume(np.isfinite(moments).all() and abs(scv - 1) > 1e-3 and scv > 0.501)
    result = map2_from_moments(moments, acf1)
    assert result.map.mean == pytest.approx(moments[0], rel=1e-6)
    assert result.map.scv == pytest.approx(scv, rel=1e-6)
    fast_mean = 1.0 / np.abs(np.linalg.eigvals(process.D0)).max()
    gamma = np.sort(np.linalg.eigvals(process.P).real)[0]
    if fast_mean >= 0.02 * moments[0] and abs(gamma) <= 0.99:
        assert result.map.moment(3) == pytest.approx(moments[2], rel=1e-5)
        assert result.map.acf(1) == pytest.approx(acf1, abs=1e-6)


@given(gaps=hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(0.0, 1e4)))
@settings(max_examples=200, deadline=None)
def test_any_sample_gives_a_valid_map_with_its_mean(gaps: np.ndarray) -> None:
    result = fit_map2(gaps)
    assert_valid(result)
    if gaps.sum() > 0:
        assert result.map.mean == pytest.approx(gaps.mean(), rel=1e-6)


# -- fallbacks --------------------------------------------------------------------------


def test_tiny_sample_is_poisson_with_its_mean() -> None:
    result = fit_map2([0.1, 0.3, 0.2, 0.05, 0.6])
    assert result.kind == "poisson"
    assert result.map.mean == pytest.approx(0.25)


def test_all_zero_gaps_do_not_break_the_fit() -> None:
    result = fit_map2(np.zeros(100))
    assert result.kind == "poisson"
    assert_valid(result)
    assert describe(np.zeros(100)) == {"rate": float("inf"), "scv": 0.0, "acf1": 0.0}


def test_zero_gaps_in_real_looking_data_are_fine() -> None:
    rng = np.random.default_rng(14)
    gaps = rng.exponential(0.01, 10_000) * (rng.random(10_000) > 0.3)  # 30% simultaneous arrivals
    result = fit_map2(gaps)
    assert_valid(result)
    assert result.map.mean == pytest.approx(gaps.mean(), rel=1e-9)
    assert result.achieved["scv"] == pytest.approx(result.target["scv"], rel=1e-6)


@pytest.mark.parametrize("gaps", [np.full(100, 0.02), np.random.default_rng(15).uniform(0.015, 0.025, 1000)])
def test_smoother_than_erlang2_falls_back_to_erlang2(gaps: np.ndarray) -> None:
    result = fit_map2(gaps)
    assert result.kind == "erlang"
    assert result.map.mean == pytest.approx(gaps.mean(), rel=1e-9)
    assert result.achieved["scv"] == pytest.approx(0.5)


def test_strong_correlation_with_scv_below_one_is_clipped() -> None:
    # Gaps alternate around 0.3 and 1.7 with gamma noise of CV 0.5: SCV 0.86, acf1 -0.57.
    rng = np.random.default_rng(16)
    gaps = np.tile([0.3, 1.7], 5000) * rng.gamma(4.0, 0.25, 10_000)
    target = describe(gaps)
    assert 0.5 < target["scv"] < 1 and target["acf1"] < -0.2
    result = fit_map2(gaps)
    assert result.kind in {"map2-clipped", "renewal-hypo"}
    assert result.map.mean == pytest.approx(gaps.mean(), rel=1e-9)
    assert result.achieved["scv"] == pytest.approx(target["scv"], rel=1e-6)
    assert -0.05 < result.achieved["acf1"] <= 0


def test_invalid_samples_are_rejected() -> None:
    for gaps in ([], [1.0, -0.5, 2.0], [1.0, float("nan")], [float("inf")] * 30):
        with pytest.raises(ValueError):
            fit_map2(np.array(gaps))


def test_describe_known_values() -> None:
    gaps = np.tile([1.0, 3.0], 50)  # mean 2, variance 1, each gap the opposite of the last
    stats = describe(gaps)
    assert stats["rate"] == pytest.approx(0.5)
    assert stats["scv"] == pytest.approx(0.25)
    assert stats["acf1"] == pytest.approx(-0.99)  # (n - 1) / n with the usual estimator


def test_fitting_is_fast() -> None:
    gaps = KNOWN["bursty"].sample(100_000, np.random.default_rng(17))
    fit_map2(gaps)
    elapsed = []
    for _ in range(5):
        started = time.perf_counter()
        fit_map2(gaps)
        elapsed.append(time.perf_counter() - started)
    assert min(elapsed) < 0.05, f"{min(elapsed) * 1e3:.1f} ms"  # a few ms when the machine is idle


# -- real traces -------------------------------------------------------------------------


def trace_gaps(name: str) -> np.ndarray:
    with open(TRACES / f"azure_llm_2023_{name}.csv", newline="") as file:
        rows = csv.reader(file)
        next(rows)
        stamps = [datetime.fromisoformat(row[0][:26]).timestamp() for row in rows]  # microseconds suffice
    return np.diff(np.sort(np.array(stamps)))


@needs_traces
@pytest.mark.parametrize("name", ["code", "conv"])
def test_fits_azure_llm_traces(name: str) -> None:
    gaps = trace_gaps(name)
    result = fit_map2(gaps)
    assert_valid(result)
    assert result.map.mean == pytest.approx(gaps.mean(), rel=0.01)
    assert result.achieved["scv"] == pytest.approx(result.target["scv"], rel=1e-6)
    assert abs(result.achieved["acf1"] - result.target["acf1"]) < 0.05
    print(f"{name}: {result.kind}, target {result.target}, achieved {result.achieved}")
