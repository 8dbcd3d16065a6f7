"""The dispatch core's pool state: the one View, plans applied within bounds, the one bill,
and placement under one rule (a batch waits for the busy server it was given, and holds it)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from batching import Batch, FixedPolicy, Request
from scheduler import Dispatcher, Fleet, FunctionSettings, Placement, PoolPlan, Prices, View
from scheduler.rounds import Round
from sim.served import SimInstance


def fleet_of(servers: list[SimInstance], function: SimInstance | None = None, **kw) -> Fleet:
    return Fleet(lambda: servers, lambda: function, **kw)


def test_the_ledger_bills_from_the_start_request_with_the_minimum() -> None:
    servers: list[SimInstance] = []
    fleet = fleet_of(servers, prices=Prices(instance_min_billed_s=60.0), startup_s=5.0)
    token = fleet.start_requested(100.0)
    assert fleet.ledger.instance_seconds(103.0) == pytest.approx(3.0)  # billed while it boots
    server = SimInstance("i0")
    servers.append(server)
    fleet.start_ended(token, server, 105.0)
    assert fleet.startup_s == pytest.approx(5.0)  # learnt from the start it saw
    assert fleet.ledger.instance_seconds(110.0) == pytest.approx(10.0)
    servers.remove(server)
    fleet.stop_ended(server, 120.0)  # lived 20 s: billed the 60 s minimum
    assert fleet.ledger.instance_seconds(500.0) == pytest.approx(60.0)
    failed = fleet.start_requested(200.0)
    fleet.start_ended(failed, None, 202.0)  # a start that failed bills the time it tried
    assert fleet.ledger.instance_seconds(500.0) == pytest.approx(62.0)


def test_a_server_there_from_the_beginning_says_nothing_of_how_long_a_start_takes() -> None:
    # The simulator's first plan is ready at once; a startup of 0 s learnt from it made the
    # planner look 0 s ahead and price starts as free until a real start ended.
    servers: list[SimInstance] = []
    fleet = fleet_of(servers, startup_s=120.0)
    server = SimInstance("i0")
    servers.append(server)
    fleet.start_ended(fleet.start_requested(0.0), server, 0.0, timed=False)
    view = fleet.view(1.0, pool_service=None, faas_service=None, batch_size=8, slo_s=1.0, batch_wait_s=0.02)
    assert view.startup_s == 120.0 and view.batch_wait_s == 0.02 and fleet.started == 1


def test_a_plan_is_applied_within_the_bound_counting_starting_and_stopping_servers() -> None:
    servers = [SimInstance("a"), SimInstance("b")]
    fleet = fleet_of(servers, max_instances=4)
    fleet.start_requested(0.0)
    start, stop = fleet.apply(PoolPlan(6, start=4), 0.0)
    assert start == 1 and stop == []  # 2 running + 1 starting: room for one
    fleet.start_requested(0.0)  # the driver starts it
    start, stop = fleet.apply(PoolPlan(1, stop=("a",)), 1.0)
    assert start == 0 and [s.name for s in stop] == ["a"] and "a" in fleet.stopping
    assert not fleet.accepts(servers[0], 1.0), "a stopping server takes no new batch"
    assert fleet.apply(PoolPlan(1, stop=("a",)), 2.0) == (0, [])  # asked once
    assert fleet.apply(PoolPlan(5, start=1), 2.0)[0] == 0  # still draining: it counts


def test_the_view_shows_busy_slots_starting_servers_and_warm_environments() -> None:
    servers = [SimInstance("a", max_inflight=2)]
    function = SimInstance("f", max_inflight=8)
    fleet = fleet_of(servers, function, startup_s=30.0,
                     function_settings=FunctionSettings(keep_alive_s=60.0, overhead_s=0.01, cold_start_s=0.5))  # fmt: skip
    fleet.began(servers[0], 10.0, 0.2)
    view = fleet.view(10.0, pool_service=lambda b: 0.01, faas_service=lambda b: 0.02, batch_size=8, slo_s=1.0)
    assert view.instances[0].busy_until == 10.0  # one slot of two is free
    fleet.began(servers[0], 10.05, 0.1)
    view = fleet.view(10.1, pool_service=lambda b: 0.01, faas_service=lambda b: 0.02, batch_size=8, slo_s=1.0)
    assert view.instances[0].busy_until == pytest.approx(10.15) and view.instances[0].queued == 2
    token = fleet.start_requested(10.1)
    view = fleet.view(10.1, pool_service=None, faas_service=None, batch_size=8, slo_s=1.0,
                      held={"a": (10.5, 3)})  # fmt: skip
    assert view.instances[0].busy_until == 10.5 and view.instances[0].queued == 5
    assert view.instances[1].id == f"starting-{token}" and view.instances[1].ready_at == pytest.approx(40.1)
    assert view.faas is not None and view.faas.warm_idle == 0 and view.faas.cold_start_s == 0.5
    fleet.began(function, 11.0, 0.05)
    fleet.function_began(11.0)
    fleet.ended(function, 11.05, 11.05)
    view = fleet.view(12.0, pool_service=None, faas_service=None, batch_size=8, slo_s=1.0)
    assert view.faas.warm_idle == 1  # believed warm until the keep-alive runs out
    view = fleet.view(80.0, pool_service=None, faas_service=None, batch_size=8, slo_s=1.0)
    assert view.faas.warm_idle == 0


def test_take_peak_reads_and_resets_the_most_in_flight() -> None:
    function = SimInstance("f", max_inflight=8)
    fleet = fleet_of([], function)
    for t in range(3):
        fleet.began(function, float(t), 1.0)
    fleet.ended(function, 3.0, 1.0)
    assert fleet.take_peak(function) == 3 and fleet.take_peak(function) == 2


def test_a_batch_waits_for_its_busy_server_and_holds_it_while_later_ones_go_elsewhere() -> None:
    server, function = SimInstance("a"), SimInstance("f", max_inflight=4)
    fleet = fleet_of([server], function)
    seen: list[tuple[int, int]] = []

    class HoldsOnce:
        name, plan_interval_s = "test", 10.0

        def place(self, batch: Batch, view: View, now: float) -> Placement:
            a = view.instances[0]
            seen.append((a.queued, round((a.busy_until - now) * 1000)))
            return Placement("instance", "a") if a.queued <= 1 else Placement("faas")

        def plan(self, view: View, now: float) -> PoolPlan:
            return PoolPlan(1)

        def observe(self, arrivals: int, now: float) -> None: ...

    core = Dispatcher(FixedPolicy(1, 0.0), fleet, scheduler=HoldsOnce(), slo_s=1.0,
                      pool_service=lambda b: 0.010, faas_service=lambda b: 0.020)  # fmt: skip
    sends = []
    for i in range(3):
        _, actions = core.submit(Request(str(i), 0.0), 0.0, None)
        sends += actions.sends
    # The first runs on "a"; the second waits for "a" (it was free in 10 ms); the third
    # sees "a" held by the second as well, and goes to the function.
    assert [s.seat.name for s in sends] == ["a", "f"]
    assert len(core.backlog) == 1
    actions = core.succeeded(sends[0], 0.010)
    assert [s.seat.name for s in actions.sends] == ["a"] and not core.backlog
    assert seen[:1] == [(0, 0)] and math.isfinite(seen[-1][1])


def test_batches_held_for_busy_servers_do_not_keep_later_ones_from_the_function() -> None:
    # A burst closes 40 batches at once. The first two fill the servers, sixteen are held for
    # them (predicted in time), and every later one belongs on the function: it goes in the
    # same round, not after a server finishes and another round offers it.
    servers = [SimInstance("a"), SimInstance("b")]
    function = SimInstance("f", max_inflight=1000)
    fleet = fleet_of(servers, function)

    class HoldsSixteen:
        name, plan_interval_s = "test", 10.0

        def place(self, batch: Batch, view: View, now: float) -> Placement:
            free = min(view.instances, key=lambda i: (i.queued, i.busy_until))
            return Placement("instance", free.id) if free.queued <= 8 else Placement("faas")

        def plan(self, view: View, now: float) -> PoolPlan:
            return PoolPlan(2)

        def observe(self, arrivals: int, now: float) -> None: ...

    core = Dispatcher(FixedPolicy(1, 0.0), fleet, scheduler=HoldsSixteen(), slo_s=1.0,
                      pool_service=lambda b: 0.010, faas_service=lambda b: 0.020, max_pending=1000)  # fmt: skip
    sends = []
    for i in range(40):
        _, actions = core.submit(Request(str(i), 0.0), 0.0, None)
        sends += actions.sends
    placed = [s.seat.name for s in sends]
    assert placed.count("a") == 1 and placed.count("b") == 1
    assert placed.count("f") == 40 - 2 - 16 and len(core.backlog) == 16


def test_a_round_of_placement_shows_the_views_the_fleet_builds_with_its_holds() -> None:
    # A round builds the fleet's view once per send, and a hold changes the held instance's
    # entry only (scheduler.rounds): every view must still be the fleet's own, field for field.
    servers = [SimInstance("a"), SimInstance("b")]
    function = SimInstance("f", max_inflight=2)
    fleet = fleet_of(servers, function, startup_s=30.0)
    fleet.began(servers[0], 9.9, 0.3)
    fleet.start_requested(9.0)
    pool_s, faas_s = (lambda b: 0.1), (lambda b: 0.2)

    def built(held: dict | None = None) -> View:
        return fleet.view(10.0, pool_service=pool_s, faas_service=faas_s, batch_size=4, slo_s=1.0, held=held)

    def same(a: View, b: View) -> bool:  # the arrivals' forecast is a new function in each view
        return replace(a, arrivals=a.arrivals.rate) == replace(b, arrivals=b.arrivals.rate)

    here = Round(fleet, 10.0, built)
    assert here.open and here.accepts(servers[1]) and not here.accepts(servers[0])
    assert here.seat(Placement("instance", "b")) is servers[1] and here.seat(Placement("faas")) is function
    assert here.seat(Placement("instance", "gone")) is None and here.seat(Placement.reject("no")) is None
    assert same(here.view(), built())
    here.hold(servers[0], 0.1)
    here.hold(servers[0], 0.1)
    assert here.held == {"a": (pytest.approx(10.4), 2)} and same(here.view(), built(here.held))
    fleet.began(function, 10.0, 0.2)
    fleet.function_began(10.0)
    here.sent()
    assert same(here.view(), built(here.held)) and here.view().faas.in_flight == 1
    fleet.began(servers[1], 10.0, 0.1)
    fleet.began(function, 10.0, 0.2)
    here.sent()
    assert not here.open and same(here.view(), built(here.held))
