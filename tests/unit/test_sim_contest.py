"""The benchmark's verdicts (`sim.contest`): against the cheapest baseline setting on each
member, and against each baseline at one setting for every member."""

from __future__ import annotations

import math

import numpy as np

from scheduler import PoolPlan, View, batch_fill
from sim.contest import FirstPool, Run, best_fixed, fixed_size, one_setting, run, verdict
from sim.family import member


def _run(m: str, scheduler: str, setting: str, cost: float, attainment: float = 0.999) -> Run:
    return Run(member=m, scheduler=scheduler, setting=setting, cost_usd=cost, attainment=attainment, p99_ms=100.0,
               instance_hours=1.0, instance_usd=cost / 2, faas_usd=cost / 2, faas_batch_share=0.1, cold_starts=0,
               instances_started=1, requests=1000, plan_ms_max=1.0, plan_ms_median=1.0, wall_s=1.0)  # fmt: skip


def test_the_verdict_takes_the_cheapest_setting_that_meets_the_slo() -> None:
    runs = [_run("a#1", "hybrid", "-", 1.0), _run("a#1", "mark", "headroom 1.0", 0.5, attainment=0.98),
            _run("a#1", "mark", "headroom 1.2", 0.8), _run("a#1", "fixed", "2 instances", 0.9)]  # fmt: skip
    v = verdict(runs)
    assert v.best is not None and (v.best.scheduler, v.best.setting) == ("mark", "headroom 1.2")
    assert math.isclose(v.ratio, 1.25)
    assert verdict([_run("a#1", "hybrid", "-", 1.0, attainment=0.9), runs[2]]).ratio == math.inf


def test_one_setting_sets_hybrid_against_each_rule_on_every_member() -> None:
    members = [member(1, "diurnal", 600.0), member(2, "bursts", 600.0)]
    first, second = (fixed_size(m, 1.0) for m in members)
    runs = [
        _run(members[0].name, "hybrid", "-", 1.0), _run(members[1].name, "hybrid", "-", 3.0, attainment=0.95),
        _run(members[0].name, "mark", "headroom 1.2", 2.0), _run(members[1].name, "mark", "headroom 1.2", 2.0),
        _run(members[0].name, "fixed", f"{first} instances", 0.5),
        _run(members[1].name, "fixed", f"{second} instances", 1.0, attainment=0.9),
    ]  # fmt: skip
    rules = {(r.scheduler, r.setting): r for r in one_setting(members, runs)}
    mark = rules["mark", "headroom 1.2"]
    assert (mark.meets, mark.members, mark.hybrid_cheaper) == (2, 2, 1)
    assert mark.worst == math.inf  # hybrid missed the SLO on the second member, where MArk met it
    fixed = rules["fixed", "1.0x the mean rate's fill"]
    assert (fixed.meets, fixed.median, fixed.worst, fixed.hybrid_cheaper) == (1, 2.0, 2.0, 0)
    assert rules["autoscaler", "target 0.7"].meets == 0 and rules["autoscaler", "target 0.7"].median is None


def test_fixed_sizes_grow_with_the_fill_and_start_at_one() -> None:
    m = member(3, "mmpp", 600.0)
    sizes = [fixed_size(m, f) for f in (0.5, 1.0, 2.0)]
    assert sizes == sorted(sizes) and sizes[0] >= 1
    assert sizes[1] == max(1, math.ceil(m.mean_rate / m.capacity))


def test_a_light_member_fills_its_batches_in_part_and_sizes_its_pools_for_it() -> None:
    light, regular = member(1, "diurnal", 600.0, light=True), member(1, "diurnal", 600.0)
    assert light.name == "diurnal#1/light" and light.mean_rate == regular.mean_rate
    fill = float(batch_fill(np.array([light.mean_rate]), light.batch_size, light.timeout_s)[0])
    assert light.batch_size > 2 * fill  # batches of 8, which the mean rate fills with about 2
    assert light.capacity >= 2 * light.mean_rate  # one instance takes the mean rate in full batches ...
    assert light.busy_at_mean > 1.5 * light.mean_rate / light.capacity  # ... not in the batches it gets
    assert fixed_size(light, 1.0) == math.ceil(light.busy_at_mean)


def test_best_fixed_is_the_cheapest_fixed_pool_that_met_the_slo() -> None:
    runs = [_run("a#1", "fixed", "1 instances", 0.5, attainment=0.97), _run("a#1", "fixed", "3 instances", 0.9),
            _run("a#1", "fixed", "2 instances", 0.7), _run("a#1", "mark", "headroom 1.0", 0.1)]  # fmt: skip
    assert best_fixed(runs, "a#1") == 2
    assert best_fixed(runs, "b#2") == 0


def test_first_pool_provisions_the_count_it_is_told_then_plans_on_its_own() -> None:
    plans: list[PoolPlan] = []

    class Recorded(FirstPool):
        def plan(self, view: View, now: float) -> PoolPlan:
            plans.append(super().plan(view, now))
            return plans[-1]

    m = member(2, "bursts", 300.0)
    told = run(m, "hybrid", "first-pool", lambda: Recorded(4))
    assert (plans[0].target, plans[0].start) == (4, 4)
    assert told.instances_started >= 4 and told.meets
    assert len(plans) > 10
