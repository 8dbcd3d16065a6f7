"""Schedulers: placement as a pure decision (hypothesis), forecasters, and whole runs in simulation.
`sluice sim` comparing schedulers, a user's one among them, is in e2e/test_scheduler.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import Batch, FixedPolicy, Request
from scheduler import (
    ArrivalView, FaasView, Holt, HybridScheduler, InstanceView, Placement, Prices, Seasonal, View, batch_deadline,
    load_scheduler,
)
from scheduler.forecast import Trend, robust_line
from scheduler.baselines import pool_first
from scheduler.placement import cheapest_in_time, front, options
from sim import ServiceProfile
from sim.scheduled import simulate_scheduled

from support import DEMO_FAAS_PROFILE

PROFILE = ServiceProfile.from_dict(json.loads(DEMO_FAAS_PROFILE.read_text()))


def pool_s(b: int) -> float:
    return 0.003 + 0.0008 * b


def faas_s(b: int) -> float:
    return 0.040 + 0.008 * b


instances = st.lists(
    st.builds(lambda i, state, busy: (f"i{i}", state, busy), st.integers(0, 99), st.sampled_from(["ready", "starting", "stopping"]),
              st.one_of(st.sampled_from([0.0, 0.5]), st.floats(0, 2.0))),  # ties, and idle instances, often
    max_size=5, unique_by=lambda t: t[0],
)  # fmt: skip


@st.composite
def situations(draw):
    now = 10.0
    pool = [InstanceView(name, state, now + busy, 0, now, 0.0) for name, state, busy in draw(instances)]
    limit = draw(st.one_of(st.none(), st.integers(1, 4)))
    faas = draw(st.one_of(st.none(), st.builds(FaasView, st.integers(0, 5), st.just(limit), st.integers(0, 3),
                                                 st.just(0.02), st.sampled_from([0.0, 0.9]))))  # fmt: skip
    view = View(pool, faas, ArrivalView(100.0, lambda h: 100.0), Prices(), pool_s, faas_s, 16, draw(st.floats(0.05, 2.0)), 60.0)
    size = draw(st.integers(1, 32))
    waited = draw(st.floats(0, 0.05))
    batch = Batch([Request(str(k), now - waited) for k in range(size)], closed_at=now, reason="size")
    return batch, view, now


@settings(max_examples=300, deadline=None)
@given(situations())
def test_hybrid_placement_never_misses_when_an_option_meets_and_prefers_paid_instances(case) -> None:
    batch, view, now = case
    scheduler = HybridScheduler()
    choice = scheduler.place(batch, view, now)
    found = options(batch, view, now)
    if not found:
        assert choice.kind == "reject" and choice.reason
        return
    deadline = batch_deadline(batch, view.slo_s) - scheduler.margin * view.slo_s
    meeting = [o for o in found if o.predicted_done <= deadline]
    if meeting:
        assert choice.predicted_done <= deadline, "an option met the deadline, the choice does not"
        if any(o.kind == "instance" for o in meeting):
            assert choice.kind == "instance", "an instance already paid for meets it: FaaS would only add cost"
    if view.faas is not None and not view.faas.has_room:
        assert choice.kind != "faas", "FaaS is at its concurrency limit"
    if choice.kind == "instance":
        assert any(i.id == choice.instance and i.ready for i in view.instances)


@settings(max_examples=300, deadline=None)
@given(situations())
def test_the_front_places_give_each_placement_rule_the_choice_all_places_give(case) -> None:
    batch, view, now = case
    everything = options(batch, view, now)
    deadline = batch_deadline(batch, view.slo_s)
    assert cheapest_in_time(front(batch, view, now), deadline) == cheapest_in_time(everything, deadline)
    # MArk's and the fixed pool's rule, from every place as it was written before `front`.
    pool = [o for o in everything if o.kind == "instance"]
    first = min(pool, key=lambda o: o.predicted_done) if pool else None
    faas = [o for o in everything if o.kind == "faas"]
    expected = (first if first is not None and first.predicted_done <= deadline
                else faas[0] if faas else first or Placement.reject("no capacity"))  # fmt: skip
    assert pool_first(batch, view, now) == expected


def test_holt_follows_a_ramp_and_seasonal_learns_a_period() -> None:
    holt = Holt(step_s=1.0, alpha=0.5, beta=0.3)
    for k in range(60):
        holt.update(100 + 10 * k)
    assert holt.forecast(10.0) == pytest.approx(100 + 10 * 59 + 100, rel=0.05)
    seasonal = Seasonal(step_s=1.0, period_s=10.0, alpha=0.2, beta=0.01, gamma=0.5)
    pattern = [100, 100, 100, 100, 100, 500, 500, 100, 100, 100]
    for _ in range(30):
        for value in pattern:
            seasonal.update(value)
    assert seasonal.forecast(5.0) > 3 * seasonal.forecast(1.0)


def test_trend_follows_a_ramp_and_a_burst_at_its_end_does_not_tilt_it() -> None:
    ramp = [500.0 + 30.0 * k for k in range(12)]
    assert robust_line(ramp) == pytest.approx((500.0, 30.0))
    trend = Trend(step_s=10.0, window=12)
    for rate in ramp[:10] + [ramp[10] + 1500.0, ramp[11] + 1500.0]:  # the newest two steps in a burst
        trend.update(round(rate * 10.0))
    # 60 s ahead of the newest step's middle: 6.5 steps on along the ramp.
    assert trend.forecast(60.0) == pytest.approx(ramp[11] + 30.0 * 6.5, rel=0.02)
    holt = Holt(step_s=10.0)
    for rate in ramp[:10] + [ramp[10] + 1500.0, ramp[11] + 1500.0]:
        holt.update(round(rate * 10.0))
    assert holt.forecast(60.0) > ramp[11] + 30.0 * 6.5 + 500.0, "Holt chases the burst"


def drive(scheduler: HybridScheduler, rate, seconds: int, startup_s: float = 60.0) -> list[tuple[float, str]]:
    """Feed `scheduler` rate(t) arrivals each second and carry out its plans on a bare pool
    (idle instances, ready `startup_s` after their start, gone at once when stopped); the
    pool is provisioned at t=0 from the first minute's rate, as simulate_scheduled does.
    Returns the (time, "start" | "stop") events."""
    pool: dict[str, tuple[float, float]] = {}  # id -> (ready_at, billed_since)
    events: list[tuple[float, str]] = []

    def view(now: float) -> View:
        since = max(0.0, now - 60.0)
        minute = sum(rate(since + k) for k in range(60)) / 60.0
        instances = [InstanceView(i, "ready" if ready <= now else "starting", now, 0, ready, billed)
                     for i, (ready, billed) in pool.items()]  # fmt: skip
        return View(instances, FaasView(0, None, 1, 0.02, 0.9), ArrivalView(minute, lambda _h: minute), Prices(), pool_s,
                    faas_s, 16, 0.5, startup_s, batch_wait_s=0.05)  # fmt: skip

    def apply(now: float, ready_now: bool = False) -> None:
        plan = scheduler.plan(view(now), now)
        for _ in range(plan.start):
            pool[f"i{len(events)}"] = (now if ready_now else now + startup_s, now)
            events.append((now, "start"))
        for name in plan.stop:
            del pool[name]
            events.append((now, "stop"))

    apply(0.0, ready_now=True)
    for t in range(seconds):
        scheduler.observe(round(rate(float(t))), float(t))
        if t > 0 and t % scheduler.plan_interval_s == 0:
            apply(float(t))
    return events


def test_hybrid_leaves_bursts_shorter_than_a_startup_to_faas() -> None:
    # One instance (about 950 req/s at B=16) covers the base; a second would serve only the
    # bursts, 15 s in 180 s, less than its price (and it would be ready after them). The
    # first burst comes before the scheduler has seen a minute of traffic.
    events = drive(HybridScheduler(), lambda t: 400.0 + (1500.0 if t % 180 < 15 else 0.0), 900)
    assert events == [(0.0, "start")]


def test_hybrid_starts_an_instance_a_startup_ahead_of_a_ramp_and_stops_it_after() -> None:
    # 300 -> 1500 req/s over 400 s and back. A second instance pays for itself above about
    # 1080 req/s: reached at t = 260 going up, left at t = 540 coming down.
    events = drive(HybridScheduler(), lambda t: 300.0 + 3.0 * min(t, 400.0) - 3.0 * min(max(t - 400.0, 0.0), 400.0), 1000)
    starts = [t for t, kind in events if kind == "start"]
    stops = [t for t, kind in events if kind == "stop"]
    assert len(starts) == 2 and starts[0] == 0.0 and len(stops) == 1
    assert 170.0 <= starts[1] <= 230.0, "ready (60 s later) about when the ramp needs it"
    assert 530.0 <= stops[0] <= 620.0, "stopped within the scale-in delay of the ramp leaving"


def test_hybrid_holds_its_pool_through_a_cycle_of_a_few_startups_and_follows_an_hour_long_one() -> None:
    # 1000 req/s +- 80% every 10 minutes, instances that take 90 s to start: a pool that
    # follows the curve is always late and pays a start-up per swing (the planner before the
    # drifting plan was priced as a plan of its own started 11 instances in 30 minutes here;
    # issue 15, diurnal#7). Over an hour-long curve, following it pays.
    fast = drive(HybridScheduler(), lambda t: 1000.0 + 800.0 * np.sin(2 * np.pi * t / 600.0), 1800, startup_s=90.0)
    assert [kind for t, kind in fast if t > 0] == []
    slow = drive(HybridScheduler(), lambda t: 1000.0 + 800.0 * np.sin(2 * np.pi * t / 3600.0), 1800, startup_s=60.0)
    assert [kind for t, kind in slow if t > 0] == ["start", "stop"]


def test_hybrid_plans_with_the_view_that_has_forecast_better() -> None:
    # Phases of 90 s switch faster than a pool can follow: the moving line, a startup
    # ahead, is wrong at every switch, and the steady view (the mixture) forecasts better.
    switching = HybridScheduler()
    drive(switching, lambda t: 2000.0 if (t // 90) % 2 == 0 else 300.0, 900)
    assert not switching.moving()
    ramp = HybridScheduler()
    drive(ramp, lambda t: 300.0 + 3.0 * t, 300)
    assert ramp.moving(), "the EWMA lags a ramp; the line follows it"


def base_plus_bursts(seconds: float, seed: int = 1) -> np.ndarray:
    """A slowly varying base (250 to 550 req/s) plus a 15 s burst of +1500 req/s every 3 minutes."""
    rng = np.random.default_rng(seed)
    chunks = []
    for t in np.arange(0.0, seconds, 1.0):
        rate = 400 + 150 * np.sin(2 * np.pi * t / 1800) + (1500 if t % 180 < 15 else 0)
        chunks.append(np.sort(t + rng.uniform(0, 1.0, rng.poisson(rate))))
    return np.concatenate(chunks)


def test_a_built_in_takes_its_setting_after_a_colon_and_a_bad_one_is_a_clear_error() -> None:
    assert load_scheduler("fixed").instances == 1 and load_scheduler("fixed:4").instances == 4
    assert load_scheduler("mark").headroom == 1.2 and load_scheduler("mark:1.5").headroom == 1.5
    assert load_scheduler("pool-only:0.7").target_inflight == 0.7
    for spec, said in (("fixed:two", "fixed's setting is its instances, a number"), ("fixed:0", "must be above 0"),
                       ("mark:-1", "mark's headroom must be above 0"), ("mark:inf", "finite"), ("fixed:2.5", "a number")):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            load_scheduler(spec)


def test_hybrid_meets_the_slo_on_base_plus_bursts_and_beats_faas_only_and_an_autoscaled_pool() -> None:
    times = base_plus_bursts(400.0)
    results = {}
    for name in ("hybrid", "faas-only", "pool-only"):
        result = simulate_scheduled(times, FixedPolicy(16, 0.05), PROFILE, load_scheduler(name), slo_s=0.5, memory_mb=1024)
        summary = result.summary()
        assert summary["completed"] == summary["requests"] == len(times)
        results[name] = summary
    hybrid = results["hybrid"]
    assert hybrid["slo_attainment"] >= 0.99
    assert hybrid["rejected_batches"] == 0 and 0 < hybrid["faas_share"] < 0.5 and hybrid["instance_hours"] > 0
    assert hybrid["cost_usd"] < results["faas-only"]["cost_usd"]
    assert results["pool-only"]["slo_attainment"] < 0.99 or hybrid["cost_usd"] <= results["pool-only"]["cost_usd"]


