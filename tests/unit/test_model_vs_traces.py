"""The latency model against the real Azure LLM traces, and against its own fitted MAP(2)s.

For each trace the MAP(2) is fitted to the whole hour; the model's p95/p99 for a fixed
(B, T) on warm FaaS (no cold starts) is compared with the simulator on the real trace
and on 200k arrivals sampled from the fitted MAP. Percentiles on both sides are the
smallest latency whose CDF reaches p.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from batching import FixedPolicy
from batching.counting import CountingProcess
from batching.fitting import FitResult, fit_map2
from batching.latency import WindowTables, wait_distribution
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
TOLERANCE = 0.05
SAMPLED = 200_000


@functools.cache
def fitted(name: str) -> tuple[np.ndarray, FitResult]:
    times = read_trace(TRACES / f"azure_llm_2023_{name}.csv")
    return times, fit_map2(np.diff(times))


def predicted(fit: FitResult, batch_size: int, timeout_s: float) -> list[float]:
    counting = CountingProcess(fit.map, batch_size - 1, timeout_s)
    law = wait_distribution(WindowTables(counting, timeout_s, 256), batch_size)
    return [law.latency_percentile(p, SERVICE) for p in PERCENTILES]


def simulated(times: np.ndarray, batch_size: int, timeout_s: float) -> list[float]:
    latency = simulate(times, FixedPolicy(batch_size, timeout_s), WARM, memory_mb=1024).latency_s
    return [float(np.quantile(latency, p, method="inverted_cdf")) for p in PERCENTILES]


def compare(fit: FitResult, times: np.ndarray) -> list[str]:
    """Every (B, T, p) where the model is off the simulation by more than the tolerance."""
    misses = []
    for b, t in CONFIGS:
        for p, model, sim in zip(PERCENTILES, predicted(fit, b, t), simulated(times, b, t)):
            if abs(model - sim) > TOLERANCE * sim:
                misses.append(f"B={b} T={t * 1e3:g} ms p{p * 100:g}: model {model * 1e3:.1f} ms, simulated {sim * 1e3:.1f} ms")
    return misses


@pytest.mark.parametrize("name", ["code", "conv"])
def test_model_matches_simulation_of_the_fitted_map(name: str) -> None:
    times, fit = fitted(name)
    assert fit.achieved["rate"] == pytest.approx(fit.target["rate"], rel=1e-6)
    assert fit.achieved["scv"] == pytest.approx(fit.target["scv"], rel=1e-6)
    sample = np.concatenate([[0.0], np.cumsum(fit.map.sample(SAMPLED, np.random.default_rng(2024)))])
    assert compare(fit, sample) == []


CODE_TRACE_MARGINAL = (
    "The code trace's gaps span three scales (17% <= 1 ms, 34% <= 5 ms, and idle gaps of minutes: SCV 173, "
    "lag-1 ACF ~0). The MAP(2) matches rate, SCV and third moment, but puts only ~5% of its gaps <= 5 ms, so it "
    "forms smaller batches (mean 1.95 vs 2.35 at B=8, T=100 ms) and under-predicts: p95/p99 164/177 ms vs "
    "187/196 ms on the trace at (8, 100 ms), 330/346 vs 365/408 ms at (32, 250 ms). The trace's gaps shuffled "
    "(same marginal, no dependence) already give 180/193 and 349/370 ms: the marginal shape is most of the "
    "error, dependence and drift over the hour the rest. A richer marginal (more phases) would be needed."
)


@pytest.mark.parametrize("name", [pytest.param("code", marks=pytest.mark.xfail(strict=True, reason=CODE_TRACE_MARGINAL)), "conv"])
def test_model_matches_simulation_of_the_real_trace(name: str) -> None:
    times, fit = fitted(name)
    assert compare(fit, times) == []


def test_the_code_trace_miss_is_its_marginal() -> None:
    """Backs the xfail above: the fitted MAP(2) has far fewer short gaps than the trace."""
    times, fit = fitted("code")
    gaps = np.diff(times)
    sample = fit.map.sample(SAMPLED, np.random.default_rng(7))
    assert np.mean(gaps <= 0.005) > 0.3 and np.mean(sample <= 0.005) < 0.1
    assert abs(fit.target["acf1"]) < 0.01 and fit.kind == "renewal-h2"
