"""sim.segments: batches formed in bulk between a policy's changes of limits equal the event path's.

The event path pushes every request through the dispatch core; the bulk path tells the
policy of every arrival first, then forms the batches run by run (and hands each open
batch the limits change under to the real queue). Both must give the same batches, and
simulate()'s fast path the same latencies, cold starts and bill, to the bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import AdaptivePolicy, BatchLimits, FixedPolicy
from sim import SimResult, simulate
from sim.segments import follows_arrivals, form_by_runs, limit_runs
from sim.tune import targets_from_profile
from support import make_profile


def assert_same(fast: SimResult, event: SimResult) -> None:
    assert (fast.path, event.path) == ("fast", "event")
    for name in ("latency_s", "batch", "close_time", "start_time", "size", "reason", "cold", "service_s"):
        assert np.array_equal(getattr(fast, name), getattr(event, name)), name
    assert fast.cost_usd == pytest.approx(event.cost_usd, rel=1e-12, abs=0.0)  # the same bills, summed in another order


class ScriptedPolicy:
    """Limits that change when the policy is told of given arrivals, as a re-tune changes them."""

    name = "scripted"

    def __init__(self, script: list[tuple[int, BatchLimits]]) -> None:
        self.script, self.seen = dict(script), 0
        self._limits = self.script.pop(0)

    def observe_arrival(self, now: float) -> None:
        self._limits = self.script.get(self.seen, self._limits)
        self.seen += 1

    def limits(self, now: float) -> BatchLimits:
        return self._limits


TICK = 1 / 64  # on a grid of 1/64 s every sum is exact: arrivals meet timers and budgets exactly


def seconds(grid: bool, low: float, high: float) -> st.SearchStrategy[float]:
    if grid:
        return st.integers(round(low / TICK), round(high / TICK)).map(lambda k: k * TICK)
    return st.floats(low, high)


@st.composite
def limits(draw: st.DrawFn, grid: bool) -> BatchLimits:
    size = draw(st.integers(1, 12))
    timeout = draw(st.one_of(st.just(0.0), st.just(float("inf")), seconds(grid, 0.0, 0.3)))
    if not draw(st.booleans()):
        return BatchLimits(size, timeout)
    base, step = draw(seconds(grid, 0.0, 0.1)), draw(seconds(grid, 0.0, 0.03))
    service = tuple(base + step * b for b in range(draw(st.integers(1, 14))))
    return BatchLimits(size, timeout, service, draw(seconds(grid, TICK, 0.4)))


@st.composite
def scripts(draw: st.DrawFn) -> tuple[np.ndarray, list[tuple[int, BatchLimits]]]:
    grid = draw(st.booleans())
    gaps = draw(st.lists(st.one_of(st.just(0.0), seconds(grid, 0.0, 0.05), seconds(grid, 0.0, 0.5)), min_size=1, max_size=120))
    changes = draw(st.lists(st.integers(1, len(gaps)), max_size=6, unique=True))
    script = [(0, draw(limits(grid)))] + [(c, draw(limits(grid))) for c in sorted(changes)]
    return np.cumsum(gaps), script


@settings(max_examples=600, deadline=None)
@given(scripts())
def test_batches_formed_by_runs_equal_the_event_path(case: tuple[np.ndarray, list[tuple[int, BatchLimits]]]) -> None:
    arrivals, script = case
    event = simulate(arrivals, ScriptedPolicy(script), make_profile(overhead_ms=7.0), path="event")
    times = arrivals.tolist()
    formation = form_by_runs(times, limit_runs(ScriptedPolicy(script), times))
    assert formation.close_time.tolist() == event.close_time.tolist()
    assert formation.size.tolist() == event.size.tolist()
    assert formation.reason.tolist() == event.reason.tolist()
    assert formation.batch_of_request().tolist() == event.batch.tolist()


def test_runs_are_where_the_policy_changes_its_limits() -> None:
    a, b = BatchLimits(4, 0.1), BatchLimits(2, 0.05)
    policy = ScriptedPolicy([(0, a), (3, b), (5, BatchLimits(2, 0.05)), (7, a)])
    assert limit_runs(policy, [0.1 * i for i in range(10)]) == [(0, a), (3, b), (7, a)]  # equal limits are one run


def test_which_policies_take_the_bulk_path() -> None:
    targets = targets_from_profile(make_profile(), "faas")
    assert follows_arrivals(FixedPolicy(8, 0.01, service_s=(0.01,), deadline_s=0.1))
    assert follows_arrivals(AdaptivePolicy(targets, 0.2, 0.99))
    assert not follows_arrivals(AdaptivePolicy(targets[:1], 0.2, 0.99, work_conserving=True))
    assert not follows_arrivals(ScriptedPolicy([(0, BatchLimits(2, 0.1))]))  # its limits could follow anything
    assert not follows_arrivals(FixedPolicy(8, 0.01, work_conserving=True))


def stepped_arrivals(seed: int) -> np.ndarray:
    """Poisson arrivals whose rate steps 150 -> 900 -> 300 per second: the policy re-tunes."""
    rng = np.random.default_rng(seed)
    parts, start = [], 0.0
    for rate, length in ((150.0, 12.0), (900.0, 6.0), (300.0, 10.0)):
        times = start + np.cumsum(rng.exponential(1.0 / rate, int(rate * length * 1.2)))
        parts.append(times[times < start + length])
        start += length
    return np.concatenate(parts)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("deadline_aware", [True, False], ids=["deadline-aware", "plain"])
def test_adaptive_fast_path_equals_event_path(seed: int, deadline_aware: bool) -> None:
    profile = make_profile(overhead_ms=15.0, cold_ms=300.0)
    arrivals = stepped_arrivals(seed)
    runs: dict[str, Any] = {}
    for path in ("fast", "event"):
        policy = AdaptivePolicy(targets_from_profile(profile, "faas"), 0.25, 0.99, retune_s=2.0, deadline_aware=deadline_aware)
        runs[path] = simulate(arrivals, policy, profile, keep_alive_s=2.0, jitter=0.2, seed=seed, slo_s=0.25, path=path)
        runs[path + "_retunes"] = policy.retunes
    assert runs["fast_retunes"] == runs["event_retunes"] >= 2
    assert_same(runs["fast"], runs["event"])
    assert simulate(arrivals, FixedPolicy(4, 0.01), profile).path == "fast"


def silent_bursty_arrivals(seed: int) -> np.ndarray:
    """Poisson at 200/s, then at 800/s in bursts of simultaneous arrivals, a 20 s silence,
    then 100/s: the estimator raises alarms up and down (one while nothing arrives)."""
    rng = np.random.default_rng(seed)
    steady = np.cumsum(rng.exponential(1 / 200.0, 2600))
    bursts = steady[-1] + np.repeat(np.cumsum(rng.exponential(1 / 200.0, 1000)), rng.integers(1, 8, 1000))
    after = bursts[-1] + 20.0 + np.cumsum(rng.exponential(1 / 100.0, 1500))
    return np.concatenate([steady, bursts[bursts < steady[-1] + 4.0], after])


def runs_told_one_by_one(policy: AdaptivePolicy, times: list[float]) -> list[tuple[int, BatchLimits]]:
    """`limit_runs` as it was before the bulk path: every arrival told and the limits asked after each."""
    runs: list[tuple[int, BatchLimits]] = []
    for i, t in enumerate(times):
        policy.observe_arrival(t)
        limits = policy.limits(t)
        if not runs or limits != runs[-1][1]:
            runs.append((i, limits))
    return runs


def policy_state(policy: AdaptivePolicy) -> dict[str, Any]:
    """What the policy and its estimator hold that later decisions depend on."""
    estimator = {name: value for name, value in vars(policy.estimator).items() if name != "_times"}
    held = policy.estimator._times.array().tobytes()
    mine = {name: getattr(policy, name) for name in ("retunes", "_limits", "_next_check", "_changes_seen", "_tuned_stats")}
    return mine | {"estimator": estimator, "held": held}


@pytest.mark.parametrize("retune_s", [2.0, 5.0])
@pytest.mark.parametrize("arrivals", [stepped_arrivals(5), silent_bursty_arrivals(6)], ids=["stepped", "silent-bursty"])
def test_policy_told_in_bulk_equals_told_one_by_one(arrivals: np.ndarray, retune_s: float) -> None:
    targets = targets_from_profile(make_profile(overhead_ms=15.0, cold_ms=300.0), "faas")
    bulk, one = (AdaptivePolicy(targets, 0.25, 0.99, retune_s=retune_s) for _ in range(2))
    shares: list[float] = []
    assert limit_runs(bulk, arrivals, shares.append) == runs_told_one_by_one(one, arrivals.tolist())
    assert policy_state(bulk) == policy_state(one)
    assert bulk.estimator.changes >= 2 and bulk.retunes >= 2  # the case does re-tune, after alarms
    assert shares and shares[0] == 0.0 and shares == sorted(shares)
    assert limit_runs(AdaptivePolicy(targets, 0.25, 0.99, retune_s=retune_s), arrivals.tolist()) == limit_runs(
        AdaptivePolicy(targets, 0.25, 0.99, retune_s=retune_s), arrivals
    )  # a list of times or an array: the same


def test_adaptive_fast_path_equals_event_path_through_silence_and_bursts() -> None:
    profile = make_profile(overhead_ms=15.0, cold_ms=300.0)
    arrivals = silent_bursty_arrivals(7)
    runs: dict[str, Any] = {}
    for path in ("fast", "event"):
        policy = AdaptivePolicy(targets_from_profile(profile, "faas"), 0.25, 0.99, retune_s=2.0)
        runs[path] = simulate(arrivals, policy, profile, keep_alive_s=2.0, jitter=0.2, seed=7, slo_s=0.25, path=path)
        runs[path + "_alarms"] = policy.estimator.changes
    assert runs["fast_alarms"] == runs["event_alarms"] >= 2
    assert_same(runs["fast"], runs["event"])


def test_policy_told_in_bulk_after_an_alarm_raised_between_arrivals() -> None:
    # A query between arrivals (as the gateway asks the rate) raises an alarm on a
    # silence: the next arrival plans at once, as it does when told one by one. Then a
    # policy in mid-stream: its runs start at the first arrival told.
    targets = targets_from_profile(make_profile(overhead_ms=15.0, cold_ms=300.0), "faas")
    arrivals = stepped_arrivals(8)
    before, after = arrivals[arrivals < 11.5], arrivals[arrivals >= 14.0]
    bulk, one = (AdaptivePolicy(targets, 0.25, 0.99, retune_s=10.0) for _ in range(2))  # no check due at 14 s
    assert limit_runs(bulk, before) == runs_told_one_by_one(one, before.tolist())
    for policy in (bulk, one):
        assert policy.estimator.changes == 0
        policy.estimator.rate(14.0)
        assert policy.estimator.changes == 1
    assert after[0] < bulk._next_check
    for part in (after[:1000], after[1000:]):  # the second starts with arrivals told in bulk
        assert limit_runs(bulk, part) == runs_told_one_by_one(one, part.tolist())
        assert policy_state(bulk) == policy_state(one)
