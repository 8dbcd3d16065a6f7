"""Arrival fits beyond MAP(2): the likelihood that scores them, recovery of known processes of 3 and 4
phases, and the choice between candidates on held-back data, on samples and on the Azure traces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from batching.arrival_fits import MIN_CHOICE_GAPS, fit_arrivals
from batching.arrivals import MAP
from batching.fitting import fit_map2
from batching.likelihood import log_likelihood, mean_log_likelihood
from batching.phase_fit import fit_hyper_map, hyper_map
from sim import read_trace
from support import TRACES, needs_traces

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)

# Known processes in mean-1 units (weights, means, persistence), run at 50/s.
KNOWN = {
    "three-bursty": ([0.3, 0.5, 0.2], [0.02, 0.5, 4.0], 0.6),
    "four": ([0.2, 0.3, 0.3, 0.2], [0.01, 0.2, 1.0, 3.0], 0.3),
    "three-alternating": ([0.3, 0.5, 0.2], [0.02, 0.5, 4.0], -0.2),
}


def reference_log_likelihood(process: MAP, gaps: np.ndarray) -> float:
    """The forward recursion gap by gap, with scipy's expm: slow, and plainly right."""
    alpha, total = process.pi.copy(), 0.0
    for gap in gaps:
        alpha = alpha @ scipy.linalg.expm(process.D0 * gap) @ process.D1
        total += np.log(alpha.sum())
        alpha /= alpha.sum()
    return total


@pytest.mark.parametrize(
    "process",
    [
        MAP.mmpp2((5.0, 200.0), (2.0, 20.0)),  # eigen-decomposition
        MAP([[-20.0, 20.0], [0.0, -20.0]], [[0.0, 0.0], [20.0, 0.0]]),  # Erlang-2: defective D0, scaling and squaring
        hyper_map(np.array([0.3, 0.5, 0.2]), np.array([0.02, 0.5, 4.0]), 0.6),  # diagonal D0
        MAP.poisson(3.0),
    ],
)
def test_log_likelihood_is_the_forward_recursion(process: MAP) -> None:
    gaps = process.sample(400, np.random.default_rng(1))
    if process.pi @ process.D1.sum(axis=1) > 0:  # a positive density at 0 (not Erlang's)
        gaps[::17] = 0.0  # simultaneous arrivals are data too
    assert log_likelihood(process, gaps) == pytest.approx(reference_log_likelihood(process, gaps), rel=1e-9, abs=1e-9)


def test_log_likelihood_survives_gaps_of_many_means() -> None:
    process = hyper_map(np.array([0.5, 0.5]), np.array([0.01, 1.99]), 0.5)
    gaps = np.array([1e3, 0.0, 5e2, 1e-3] * 50)  # exp(-rate * gap) underflows for every phase but the slow one
    assert np.isfinite(log_likelihood(process, gaps))
    assert log_likelihood(process, gaps) == pytest.approx(reference_log_likelihood(process, gaps), rel=1e-9)


@pytest.mark.parametrize("name", KNOWN)
def test_recovers_known_higher_order_process(name: str) -> None:
    weights, means, persistence = KNOWN[name]
    truth = hyper_map(np.array(weights), np.array(means), persistence).scaled(50.0)
    gaps = truth.sample(100_000, np.random.default_rng(5))
    fit = fit_hyper_map(gaps, len(weights))
    assert fit.kind == f"hmap{len(weights)}"
    assert fit.map.rate == pytest.approx(1.0 / gaps.mean(), rel=1e-9)
    assert fit.map.rate == pytest.approx(truth.rate, rel=0.04)  # the sample's own mean is a percent or two off
    assert fit.map.scv == pytest.approx(truth.scv, rel=0.06)
    for lag in (1, 3):
        assert fit.map.acf(lag) == pytest.approx(truth.acf(lag), abs=0.015)
    model = fit.map.sample(200_000, np.random.default_rng(6))
    ratio = np.quantile(gaps, QUANTILES) / np.quantile(model, QUANTILES)
    assert ratio == pytest.approx(np.ones(len(QUANTILES)), abs=0.05)


@pytest.mark.parametrize("name", KNOWN)
def test_chosen_fit_beats_map2_on_held_back_gaps_of_a_known_process(name: str) -> None:
    weights, means, persistence = KNOWN[name]
    gaps = hyper_map(np.array(weights), np.array(means), persistence).scaled(50.0).sample(40_000, np.random.default_rng(8))
    first, second = gaps[:20_000], gaps[20_000:]
    chosen = fit_arrivals(first)
    assert chosen.kind.startswith("hmap") and chosen.map.order >= 3
    assert set(chosen.scores) == {"map2", "hmap2", "hmap3", "hmap4"}
    assert mean_log_likelihood(chosen.map, second) > mean_log_likelihood(fit_map2(first).map, second) + 0.05


def test_a_map2_stays_a_map2_and_few_gaps_get_no_contest() -> None:
    bursty = MAP.mmpp2((5.0, 200.0), (2.0, 20.0))
    chosen = fit_arrivals(bursty.sample(20_000, np.random.default_rng(9)))
    assert chosen.map.order == 2  # more phases gain nothing worth their cost
    few = fit_arrivals(bursty.sample(MIN_CHOICE_GAPS - 1, np.random.default_rng(10)))
    assert few.map.order <= 2 and few.scores == {}


def test_fit_keeps_phases_slow_enough_for_the_latency_model() -> None:
    """Gaps of exactly zero pull a phase towards an infinite rate; it stays at 100x the mean rate."""
    rng = np.random.default_rng(11)
    gaps = rng.exponential(1.0, 5000)
    gaps[rng.random(5000) < 0.3] = 0.0
    fit = fit_arrivals(gaps)
    assert fit.kind.startswith("hmap")
    assert float((-np.diag(fit.map.D0)).max()) <= 100.0 * fit.map.rate * 1.01


@needs_traces
@pytest.mark.parametrize("name", ["code", "conv"])
def test_on_held_back_halves_of_the_azure_traces_the_chosen_fit_beats_map2(name: str) -> None:
    gaps = np.diff(read_trace(TRACES / f"azure_llm_2023_{name}.csv"))
    half = len(gaps) // 2
    first, second = gaps[:half], gaps[half:]
    chosen = fit_arrivals(first)
    assert chosen.kind.startswith("hmap")
    assert mean_log_likelihood(chosen.map, second) > mean_log_likelihood(fit_map2(first).map, second) + 0.005
