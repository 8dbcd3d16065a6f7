"""The rollout's guard and steps (`gateway.rollout`): pure decisions on synthetic evidence."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.rollout import Evidence, Guard, Outcomes, Rollout, error_excess_lower_bound, wilson, worse

P99 = 0.99


def evidence(rng: np.random.Generator, n: int, scale_ms: float = 10.0, error_ratio: float = 0.0) -> Evidence:
    errors = int(rng.binomial(n, error_ratio))
    latencies = rng.gamma(4.0, scale_ms / 4.0, n - errors) / 1e3
    return Evidence(n, errors, latencies)


def test_wilson_and_newcombe_bounds() -> None:
    low, high = wilson(0, 100, 1.96)
    assert low == 0.0 and 0.03 < high < 0.04  # no error in 100: up to 3.7%, not 0
    same = Evidence(100, 0, np.ones(100))
    assert error_excess_lower_bound(same, same, 0.01) < 0
    assert error_excess_lower_bound(same, Evidence(100, 50, np.ones(50)), 0.01) > 0.3


def test_a_candidate_like_the_stable_one_is_rarely_rolled_back() -> None:
    """The false-rollback rate over whole rollouts that peek every tick: at most 5% of 200."""
    rng = np.random.default_rng(1)
    rolled_back = 0
    for _ in range(200):
        rollout = Rollout("m", "2", "1", [10, 50, 100], min_step_s=0.0, min_requests=100, percentile=P99)
        now = 0.0
        while rollout.state == "running" and now < 100:
            now += 1
            n = 10 * int(now - rollout.step_started)
            rollout.decide(now, evidence(rng, 4 * n, error_ratio=0.002), evidence(rng, n, error_ratio=0.002))
        rolled_back += rollout.state == "rolled_back"
    assert rolled_back <= 10, rolled_back


@pytest.mark.parametrize(("scale_ms", "error_ratio", "why"), [(30.0, 0.0, "latency"), (10.0, 0.1, "error ratio")])
def test_a_bad_candidate_is_rolled_back_within_its_first_requests(scale_ms: float, error_ratio: float, why: str) -> None:
    rng = np.random.default_rng(2)
    rollout = Rollout("m", "2", "1", [5, 25, 100], min_step_s=30.0, min_requests=200, percentile=P99)
    for seen in range(20, 400, 10):  # the candidate's requests so far, at 5%
        entry = rollout.decide(1.0, evidence(rng, 20 * seen), evidence(rng, seen, scale_ms, error_ratio))
        if entry is not None:
            break
    assert entry["decision"] == "rollback" and why in entry["reasons"][0]
    assert rollout.state == "rolled_back" and rollout.weight == 0.0 and rollout.step == 0
    assert seen <= 200  # the traffic it saw stayed within the first step
    assert entry["candidate"]["requests"] == seen


def test_a_good_candidate_advances_step_by_step_and_is_promoted() -> None:
    rng = np.random.default_rng(3)
    rollout = Rollout("m", "2", "1", [5, 25, 50, 100], min_step_s=30.0, min_requests=100, percentile=P99)
    decisions, now = [], 0.0
    while rollout.state == "running" and now < 1000:
        now += 5
        elapsed = now - rollout.step_started
        entry = rollout.decide(now, evidence(rng, int(40 * elapsed)), evidence(rng, int(10 * elapsed), 9.5))
        if entry is not None:
            decisions.append((entry["decision"], entry["weight"], entry["weight_after"]))
    assert decisions == [("advance", 5, 25), ("advance", 25, 50), ("advance", 50, 100), ("promote", 100, 100)]
    assert rollout.state == "promoted" and rollout.weight == 100


def test_a_doubtful_step_holds_before_it_rolls_back_or_goes_on() -> None:
    guard = Guard(alpha=1e-9, hold_alpha=0.5)  # "worse" only with overwhelming evidence, "perhaps worse" easily
    rollout = Rollout("m", "2", "1", [50, 100], min_step_s=0.0, min_requests=50, percentile=P99, guard=guard)
    rng = np.random.default_rng(4)
    stable, slower = evidence(rng, 5000), evidence(rng, 60, 15.0)
    assert worse(stable, slower, guard, P99, guard.hold_alpha) and not worse(stable, slower, guard, P99, guard.alpha)
    assert rollout.decide(1.0, stable, slower)["decision"] == "hold"
    assert rollout.decide(2.0, stable, slower) is None  # held already: no new decision
    assert rollout.state == "running" and rollout.step == 0


def test_bad_rollouts_are_refused_and_an_abort_stops_it() -> None:
    for steps in ([5, 50], [50, 25, 100], [0, 100], []):
        with pytest.raises(ValueError):
            Rollout("m", "2", "1", steps, 1.0, 10, P99)
    with pytest.raises(ValueError):
        Rollout("m", "1", "1", [100], 1.0, 10, P99)
    rollout = Rollout("m", "2", "1", [100], 1.0, 10, P99)
    assert rollout.abort(3.0)["decision"] == "abort" and rollout.weight == 0.0
    assert rollout.decide(4.0, Evidence(0, 0, np.zeros(0)), Evidence(0, 0, np.zeros(0))) is None


def test_outcomes_count_the_versions_answers_since_a_time() -> None:
    outcomes = Outcomes()
    for t, status in enumerate([200, 200, 400, 500, 429, 200, 504]):
        outcomes.record(float(t), status, 0.01 * (t + 1))
    since = outcomes.since(3.0)
    assert (since.requests, since.errors) == (4, 3)  # 500, 429, 200, 504; the 400 was the client's
    np.testing.assert_allclose(since.latencies_s, [0.06])
