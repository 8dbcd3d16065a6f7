"""The cheapest pool plan knowing every arrival in advance: a bound on what planning can buy (issue 15).

The family's best baseline is most often a fixed pool whose size was chosen knowing the
whole run. Whether a planner that moves its count could beat it by much is a question
about the traffic, not about any one planner, and this answers it: with every second's
arrivals known, the count for each planning step is chosen by dynamic programming to
minimise the run's cost under the planner's own model of a pool (`scheduler.PoolModel`:
the instances' price, the function's bill for what they turn away, each start billed for
its start-up):

    V_k(n) = c_k(n) + min_m [V_(k-1)(m) + a (n - m)+],  a = the price of one start-up

A fixed count is one of the plans it searches, so its cost is at most the best fixed
count's under the same model; their ratio is the most that moving the count could have
saved on this traffic, whatever the forecast. It leaves out the minimum bill (an instance
kept less than a minute), which only makes it lower: a bound.

`Clairvoyant` carries that plan out in the simulator, placing as hybrid does, so that its
simulated bill sits in the same table as the baselines' runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler import HybridScheduler, PoolModel, PoolPlan, View, enough_instances, function_price
from scheduler.fleet import idle_past_minimum

from .family import Member


@dataclass(frozen=True)
class CheapestPlan:
    counts: np.ndarray  # instances ready in each step
    cost: float  # the plan's cost over the run, in the model ($)
    fixed: np.ndarray  # each fixed count's cost over the run, in the model ($), 0 .. most
    step_s: float

    @property
    def best_fixed(self) -> int:
        return int(np.argmin(self.fixed))

    @property
    def ratio(self) -> float:
        """The plan's cost over the best fixed count's: at most 1."""
        best = float(self.fixed.min())
        return self.cost / best if best > 0 else 1.0


def step_costs(counts: np.ndarray, model: PoolModel, *, step_s: float, instance_per_s: float,
               per_request: float | np.ndarray, most: int) -> np.ndarray:  # fmt: skip
    """(most + 1, steps): what 0 .. most instances ready through each `step_s` cost, with the
    function's bill for what they turn away (`counts`: arrivals in each second; the last step
    may be short)."""
    step = max(1, round(step_s))
    steps = math.ceil(len(counts) / step)
    turned_away = np.zeros((most + 1, steps * step))  # requests each pool leaves, per second (the last step padded)
    turned_away[:, : len(counts)] = model.turned_away(most + 1, counts) * counts * per_request
    faas = turned_away.reshape(most + 1, steps, step).sum(axis=2)  # (n, step): the function's bill
    seconds = np.minimum(step, len(counts) - step * np.arange(steps))
    return faas + np.outer(np.arange(most + 1, dtype=float), seconds) * instance_per_s


def start_costs(most: int, instance_per_s: float, startup_s: float) -> np.ndarray:
    """[to, from]: the start-ups billed going from one count to another (none to stop)."""
    sizes = np.arange(most + 1, dtype=float)
    return instance_per_s * startup_s * np.maximum(0.0, sizes[:, None] - sizes[None, :])


def cheapest_plan(counts: np.ndarray, model: PoolModel, *, step_s: float, instance_per_s: float,
                  per_request: float | np.ndarray, startup_s: float, most: int) -> CheapestPlan:  # fmt: skip
    """The count per `step_s` that minimises the cost of serving `counts` (arrivals in each
    second), under `model` (`per_request`: a request's bill on the function, in each second
    or in all); instances at the start are there already (no start-up paid)."""
    counts = np.asarray(counts, float)
    step_cost = step_costs(counts, model, step_s=step_s, instance_per_s=instance_per_s, per_request=per_request, most=most)
    steps = step_cost.shape[1]
    start = start_costs(most, instance_per_s, startup_s)
    value = step_cost[:, 0].copy()
    came_from = np.zeros((steps, most + 1), dtype=int)
    for k in range(1, steps):
        total = value[None, :] + start
        came_from[k] = np.argmin(total, axis=1)
        value = total[np.arange(most + 1), came_from[k]] + step_cost[:, k]
    plan = np.empty(steps, dtype=int)
    plan[-1] = int(np.argmin(value))
    for k in range(steps - 1, 0, -1):
        plan[k - 1] = came_from[k][plan[k]]
    return CheapestPlan(plan, float(value.min()), step_cost.sum(axis=1), float(max(1, round(step_s))))


@dataclass(frozen=True)
class Pricing:
    """A member priced as its simulation bills and modelled as hybrid's planner models a pool."""

    model: PoolModel
    instance_per_s: float
    startup_s: float
    faas_batch_cost: Callable[[int], float]  # a batch of b on the function
    batch_size: int
    wait_s: float

    @classmethod
    def of(cls, member: Member) -> Pricing:
        profile, b = member.profile(), member.batch_size
        prices = profile.prices(member.memory_mb, member.min_billed_s)
        model = PoolModel.for_slo(profile.iaas_service_s(b), b, member.slo_s, member.timeout_s, HybridScheduler().margin,
                                  profile.iaas_service_s)  # fmt: skip
        return cls(model, prices.instance_per_s, member.startup_s,
                   lambda size: prices.faas_batch_cost(profile.faas_service_s(size, member.memory_mb)), b, member.timeout_s)  # fmt: skip

    def per_request(self, counts: np.ndarray) -> np.ndarray:
        """A request's bill on the function in each second, at the batches its rate fills."""
        return function_price(self.model.smoothed(counts), self.batch_size, self.wait_s, self.faas_batch_cost)


def member_counts(member: Member, draw: int = 0) -> np.ndarray:
    """Arrivals in each second of the member's run (`draw` > 0: another draw of its traffic)."""
    return np.bincount(member.arrivals(draw).astype(int), minlength=int(member.duration_s)).astype(float)[: int(member.duration_s)]


def member_plan(member: Member, step_s: float = 10.0) -> CheapestPlan:
    """`cheapest_plan` for one member of the family, priced as its simulation bills and
    modelled as hybrid's planner models a pool (the same margin inside the SLO)."""
    pricing, counts = Pricing.of(member), member_counts(member)
    return cheapest_plan(counts, pricing.model, step_s=step_s, instance_per_s=pricing.instance_per_s,
                         per_request=pricing.per_request(counts), startup_s=member.startup_s,
                         most=enough_instances(pricing.model, counts, 64))  # fmt: skip


class Clairvoyant(HybridScheduler):
    """Carries out a `CheapestPlan` in the simulator: instances are started a start-up before
    the step that wants them, and stopped (idle, past their minimum bill) when no step within
    a start-up wants them. Placement is hybrid's. Not a scheduler anyone can run."""

    name = "clairvoyant"

    def __init__(self, cheapest: CheapestPlan, startup_s: float) -> None:
        super().__init__(plan_interval_s=cheapest.step_s)
        self.cheapest, self.startup_s = cheapest, startup_s

    def observe(self, arrivals: int, now: float) -> None:
        pass  # it knows

    def plan(self, view: View, now: float) -> PoolPlan:
        steps = self.cheapest.counts
        first = min(int(now // self.cheapest.step_s), len(steps) - 1)
        last = int((now + self.startup_s + self.plan_interval_s) // self.cheapest.step_s)
        target = int(steps[first : last + 1].max())
        live = view.live
        if target >= len(live):
            return PoolPlan(target, start=target - len(live))
        stop = tuple(i.id for i in idle_past_minimum(live, view, now)[: len(live) - target])
        return PoolPlan(len(live) - len(stop), stop=stop)
