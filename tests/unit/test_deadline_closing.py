"""Deadline-aware closing: the queue releases a batch before it would make a request
late, and the latency model and tuner account for it exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import BatchLimits, BatchQueue, FixedPolicy, Request
from batching.arrivals import MAP
from batching.capped import CappedTables, capped_wait_distribution
from batching.counting import CountingProcess
from batching.latency import WindowTables, wait_distribution
from batching.tuner import tune

from support import ALTERNATING, BURSTY, TARGETS, SwitchingPolicy

SERVICE = (0.010, 0.012, 0.014, 0.016)  # predicted close-to-answer times, b = 1..4


def deadline_queue(batch_size: int = 4, timeout_s: float = 1.0, budget_s: float | None = 0.05) -> BatchQueue:
    return BatchQueue(FixedPolicy(batch_size, timeout_s, service_s=SERVICE, deadline_s=budget_s))


def test_a_batch_closes_when_its_slack_falls_to_the_predicted_service_time() -> None:
    queue = deadline_queue()
    assert queue.push(Request("a", 0.0), 0.0) == []
    assert queue.next_wakeup() == pytest.approx(0.05 - 0.010)
    assert queue.push(Request("b", 0.01), 0.01) == []
    assert queue.next_wakeup() == pytest.approx(0.05 - 0.012)  # two rows take longer: close sooner
    assert queue.poll(0.037) == []
    [batch] = queue.poll(queue.next_wakeup())
    assert batch.reason == "deadline" and [r.id for r in batch.requests] == ["a", "b"]
    assert batch.closed_at + SERVICE[1] <= 0.05 + 1e-12


def test_an_arrival_that_would_make_the_batch_late_closes_it_and_opens_the_next() -> None:
    queue = deadline_queue()
    queue.push(Request("a", 0.0), 0.0)
    # At 0.039 "a" still has 11 ms, enough for one row (10 ms) but not for two (12 ms).
    [batch] = queue.push(Request("b", 0.039), 0.039)
    assert batch.reason == "deadline" and [r.id for r in batch.requests] == ["a"]
    assert [r.id for r in queue.pending] == ["b"]
    assert queue.next_wakeup() == pytest.approx(0.039 + 0.05 - 0.010)


def test_a_request_with_its_own_tight_deadline_is_sent_at_once() -> None:
    queue = deadline_queue(budget_s=None)
    assert queue.push(Request("a", 0.0, deadline=10.0), 0.0) == []
    [batch] = queue.push(Request("b", 0.001, deadline=0.001 + 0.011), 0.001)
    # Joining "a" would need 12 ms: "a" goes alone... and "b", alone, needs 10 of its 11 ms.
    assert [r.id for r in batch.requests] == ["a"]
    assert queue.next_wakeup() == pytest.approx(0.012 - 0.010)


def test_without_predicted_service_times_deadlines_do_not_close_batches() -> None:
    queue = BatchQueue(FixedPolicy(4, 1.0))
    queue.push(Request("a", 0.0, deadline=0.001), 0.0)
    assert queue.next_wakeup() == 1.0


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 0.03), min_size=1, max_size=60),
    own=st.lists(st.one_of(st.none(), st.floats(0.016, 0.2)), min_size=60, max_size=60),
    batch_size=st.integers(1, 4),
    timeout_s=st.floats(0.0, 0.1),
    budget_s=st.one_of(st.none(), st.floats(0.016, 0.1)),
)
def test_no_batch_is_predicted_late_when_every_request_had_time(gaps, own, batch_size, timeout_s, budget_s) -> None:
    """Polling at every due wakeup, each batch closes by its earliest deadline less s(b)."""
    queue = deadline_queue(batch_size, timeout_s, budget_s)
    limits = queue.policy.limits(0.0)
    batches = []
    now = 0.0
    for i, gap in enumerate(gaps):
        now += gap
        while (due := queue.next_wakeup()) is not None and due <= now:
            batches += queue.poll(due)
        deadline = None if own[i] is None else now + own[i]
        batches += queue.push(Request(str(i), now, deadline=deadline), now)
    while (due := queue.next_wakeup()) is not None:
        batches += queue.poll(due)
    assert sum(len(b.requests) for b in batches) == len(gaps)
    for batch in batches:
        deadlines = [r.deadline for r in batch.requests if r.deadline is not None]
        if budget_s is not None:
            deadlines += [r.arrival + budget_s for r in batch.requests]
        if deadlines:
            assert batch.closed_at + limits.predicted_service(batch.size) <= min(deadlines) + 1e-9
        assert batch.closed_at - batch.oldest_arrival <= timeout_s + 1e-9


# ------------------------------------------------------------------- the model


def queue_latencies(times: np.ndarray, limits: BatchLimits, service: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latencies and batch sizes from the gateway's own queue, driven at virtual time."""
    queue = BatchQueue(FixedPolicy(limits.max_size, limits.max_wait, service_s=limits.service_s, deadline_s=limits.deadline_s))
    latencies: list[float] = []
    sizes: list[int] = []

    def release(batches) -> None:
        for batch in batches:
            sizes.append(len(batch.requests))
            latencies.extend(batch.closed_at - r.arrival + service[len(batch.requests) - 1] for r in batch.requests)

    for t in times:
        while (due := queue.next_wakeup()) is not None and due <= t:
            release(queue.poll(due))
        release(queue.push(Request("", t), t))
    while (due := queue.next_wakeup()) is not None:
        release(queue.poll(due))
    return np.array(latencies), np.array(sizes)


