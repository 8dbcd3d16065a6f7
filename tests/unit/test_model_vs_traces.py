"""The latency model against the real Azure LLM traces, and against its own fitted MAPs.

For each trace the arrival model is fitted to the whole hour by `fit_arrivals` (as
`sluice tune` and the live policy fit it); the model's p95/p99 for a fixed (B, T) on
warm FaaS (no cold starts), and for the (B, T) the tuner picks for an SLO, is compared
with the simulator on the real trace (within 10%) and on 200k arrivals sampled from the
fitted MAP (within 5%: there the model is exact up to sampling). Percentiles on both
sides are the smallest latency whose CDF reaches p.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from batching import FixedPolicy
from batching.counting import CountingProcess
from batching.arrival_fits import fit_arrivals
from batching.fitting import FitResult, fit_map2
from batching.latency import WindowTables, wait_distribution
from batching.tuner import Target, tune
from sim import ServiceProfile, read_trace, simulate

from support import TRACES

pytestmark = pytest.mark.skipif(not TRACES.is_dir(), reason=f"no trace data at {TRACES}")

# The demo profile's 1024 MB curve, without cold starts: what the model predicts.
WARM = ServiceProfile.from_dict({
    "name": "warm",
    "faas": {"memory_mb": {"1024": {"base_ms": 40, "per_item_ms": 8}}, "cold_start_ms": 0,
             "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
})  # fmt: skip
SERVICE = np.asarray(WARM.faas_service_s(np.arange(1, 65), 1024))
CONFIGS = [(8, 0.100), (32, 0.250)]  # (B, T seconds)
PERCENTILES = (0.95, 0.99)
TOLERANCE = 0.05  # against the fitted MAP itself
TRACE_TOLERANCE = 0.10  # against the real trace
SAMPLED = 200_000


@functools.cache
def fitted(name: str) -> tuple[np.ndarray, FitResult]:
    times = read_trace(TRACES / f"azure_llm_2023_{name}.csv")
    return times, fit_arrivals(np.diff(times))


def predicted(fit: FitResult, batch_size: int, timeout_s: float) -> list[float]:
    counting = CountingProcess(fit.map, batch_size - 1, timeout_s)
    law = wait_distribution(WindowTables(counting, timeout_s, 256), batch_size)
    return [law.latency_percentile(p, SERVICE) for p in PERCENTILES]


def simulated(times: np.ndarray, batch_size: int, timeout_s: float) -> list[float]:
    latency = simulate(times, FixedPolicy(batch_size, timeout_s), WARM, memory_mb=1024).latency_s
    return [float(np.quantile(latency, p, method="inverted_cdf")) for p in PERCENTILES]


def compare(fit: FitResult, times: np.ndarray, tolerance: float = TOLERANCE) -> list[str]:
    """Every (B, T, p) where the model is off the simulation by more than the tolerance."""
    misses = []
    for b, t in CONFIGS:
        for p, model, sim in zip(PERCENTILES, predicted(fit, b, t), simulated(times, b, t)):
            if abs(model - sim) > tolerance * sim:
                misses.append(f"B={b} T={t * 1e3:g} ms p{p * 100:g}: model {model * 1e3:.1f} ms, simulated {sim * 1e3:.1f} ms")
    return misses


@pytest.mark.parametrize("name", ["code", "conv"])
def test_model_matches_simulation_of_the_fitted_map(name: str) -> None:
    times, fit = fitted(name)
    assert fit.achieved["rate"] == pytest.approx(fit.target["rate"], rel=1e-6)
    if not fit.kind.startswith("hmap"):  # fitted by likelihood, not moments: the SCV is not matched
        assert fit.achieved["scv"] == pytest.approx(fit.target["scv"], rel=1e-6)
    sample = np.concatenate([[0.0], np.cumsum(fit.map.sample(SAMPLED, np.random.default_rng(2024)))])
    assert compare(fit, sample) == []


@pytest.mark.parametrize("name", ["code", "conv"])
def test_model_matches_simulation_of_the_real_trace(name: str) -> None:
    times, fit = fitted(name)
    assert compare(fit, times, TRACE_TOLERANCE) == []


@pytest.mark.parametrize("name", ["code", "conv"])
def test_the_tuners_choice_is_predicted_within_10_percent_of_the_real_trace(name: str) -> None:
    """The (B, T) the tuner picks for p99 <= 250 ms; MAP(2) put the code trace's 16% low."""
    times, fit = fitted(name)
    cost = np.asarray(WARM.faas_batch_cost(SERVICE, 1024))
    choice = tune(fit.map, [Target("warm", SERVICE, cost, memory_mb=1024)], 0.250, 0.99).choice
    assert choice is not None
    timeout = math.floor(choice.timeout_s * 1e6) / 1e6
    latency = simulate(times, FixedPolicy(choice.batch_size, timeout), WARM, memory_mb=1024).latency_s
    sim = float(np.quantile(latency, 0.99, method="inverted_cdf"))
    assert abs(choice.latency_s - sim) <= TRACE_TOLERANCE * sim, (choice, sim)


def test_the_code_trace_needs_more_than_a_map2() -> None:
    """Why `fit_arrivals` picks more phases on the code trace: its gaps span three scales
    (17% <= 1 ms, 34% <= 5 ms, idle gaps of minutes: SCV 173, lag-1 ACF ~0). The MAP(2)
    matches rate, SCV and third moment but puts only ~5% of its gaps <= 5 ms, so it forms
    smaller batches and under-predicted p95/p99 by 10-15% (164/177 ms vs 187/196 ms on the
    trace at (8, 100 ms)). The chosen fit holds the short gaps."""
    times, fit = fitted("code")
    gaps = np.diff(times)
    map2 = fit_map2(gaps)
    assert abs(map2.target["acf1"]) < 0.01 and map2.kind == "renewal-h2"
    assert np.mean(map2.map.sample(SAMPLED, np.random.default_rng(7)) <= 0.005) < 0.1
    assert fit.kind.startswith("hmap") and fit.scores[fit.kind] > fit.scores["map2"]
    chosen = fit.map.sample(SAMPLED, np.random.default_rng(7))
    assert np.mean(chosen <= 0.005) > 0.25  # the trace: 0.34; the fastest phase is held to a mean of 3.9 ms
