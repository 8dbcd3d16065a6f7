"""Admission control, the backlog's priorities and the circuit breaker, as pure functions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import CircuitBreaker
from batching import Batch, BatchQueue, FixedPolicy, Request
from batching.admission import Admission, Corrections, ServiceMeter, admit
from scheduler import Backlog


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(1e-4, 0.05), b=st.floats(0.0, 1e-3),
    sizes=st.lists(st.integers(1, 64), min_size=8, max_size=80).filter(lambda s: len(set(s)) > 1),
)  # fmt: skip
def test_the_meter_recovers_a_linear_service_time(a: float, b: float, sizes: list[int]) -> None:
    meter = ServiceMeter()
    for rows in sizes:
        meter.record(rows, a + b * rows)
    fa, fb = meter.fit()
    assert fa == pytest.approx(a, rel=1e-5, abs=1e-9) and fb == pytest.approx(b, rel=1e-5, abs=1e-9)


def test_the_meter_forgets_old_batches() -> None:
    meter = ServiceMeter(memory=16)
    for _ in range(200):
        meter.record(8, 0.100)
    for _ in range(200):
        meter.record(8, 0.010)  # the backend got faster
    assert meter.seconds(8) == pytest.approx(0.010, rel=1e-3)


def test_one_measured_size_does_not_charge_single_rows_a_big_batchs_length() -> None:
    # One batch of 12,000 rows measured at 1.5 s, then twenty one-row batches wait behind
    # two of them: the work ahead is about 3 s, not twenty-two big batches' 33 s.
    meter = ServiceMeter()
    meter.record(12000, 1.5)
    ahead = admit(ahead_rows=24020, ahead_batches=22, rows=1, pending=22, max_pending=100, slots=1,
                  meter=meter, max_wait_s=0.0, budget_s=30.0)  # fmt: skip
    assert ahead.admitted and ahead.predicted_s == pytest.approx(3.0, rel=0.01)
    ones = ServiceMeter()
    ones.record(1, 0.004)
    assert ones.fit() == (pytest.approx(0.004), 0.0)  # single rows: the time is per batch


def make_meter(a: float = 0.002, b: float = 0.0005) -> ServiceMeter:
    meter = ServiceMeter()
    for rows in (1, 4, 8, 16):
        meter.record(rows, a + b * rows)
    return meter


def test_admission_predicts_the_wait_behind_the_backlog() -> None:
    meter = make_meter()
    common = dict(rows=1, pending=10, max_pending=100, slots=2, meter=meter, max_wait_s=0.005)
    # 10 batches of 16 rows ahead on 2 slots: 5 x (2 + 8 ms) = 50 ms, + 5 ms wait + 2.5 ms service.
    ok = admit(ahead_rows=160, ahead_batches=10, budget_s=0.1, **common)
    assert ok.admitted and ok.predicted_s == pytest.approx(0.0575)
    refused = admit(ahead_rows=160, ahead_batches=10, budget_s=0.05, **common)
    assert not refused.admitted and refused.retry_after_s >= 1 and "exceeds" in refused.reason


def test_admission_bounds_pending_requests_and_knows_nothing_before_a_batch() -> None:
    full = admit(ahead_rows=0, ahead_batches=0, rows=1, pending=100, max_pending=100, slots=2,
                 meter=make_meter(), max_wait_s=0.0, budget_s=10.0)  # fmt: skip
    assert not full.admitted and "max_pending" in full.reason
    fresh = admit(ahead_rows=10**6, ahead_batches=10**4, rows=1, pending=0, max_pending=100, slots=2,
                  meter=ServiceMeter(), max_wait_s=0.0, budget_s=0.001)  # fmt: skip
    assert fresh.admitted, "nothing measured yet: nothing to refuse on"
    outage = admit(ahead_rows=10**6, ahead_batches=10**4, rows=1, pending=0, max_pending=100, slots=0,
                   meter=make_meter(), max_wait_s=0.0, budget_s=0.001)  # fmt: skip
    assert outage.admitted, "an outage is the grace period's to answer"


def test_a_correction_rises_with_the_first_misses_and_falls_with_its_half_life() -> None:
    learnt = Corrections()
    now = 0.0

    def answers(count: int, stretch: float) -> None:
        """`count` answers 10 ms apart, each behind 0.2 s of backlog and 10 ms of service,
        whose drain took `stretch` times the measured one."""
        nonlocal now
        for _ in range(count):
            now += 0.01
            margin, allowance = used = learnt.now
            predicted = Admission(True, predicted_s=0.2 * (1 + margin) + 0.01 + allowance, drain_s=0.2)
            learnt.learn(predicted, used, 0.2 * stretch + 0.01, now)

    answers(2048, 1.0)
    assert learnt.margin == pytest.approx(0.0, abs=1e-9), "predictions on time: nothing to correct"
    answers(12, 1.3)  # a slow spell: a dozen answers 30% late
    assert learnt.margin > 0.25, "the margin rose with the spell, not at the next periodic estimate"
    risen = learnt.margin
    answers(2048, 1.0)  # the spell has just left the window of answers
    assert learnt.margin > 0.95 * risen, "not forgotten with the window"
    answers(6000, 1.0)  # a minute on time
    assert 0.4 * risen < learnt.margin < 0.6 * risen, "a half-life later, half is kept"
    answers(60000, 1.0)
    assert learnt.margin < 0.01 * risen, "forgotten after ten minutes on time"


def request(i: int, priority: int = 0, size: int = 1) -> Request:
    return Request(str(i), float(i), size=size, priority=priority)


def test_the_backlog_sends_higher_priority_first_and_counts_what_waits_ahead() -> None:
    backlog = Backlog()
    low = [request(i) for i in range(4)]
    high = [request(10 + i, priority=5, size=2) for i in range(2)]
    for r in low + high:
        backlog.arrived(r)
    first = Batch(low[:2], 0.0, "size")
    second = Batch(low[2:], 1.0, "size")
    urgent = Batch(high, 2.0, "size")
    for batch in (first, second, urgent):
        backlog.add(batch)
    assert backlog.rows_ahead(0) == 8 and backlog.rows_ahead(5) == 4 and backlog.rows_ahead(9) == 0
    assert backlog.batches_ahead(0) == 3 and backlog.batches_ahead(5) == 1
    assert backlog.peek() is urgent
    backlog.pop(urgent)
    assert backlog.peek() is first, "within one priority, in the order they closed"
    backlog.pop(first)
    backlog.retry(first)  # back for another try: first in line, waiting again
    assert backlog.peek() is first and backlog.rows_ahead(0) == 4
    assert [b for b in backlog.clear()] == [first, second] and backlog.rows_ahead(0) == 0


def test_a_withdrawn_request_leaves_its_waiting_batch_and_stops_counting() -> None:
    backlog = Backlog()
    reqs = [request(i) for i in range(3)] + [request(9, priority=5, size=4)]
    for r in reqs:
        backlog.arrived(r)
    batch, urgent = Batch(reqs[:3], 0.0, "size"), Batch(reqs[3:], 0.0, "size")
    backlog.add(batch)
    backlog.add(urgent)
    assert backlog.top_priority() == 5
    assert backlog.withdraw(reqs[1]) and [r.id for r in batch.requests] == ["0", "2"]
    assert backlog.rows_ahead(0) == 6 and not backlog.withdraw(reqs[1]), "once only"
    assert backlog.withdraw(reqs[3]) and backlog.peek() is batch, "an emptied batch is dropped"
    assert backlog.top_priority() == 0 and backlog.batches_ahead(0) == 1
    backlog.pop(batch)
    assert not backlog.withdraw(reqs[0]), "sent: its answer is dropped instead"
    assert backlog.rows_ahead(0) == 0


def test_a_withdrawn_request_leaves_the_open_batch() -> None:
    queue = BatchQueue(FixedPolicy(3, 1.0))
    first, second = Request("a", 0.0, deadline=0.5), Request("b", 0.1)
    queue.push(first, 0.0)
    queue.push(second, 0.1)
    assert queue.withdraw(first) and queue.rows == 1 and not queue.withdraw(first)
    (batch,) = queue.push(Request("c", 0.2), 0.2) + queue.push(Request("d", 0.3), 0.3)
    assert [r.id for r in batch.requests] == ["b", "c", "d"] and batch.reason == "size"
    queue.push(Request("e", 0.4), 0.4)
    assert queue.withdraw(queue.pending[0]) and queue.next_wakeup() is None


def test_the_breaker_opens_after_failures_in_a_row_and_recovers_through_one_trial() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=1.0, max_cooldown_s=4.0)
    assert not breaker.failure(0.0) and not breaker.failure(0.1)
    breaker.success()  # a success in between: the count starts again
    assert not breaker.failure(0.2) and not breaker.failure(0.3)
    assert breaker.failure(0.4) and breaker.state(0.5) == "open" and not breaker.allows(0.5, 0)
    assert breaker.state(1.4) == "half-open"
    assert breaker.allows(1.4, 0) and not breaker.allows(1.4, 1), "one trial batch at a time"
    assert breaker.failure(1.5), "the trial failed: open again, for twice as long"
    assert breaker.state(3.4) == "open" and breaker.state(3.5) == "half-open"
    breaker.failure(3.6)
    breaker.failure(7.7)
    assert breaker.cooldown_s == 4.0, "capped"
    breaker.success()
    assert breaker.state(7.8) == "closed" and breaker.allows(7.8, 5) and breaker.cooldown_s == 1.0


def test_a_failure_while_open_does_not_extend_it() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=1.0)
    assert breaker.failure(0.0)
    assert not breaker.failure(0.5), "batches sent before it opened fail late; they change nothing"
    assert breaker.open_until == 1.0 and math.isclose(breaker.cooldown_s, 1.0)


def test_against_an_slo_only_the_backlog_refuses() -> None:
    """The SLO is a percentile target: a long batch wait (the policy's choice) and a noisy
    tail (the allowance) never refuse a request that finds no backlog; a backlog does."""
    common = dict(rows=1, pending=0, max_pending=100, slots=1, meter=make_meter(), max_wait_s=0.09,
                  budget_s=0.1, allowance_s=0.5)  # fmt: skip
    idle = admit(ahead_rows=0, ahead_batches=0, budget_is_slo=True, **common)
    assert idle.admitted and idle.predicted_s > 0.5, "the prediction keeps every term, for learning"
    assert not admit(ahead_rows=0, ahead_batches=0, **common).admitted, "against a deadline every term counts"
    backlog = admit(ahead_rows=160, ahead_batches=10, budget_is_slo=True, margin=0.2, **common)
    assert not backlog.admitted and "SLO" in backlog.reason  # 10 x 10 ms x 1.2 + 2.5 ms > 100 ms