@pytest.mark.parametrize(
    "arrivals,batch_size,timeout_s,budget_s",
    [(MAP.poisson(500.0), 16, 0.02, 0.025), (BURSTY, 32, 0.02, 0.03), (BURSTY, 8, 0.05, 0.04), (ALTERNATING, 10, 0.03, 0.03)],
    ids=["poisson", "bursty-B32", "bursty-B8", "alternating"],
)
def test_the_capped_model_matches_the_queue(arrivals: MAP, batch_size: int, timeout_s: float, budget_s: float) -> None:
    service = 0.005 + 0.0005 * np.arange(1, batch_size + 1)
    limits = BatchLimits(batch_size, timeout_s, tuple(service), budget_s)
    times = np.cumsum(arrivals.sample(150_000, np.random.default_rng(11)))
    latencies, sizes = queue_latencies(times, limits, service)
    capped = CappedTables(WindowTables(CountingProcess(arrivals, batch_size, timeout_s), timeout_s, 256), limits.closing_caps())
    law = capped_wait_distribution(capped, batch_size)
    assert law.size_pmf.sum() == pytest.approx(1.0, abs=1e-9)
    assert law.cumulative[:, -1].sum() + law.at_cap.sum() == pytest.approx(law.mean_batch_size, rel=1e-3)  # trapezoid error
    assert law.mean_batch_size == pytest.approx(sizes.mean(), rel=0.02)
    for p in (0.5, 0.95, 0.99):
        assert law.latency_percentile(p, service) == pytest.approx(np.quantile(latencies, p), rel=0.02), p
    # Nothing is late by prediction: the model and the queue agree that the budget holds.
    assert latencies.max() <= budget_s + 1e-9
    assert law.latency_cdf(np.array([budget_s]), service)[0] == pytest.approx(1.0, abs=1e-6)


def test_caps_that_never_bind_give_the_uncapped_law() -> None:
    counting = CountingProcess(BURSTY, 16, 0.01)
    tables = WindowTables(counting, 0.01, 128)
    capped = capped_wait_distribution(CappedTables(tables, [0.01] * 16), 16)
    plain = wait_distribution(tables, 16)
    np.testing.assert_allclose(capped.size_pmf, plain.size_pmf)
    np.testing.assert_allclose(capped.cumulative, plain.cumulative)


def test_the_general_capped_path_reduces_to_the_uncapped_law() -> None:
    """Caps a hair under T take the capped code path; the law must be (nearly) the plain one."""
    counting = CountingProcess(ALTERNATING, 12, 0.02)
    tables = WindowTables(counting, 0.02, 256)
    capped = CappedTables(tables, [0.02 * (1 - 1e-12)] * 12)
    assert capped.is_binding(12)
    law = capped_wait_distribution(capped, 12)
    plain = wait_distribution(tables, 12)
    np.testing.assert_allclose(law.size_pmf, plain.size_pmf, atol=1e-9)
    xs = np.linspace(0.0, 0.05, 40)
    service = np.full(12, 0.01)
    np.testing.assert_allclose(law.latency_cdf(xs, service), plain.latency_cdf(xs, service), atol=1e-6)


# ------------------------------------------------------------------- the tuner


def test_deadline_aware_tuning_is_never_costlier_and_holds_in_the_queue() -> None:
    slo_s, percentile = 0.2, 0.99
    plain = tune(BURSTY, TARGETS, slo_s, percentile).choice
    aware = tune(BURSTY, TARGETS, slo_s, percentile, deadline_s=slo_s).choice
    assert plain is not None and aware is not None
    # Closing early only ever removes misses, so what was feasible stays feasible.
    assert aware.cost_per_request <= plain.cost_per_request * (1 + 1e-9)
    target = aware.target
    service = target.service_s + target.overhead_s
    limits = BatchLimits(aware.batch_size, aware.timeout_s, tuple(service), slo_s)
    times = np.cumsum(BURSTY.sample(150_000, np.random.default_rng(3)))
    latencies, sizes = queue_latencies(times, limits, service)
    assert np.mean(latencies <= slo_s + 1e-9) >= percentile
    assert sizes.mean() == pytest.approx(aware.mean_batch_size, rel=0.02)


def test_deadlines_follow_the_limits_in_force_not_those_at_arrival() -> None:
    policy = SwitchingPolicy(BatchLimits(4, 1.0))  # no predicted service times yet
    queue = BatchQueue(policy)
    queue.push(Request("a", 0.0, deadline=0.3), 0.0)
    assert queue.next_wakeup() == 1.0
    policy.current = BatchLimits(4, 1.0, SERVICE, 0.5)  # the first tune
    assert queue.poll(0.01) == []
    # "a" brought its own deadline (0.3): with 10 ms to answer one row it closes at 0.29.
    assert queue.next_wakeup() == pytest.approx(0.29)
    [batch] = queue.poll(0.29)
    assert batch.reason == "deadline"
