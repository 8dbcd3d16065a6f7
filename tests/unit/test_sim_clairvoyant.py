"""The cheapest pool plan knowing every arrival (`sim.clairvoyant`): the bound on what planning can buy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scheduler import FixedPool, PoolModel
from sim.clairvoyant import Clairvoyant, cheapest_plan, member_plan
from sim.contest import run
from sim.family import member

MODEL = PoolModel(service_s=0.05, batch_size=1, slack_s=0.1)  # one instance serves 20 requests/s
PRICES = {"instance_per_s": 0.001, "per_request": 0.0002}


def _brute_force(counts: np.ndarray, step: int, most: int, startup_s: float) -> float:
    """Every sequence of counts, priced one second at a time: the DP's answer, found the slow way."""
    share = MODEL.turned_away(most + 1, counts)
    best = np.inf
    for plan in itertools.product(range(most + 1), repeat=len(counts) // step):
        per_second = np.repeat(plan, step)
        faas = sum(share[n, t] * counts[t] for t, n in enumerate(per_second)) * PRICES["per_request"]
        pool = per_second.sum() * PRICES["instance_per_s"]
        starts = sum(max(0, b - a) for a, b in itertools.pairwise(plan)) * startup_s * PRICES["instance_per_s"]
        best = min(best, faas + pool + starts)
    return best


@pytest.mark.parametrize("startup_s", [0.0, 5.0, 40.0])
def test_the_plan_is_the_cheapest_of_every_sequence_of_counts(startup_s: float) -> None:
    rng = np.random.default_rng(7)
    counts = rng.poisson(np.repeat([5.0, 30.0, 2.0, 45.0, 10.0], 4)).astype(float)  # five steps of 4 s
    plan = cheapest_plan(counts, MODEL, step_s=4, most=3, startup_s=startup_s, **PRICES)
    assert plan.cost == pytest.approx(_brute_force(counts, 4, 3, startup_s), rel=1e-9)


def test_no_fixed_count_is_cheaper_and_a_lasting_change_is_followed() -> None:
    counts = np.concatenate([np.full(300, 10.0), np.full(300, 70.0)])  # 10 req/s for five minutes, then 70
    plan = cheapest_plan(counts, MODEL, step_s=10, most=8, startup_s=30.0, **PRICES)
    assert plan.cost <= plan.fixed.min() + 1e-12
    assert plan.ratio < 0.9  # a pool sized for the second half is idle in the first
    assert plan.counts[:27].max() < plan.counts[30:].min()


def test_a_short_burst_is_left_to_the_function_when_a_start_costs_more_than_it_saves() -> None:
    counts = np.full(600, 15.0)
    counts[300:305] = 200.0  # five seconds at 13x
    cheap = cheapest_plan(counts, MODEL, step_s=10, most=12, startup_s=0.0, **PRICES)
    dear = cheapest_plan(counts, MODEL, step_s=10, most=12, startup_s=600.0, **PRICES)
    assert cheap.counts[30] > cheap.counts[0]  # free starts: the burst gets its instances
    assert np.all(dear.counts == dear.counts[0])  # ten minutes billed per start: never worth it
    assert dear.ratio == pytest.approx(1.0)


def test_carried_out_in_the_simulator_it_meets_the_slo_near_its_model_cost() -> None:
    m = member(15, "diurnal+bursts")  # long bursts on a slow cycle: a count that follows them pays
    plan = member_plan(m)
    assert plan.ratio < 0.9
    followed = run(m, "clairvoyant", "-", lambda: Clairvoyant(plan, m.startup_s))
    fixed = run(m, "fixed", str(plan.best_fixed), lambda: FixedPool(plan.best_fixed))
    assert followed.meets, followed
    assert followed.cost_usd < fixed.cost_usd, (followed, fixed)
    assert followed.cost_usd == pytest.approx(plan.cost, rel=0.25)  # the model, not the simulation: roughly
