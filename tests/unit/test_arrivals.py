"""MAP quantities against hand-computed values, and MAP sampling against those quantities."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching.arrivals import MAP, gamma_renewal_sample

N = 200_000

# Phase 0 emits at 10/s, phase 1 at 500/s; they last 0.5 s and 0.05 s: SCV 7.4, acf1 0.35.
BURSTY = MAP.mmpp2((10.0, 500.0), (2.0, 20.0))
# Each arrival switches the phase: a long gap (mean 1 s) is followed by a short one (mean 0.05 s).
ALTERNATING = MAP([[-1.0, 0.0], [0.0, -20.0]], [[0.0, 1.0], [20.0, 0.0]])
ERLANG2 = MAP([[-2.0, 2.0], [0.0, -2.0]], [[0.0, 0.0], [2.0, 0.0]])
ORDER3 = MAP(
    [[-3.0, 1.0, 0.0], [0.0, -5.0, 1.0], [1.0, 0.0, -10.0]],
    [[1.0, 0.0, 1.0], [2.0, 1.0, 1.0], [3.0, 3.0, 3.0]],
)


def sample_stats(gaps: np.ndarray) -> tuple[float, float, float]:
    mean = gaps.mean()
    return 1.0 / mean, gaps.var() / mean**2, float(np.corrcoef(gaps[:-1], gaps[1:])[0, 1])


def relative_standard_error_of_mean(process: MAP, n: int) -> float:
    """sqrt(SCV (1 + 2 sum_k rho_k) / n), with rho_k = rho_1 gamma^(k-1) for a MAP(2)."""
    eigenvalues = np.sort(np.linalg.eigvals(process.P).real)
    gamma = eigenvalues[0]
    return float(np.sqrt(process.scv * (1.0 + 2.0 * process.acf(1) / (1.0 - gamma)) / n))


# -- standard quantities ----------------------------------------------------------------


def test_poisson_quantities() -> None:
    poisson = MAP.poisson(7.5)
    assert poisson.rate == pytest.approx(7.5)
    assert poisson.mean == pytest.approx(1 / 7.5)
    assert poisson.scv == pytest.approx(1.0)
    assert poisson.acf(1) == pytest.approx(0.0, abs=1e-12)


def test_mmpp2_quantities_by_hand() -> None:
    # D0 = [[-2, 1], [1, -4]], D1 = diag(1, 3): M = [[4, 1], [1, 2]] / 7, P = [[4, 3], [1, 6]] / 7,
    # pi = (1/4, 3/4), theta = (1/2, 1/2); E[X] = 1/2, E[X^2] = 4/7, E[X0 X1] = 13/49, gamma = 3/7.
    process = MAP.mmpp2((1.0, 3.0), (1.0, 1.0))
    assert process.rate == pytest.approx(2.0)
    assert process.pi == pytest.approx([0.25, 0.75])
    assert process.scv == pytest.approx(9 / 7)
    assert process.acf(1) == pytest.approx(1 / 21)
    assert process.acf(2) == pytest.approx(3 / 7 / 21)


def test_interrupted_poisson_is_renewal_with_known_scv() -> None:
    # On at 10/s, on and off periods of mean 1 s: rate 5, SCV = 1 + 2 * 10 * 1 / (1 + 1)^2 = 6.
    process = MAP.mmpp2((10.0, 0.0), (1.0, 1.0))
    assert process.rate == pytest.approx(5.0)
    assert process.scv == pytest.approx(6.0)
    assert process.acf(1) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "d0, d1",
    [
        ([[-1.0, -0.5], [0.0, -1.0]], [[1.5, 0.0], [0.0, 1.0]]),  # negative off-diagonal rate
        ([[-1.0, 0.0], [0.0, -1.0]], [[1.0, 0.0], [0.0, 0.5]]),  # a row that does not sum to 0
        ([[-1.0, 1.0], [1.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]]),  # no arrivals at all
        ([[-1.0, 0.0]], [[1.0, 0.0]]),  # not square
        ([[-2.0, 0.0], [0.0, -1.0]], [[2.5, -0.5], [0.0, 1.0]]),  # negative arrival rate
    ],
)
def test_invalid_maps_are_rejected(d0: list, d1: list) -> None:
    with pytest.raises(ValueError):
        MAP(d0, d1)


def test_map2_constructor_checks_the_order() -> None:
    assert MAP.map2(ALTERNATING.D0, ALTERNATING.D1).rate == pytest.approx(ALTERNATING.rate)
    with pytest.raises(ValueError):
        MAP.map2(ORDER3.D0, ORDER3.D1)


# -- sampling -------------------------------------------------------------------------------


def test_bursty_sample_matches_the_model() -> None:
    assert BURSTY.scv >= 5 and BURSTY.acf(1) >= 0.3
    rate, scv, acf1 = sample_stats(BURSTY.sample(N, np.random.default_rng(1)))
    assert abs(rate / BURSTY.rate - 1) < 5 * relative_standard_error_of_mean(BURSTY, N)
    assert scv == pytest.approx(BURSTY.scv, rel=0.10)
    assert acf1 == pytest.approx(BURSTY.acf(1), abs=0.03)


def test_negatively_correlated_sample_matches_the_model() -> None:
    assert ALTERNATING.acf(1) < -0.1
    rate, scv, acf1 = sample_stats(ALTERNATING.sample(N, np.random.default_rng(2)))
    assert rate == pytest.approx(ALTERNATING.rate, rel=0.02)
    assert scv == pytest.approx(ALTERNATING.scv, rel=0.05)
    assert acf1 == pytest.approx(ALTERNATING.acf(1), abs=0.02)


@pytest.mark.parametrize("process", [MAP.poisson(3.0), ERLANG2, ORDER3], ids=["poisson", "erlang2", "order3"])
def test_other_samples_match_their_models(process: MAP) -> None:
    rate, scv, acf1 = sample_stats(process.sample(N, np.random.default_rng(3)))
    assert rate == pytest.approx(process.rate, rel=0.01)
    assert scv == pytest.approx(process.scv, rel=0.03)
    assert acf1 == pytest.approx(process.acf(1), abs=0.01)


def test_first_gap_starts_in_the_given_phase() -> None:
    # From phase 0 the first gap has mean 1 s, from phase 1 it has mean 0.05 s.
    rng = np.random.default_rng(4)
    slow = [ALTERNATING.sample(1, rng, phase=0)[0] for _ in range(4000)]
    fast = [ALTERNATING.sample(1, rng, phase=1)[0] for _ in range(4000)]
    assert np.mean(slow) == pytest.approx(1.0, rel=0.06)
    assert np.mean(fast) == pytest.approx(0.05, rel=0.06)


def test_short_samples_carry_time_between_rounds() -> None:
    # Phase 0 rarely emits; most of its time ends in a silent switch. Many tiny samples
    # exercise the path where a round of visits ends with no arrival.
    quiet = MAP([[-1.0, 0.9], [0.05, -0.1]], [[0.1, 0.0], [0.0, 0.05]])
    rng = np.random.default_rng(5)
    gaps = np.concatenate([quiet.sample(3, rng, phase=0) for _ in range(20000)])
    first = np.linalg.inv(-quiet.D0) @ np.ones(2)
    assert len(gaps) == 60000
    assert gaps[::3].mean() == pytest.approx(first[0], rel=0.05)


def test_sampling_is_reproducible_and_validated() -> None:
    assert np.array_equal(BURSTY.sample(1000, np.random.default_rng(9)), BURSTY.sample(1000, np.random.default_rng(9)))
    assert BURSTY.sample(0, np.random.default_rng(0)).shape == (0,)
    with pytest.raises(ValueError):
        BURSTY.sample(-1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        BURSTY.sample(5, np.random.default_rng(0), phase=2)


def test_sampling_is_fast() -> None:
    rng = np.random.default_rng(6)
    BURSTY.sample(1000, rng)
    started = time.perf_counter()
    BURSTY.sample(N, rng)
    elapsed = time.perf_counter() - started
    assert N / elapsed > 500_000, f"{N / elapsed:.0f} gaps/s"  # about 5 million/s when the machine is idle


@st.composite
def map2s(draw: st.DrawFn) -> MAP:
    rate = st.one_of(st.just(0.0), st.floats(1e-3, 50.0))
    d0_off = [[0.0, draw(rate)], [draw(rate), 0.0]]
    d1 = [[draw(rate), draw(rate)], [draw(rate), draw(rate)]]
    d0 = np.array(d0_off) - np.diag(np.sum(d0_off, axis=1) + np.sum(d1, axis=1))
    process = MAP(d0, d1) if np.sum(d1) > 0 and (np.diag(d0) < 0).all() else MAP.poisson(1.0)
    try:
        process.rate
    except np.linalg.LinAlgError:
        return MAP.poisson(1.0)
    return process


@given(process=map2s(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
@settings(max_examples=150, deadline=None)
def test_any_map2_samples_n_non_negative_gaps(process: MAP, seed: int, n: int) -> None:
    gaps = process.sample(n, np.random.default_rng(seed))
    assert gaps.shape == (n,)
    assert np.isfinite(gaps).all() and (gaps >= 0).all()


# -- gamma renewal ------------------------------------------------------------------------


@pytest.mark.parametrize("cv", [0.3, 1.0, 2.5])
def test_gamma_renewal_has_the_asked_rate_and_cv(cv: float) -> None:
    rate, scv, acf1 = sample_stats(gamma_renewal_sample(40.0, cv, N, np.random.default_rng(7)))
    assert rate == pytest.approx(40.0, rel=0.02)
    assert scv == pytest.approx(cv**2, rel=0.05)
    assert acf1 == pytest.approx(0.0, abs=0.01)


def test_gamma_renewal_edge_cases() -> None:
    assert np.array_equal(gamma_renewal_sample(4.0, 0.0, 3, np.random.default_rng(0)), [0.25, 0.25, 0.25])
    for rate, cv in ((0.0, 1.0), (1.0, -0.1), (float("nan"), 1.0)):
        with pytest.raises(ValueError):
            gamma_renewal_sample(rate, cv, 10, np.random.default_rng(0))
