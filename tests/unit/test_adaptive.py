"""The adaptive policy at virtual time: it follows a step in load and keeps the SLO."""

from __future__ import annotations

import numpy as np
import pytest

from batching.adaptive import AdaptivePolicy
from batching.arrivals import MAP
from batching.overrun import OverrunTracker
from sim.profiles import ServiceProfile
from sim.simulate import simulate
from sim.tune import targets_from_profile

PROFILE = ServiceProfile.from_dict({
    "name": "test",
    "faas": {"memory_mb": {"1024": {"base_ms": 40, "per_item_ms": 8}}, "cold_start_ms": 0,
             "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
})  # fmt: skip


def test_batch_size_follows_a_step_in_load_and_the_slo_holds_at_both_levels() -> None:
    rng = np.random.default_rng(5)
    low = np.cumsum(MAP.poisson(40.0).sample(2400, rng))  # about 60 s at 40/s
    high = low[-1] + np.cumsum(MAP.poisson(400.0).sample(24000, rng))  # then about 60 s at 400/s
    arrivals = np.concatenate([low, high])
    slo_s, percentile = 0.25, 0.95
    policy = AdaptivePolicy(targets_from_profile(PROFILE, "faas", 1024), slo_s, percentile)
    result = simulate(arrivals, policy, PROFILE, target="faas", memory_mb=1024)
    step = low[-1]
    settled_low = (result.arrival > 20.0) & (result.arrival < step)
    settled_high = result.arrival > step + 10.0
    batch_of = result.size[result.batch]
    assert batch_of[settled_high].mean() > 2 * batch_of[settled_low].mean(), "batches did not grow with the load"
    for part in (settled_low, settled_high):
        assert np.mean(result.latency_s[part] <= slo_s) >= percentile - 0.01
    assert policy.retunes >= 2


def test_overruns_are_weighted_by_the_requests_they_delay() -> None:
    tracker = OverrunTracker(quantile=0.9, minimum=4)
    tracker.record(0.001, 1)
    assert tracker.allowance() == 0.0, "too few batches seen to say"
    for _ in range(8):
        tracker.record(0.001, 1)
    tracker.record(0.050, 30)  # one late batch, but most of the requests
    assert tracker.allowance() == pytest.approx(0.050)
    tracker.record(5.0, 1000)
    assert tracker.allowance() == tracker.ceiling_s
    early = OverrunTracker(minimum=1)
    early.record(-0.003, 5)
    assert early.allowance() == 0.0


def test_a_measured_allowance_moves_deadline_aware_closing_at_once() -> None:
    rng = np.random.default_rng(3)
    policy = AdaptivePolicy(targets_from_profile(PROFILE, "faas", 1024), 0.25, 0.95, estimator=None, retune_s=1.0)
    for t in np.cumsum(MAP.poisson(200.0).sample(3000, rng)):
        policy.observe_arrival(float(t))
    before = policy.limits(0.0)
    assert policy.choice is not None and before.service_s and before.deadline_s == pytest.approx(0.25 * 0.97)
    policy.allow(0.010)
    after = policy.limits(0.0)
    assert np.allclose(np.subtract(after.service_s, before.service_s), 0.010)
    assert policy.base_service(4) == pytest.approx(before.predicted_service(4))
    assert all(a <= b for a, b in zip(after.closing_caps(), before.closing_caps()))
