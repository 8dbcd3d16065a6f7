"""Tuning with the cold starts the model predicts for the choice (`batching.coldtune`),
against the tuner that ignores them and against simulation of both choices."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from batching import FixedPolicy
from batching.adaptive import AdaptivePolicy
from batching.arrivals import MAP
from batching.coldtune import Warmth, modelled_cold, tune_with_cold_starts
from batching.tuner import tune
from sim import simulate
from sim.tune import targets_from_profile

from support import BURSTY, TARGETS, make_profile

ON_OFF = MAP.mmpp2((200.0, 0.01), (1 / 15, 1 / 100))  # bursts of 15 s, lulls of 100 s: every burst regrows the pool
SLO_S, PERCENTILE, KEEP_ALIVE_S, HORIZON_S = 0.5, 0.99, 60.0, 1800.0


def test_without_cold_starts_it_is_the_plain_tuner() -> None:
    targets = [replace(t, cold_start_s=0.0) for t in TARGETS]
    result, cold = tune_with_cold_starts(lambda ts: tune(BURSTY, ts, 0.3, 0.95), BURSTY, targets, Warmth(60.0))
    plain = tune(BURSTY, targets, 0.3, 0.95).choice
    assert cold == [0.0] * len(targets)
    assert (result.choice.batch_size, result.choice.timeout_s, result.choice.target.name) == (plain.batch_size, plain.timeout_s, plain.target.name)


def test_the_choice_is_tuned_with_its_own_cold_probability() -> None:
    targets = targets_from_profile(make_profile(overhead_ms=15.0, cold_ms=300.0), "faas")
    warmth = Warmth(KEEP_ALIVE_S, horizon_s=HORIZON_S)
    result, cold = tune_with_cold_starts(lambda ts: tune(ON_OFF, ts, SLO_S, PERCENTILE), ON_OFF, targets, warmth)
    chosen = result.choice
    assert chosen is not None and cold[0] > 0.005  # lulls longer than the keep-alive: cold starts matter
    # a fixed point: the probability tuned with is the one the model gives the choice
    assert modelled_cold(ON_OFF, targets, chosen.batch_size, chosen.timeout_s, warmth)[0] == pytest.approx(cold[0], rel=0.05, abs=1e-4)
    assert chosen.target.cold_probability == pytest.approx(cold[0])


def simulated_attainment(batch_size: int, timeout_s: float, cold_ms: float, seeds: int = 2) -> float:
    profile = make_profile(overhead_ms=15.0, cold_ms=cold_ms)
    within = total = 0
    for seed in range(seeds):
        times = np.cumsum(ON_OFF.sample(int(ON_OFF.rate * HORIZON_S), np.random.default_rng(seed)))
        run = simulate(times, FixedPolicy(batch_size, timeout_s), profile, memory_mb=1024, keep_alive_s=KEEP_ALIVE_S)
        within += int(np.count_nonzero(run.latency_s <= SLO_S))
        total += len(run.latency_s)
    return within / total


def test_counting_cold_starts_brings_the_simulated_tail_to_the_slo() -> None:
    """The tuner that ignores cold starts fills batches until the warm p99 touches the SLO,
    and the bursts' cold starts then push more than 1% of requests past it."""
    targets = targets_from_profile(make_profile(overhead_ms=15.0, cold_ms=300.0), "faas")
    blind = tune(ON_OFF, targets, SLO_S, PERCENTILE).choice
    aware, _ = tune_with_cold_starts(lambda ts: tune(ON_OFF, ts, SLO_S, PERCENTILE), ON_OFF, targets,
                                     Warmth(KEEP_ALIVE_S, horizon_s=HORIZON_S))  # fmt: skip
    blind_share = simulated_attainment(blind.batch_size, blind.timeout_s, 300.0)
    aware_share = simulated_attainment(aware.choice.batch_size, aware.choice.timeout_s, 300.0)
    assert blind_share < PERCENTILE - 0.005
    assert aware_share > blind_share + 0.005
    assert aware.choice.cost_per_request >= blind.cost_per_request  # the tail is bought with smaller batches


def test_the_adaptive_policy_tunes_with_cold_starts_when_told_the_keep_alive() -> None:
    targets = targets_from_profile(make_profile(overhead_ms=15.0, cold_ms=300.0), "faas")
    gaps = ON_OFF.sample(20_000, np.random.default_rng(4))
    warm = AdaptivePolicy(targets, SLO_S, PERCENTILE)
    cold = AdaptivePolicy(targets, SLO_S, PERCENTILE, warmth=Warmth(KEEP_ALIVE_S))
    solved_warm, solved_cold = warm.solve(gaps), cold.solve(gaps)
    assert solved_warm.cold == () and solved_cold.cold[0] > 0
    cold.apply(solved_cold, 0.0)
    assert cold.cold == solved_cold.cold  # the next solve starts from them
    assert solved_cold.result.choice.latency_s <= cold.tuning_slo_s + 1e-6  # the percentile is bisected to 0.1 us
    assert solved_cold.result.choice.target.cold_probability == pytest.approx(solved_cold.cold[0])
