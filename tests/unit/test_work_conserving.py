"""Work-conserving batching on a pool: no instance idles while a request it could run waits.

The queue's rule (`BatchQueue.idle`) is checked on its own, then through the simulator,
which drives it exactly as the gateway's runner does: whenever a slot is free and no
closed batch waits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batching import AdaptivePolicy, BatchLimits, BatchQueue, FixedPolicy, Request, Target
from batching.adaptive import pool_batch_limit, pool_hold
from sim import SimResult, simulate

from support import SwitchingPolicy, make_profile


def request(i: int, at: float, size: int = 1) -> Request:
    return Request(id=str(i), arrival=at, size=size)


def test_idle_releases_the_open_batch_only_under_work_conserving_limits() -> None:
    greedy = BatchQueue(FixedPolicy(8, 1.0, work_conserving=True))
    held = BatchQueue(FixedPolicy(8, 1.0))
    for queue in (greedy, held):
        assert queue.idle(0.0) == []  # nothing pending
        queue.push(request(0, 0.0), 0.0)
        queue.push(request(1, 0.001), 0.001)
    assert held.idle(0.002) == [] and len(held) == 2
    (batch,) = greedy.idle(0.002)
    assert batch.reason == "idle" and [r.id for r in batch.requests] == ["0", "1"] and len(greedy) == 0
    assert greedy.next_wakeup() is None


def test_a_hold_keeps_a_thin_batch_from_a_free_instance_until_it_fills_or_runs_out() -> None:
    # Limits of any kind: FixedPolicy offers no hold.
    queue = BatchQueue(SwitchingPolicy(BatchLimits(8, 1.0, work_conserving=True, idle_rows=3, hold_s=0.005)))
    queue.push(request(0, 0.0), 0.0)
    assert queue.next_wakeup() == 0.005, "the hold's end is a wakeup: the owner asks idle() then"
    assert queue.idle(0.001) == []
    (ran_out,) = queue.idle(0.005)
    assert ran_out.reason == "idle" and len(ran_out.requests) == 1
    for i in range(3):
        queue.push(request(i, 0.01 + i * 1e-4), 0.01 + i * 1e-4)
    (full,) = queue.idle(0.0103)
    assert len(full.requests) == 3, "enough rows: no need to wait out the hold"


def test_pool_hold_gathers_rows_only_when_the_load_needs_them() -> None:
    service = [0.002 + 0.001 * b for b in range(1, 65)]  # s(1) = 3 ms
    assert pool_hold(service, 100.0, 0.5, 64, 0.05) == (1, 0.0), "0.3 of an instance: nothing held"
    rows, hold = pool_hold(service, 400.0, 0.5, 64, 0.05)
    assert rows > 1 and 400.0 * service[rows - 1] / rows <= 0.5 and hold == pytest.approx((rows - 1) / 400.0)
    assert 400.0 * service[rows - 2] / (rows - 1) > 0.5, "the fewest rows that do"
    assert pool_hold(service, 400.0, 0.5, 64, 0.001)[1] == 0.001, "never beyond the SLO's slack"
    assert pool_hold(service, 0.0, 0.5, 64, 0.05) == (1, 0.0)
    flat = [0.0016, 0.00257, 0.0036, 0.0046, 0.0057, 0.0068, 0.0079, 0.0088]  # a CNN: batching barely pays
    rows, hold = pool_hold(flat, 565.0, 0.5, 8, 0.035)
    assert rows == 3 and hold == pytest.approx(2 / 565.0), "within 10% of the cheapest rows, not the most"


def test_pool_batch_limit_fits_two_batches_and_the_overhead_in_the_budget() -> None:
    service = [0.002 + 0.001 * b for b in range(1, 65)]  # s(b) = 2 ms + 1 ms a row
    assert pool_batch_limit(service, 0.002, 0.050) == 22  # 2 * 24 ms + 2 ms = 50 ms
    assert pool_batch_limit(service, 0.0, 1.0) == 64
    assert pool_batch_limit(service, 0.0, 0.001) == 1  # never below one row


def test_adaptive_policy_on_a_pool_is_work_conserving_and_never_retunes() -> None:
    service = np.array([0.001 + 0.0005 * b for b in range(1, 65)])
    policy = AdaptivePolicy([Target("pool", service, service)], 0.05, 0.99, work_conserving=True)
    limits = policy.limits(0.0)
    assert limits.work_conserving and limits.max_size == pool_batch_limit(service, 0.0, policy.tuning_slo_s)
    for k in range(2000):
        policy.observe_arrival(k * 0.001)
    assert policy.plan(2.0) is None and policy.retunes == 0
    policy.allow(0.02)  # answers run 20 ms late: smaller batches keep the bound
    assert policy.limits(0.0).max_size < limits.max_size


def busy_slots(result: SimResult, t: float) -> int:
    end = result.start_time + result.service_s
    return int(np.sum((result.start_time <= t) & (t < end)))


def idle_while_waiting(result: SimResult, instances: int) -> list[tuple[int, float]]:
    """(request, time) pairs where a request waited while a slot was free: at its arrival,
    or just after some batch ended before its own batch started."""
    end = result.start_time + result.service_s
    found = []
    for i, arrived in enumerate(result.arrival.tolist()):
        started = float(result.start_time[result.batch[i]])
        if started <= arrived:
            continue
        instants = [arrived] + [e for e in end.tolist() if arrived < e < started]
        found += [(i, t) for t in instants if busy_slots(result, t) < instances]
    return found


@given(
    gaps=st.lists(st.floats(1e-5, 0.05), min_size=1, max_size=120),
    instances=st.integers(1, 3),
    per_item_ms=st.floats(0.1, 5.0),
    base_ms=st.floats(0.0, 10.0),
)
def test_the_simulated_pool_never_idles_while_a_request_waits(
    gaps: list[float], instances: int, per_item_ms: float, base_ms: float
) -> None:
    profile = make_profile(base_ms=base_ms, per_item_ms=per_item_ms)
    arrivals = np.cumsum(gaps)
    policy = FixedPolicy(16, 10.0, work_conserving=True)  # T long enough never to close a batch
    result = simulate(arrivals, policy, profile, target="pool", instances=instances, path="event")
    assert idle_while_waiting(result, instances) == []
    assert set(result.reasons()) <= {"idle", "size", "drain"}


def test_without_work_conservation_the_same_pool_idles_while_requests_wait() -> None:
    """The check above can fail: a held (B, T) on the same pool leaves it idle."""
    profile = make_profile(base_ms=1.0, per_item_ms=1.0)
    arrivals = np.cumsum(np.full(50, 0.02))
    result = simulate(arrivals, FixedPolicy(16, 0.01), profile, target="pool", instances=1, path="event")
    assert idle_while_waiting(result, 1)


@pytest.mark.parametrize("rate", [10.0, 500.0, 800.0])
def test_work_conserving_batches_grow_with_load_and_stay_within_the_slo(rate: float) -> None:
    """s(b) = 2 ms + 1 ms a row: one instance serves 333 single rows a second, and at most
    889 rows a second in batches of 16 (the profile's largest)."""
    profile = make_profile(base_ms=2.0, per_item_ms=1.0)
    service = profile.iaas_service_s(np.arange(1, 17))
    policy = AdaptivePolicy([Target("pool", service, service)], 0.1, 0.99, work_conserving=True)
    arrivals = np.cumsum(np.random.default_rng(7).exponential(1.0 / rate, int(rate * 20)))
    result = simulate(arrivals, policy, profile, target="pool", instances=1, path="event")
    mean_batch = float(np.mean(result.size))
    if rate == 10.0:
        assert mean_batch < 1.1 and np.median(result.latency_s) <= profile.iaas_service_s(1) + 1e-9
    else:
        assert mean_batch > 2.0
    assert np.quantile(result.latency_s, 0.99) <= 0.1
