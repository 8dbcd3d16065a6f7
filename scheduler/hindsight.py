"""Choosing between plans by what each would have cost over the last minutes (issue 15).

On a family of workloads it was not tuned on, the moving hybrid plan lost most often to a
fixed pool of the right size: it started instances for ramps and bursts that did not last
(each start pays `startup_s` of an instance that serves nothing, and a minimum bill), and
stopped them before the traffic came back. Which plan is right depends on the traffic: a
diurnal curve of an hour wants a pool that follows it, a 10-minute cycle with instances that
take 90 s to start wants one that does not.

So the planner keeps several plans and looks back: every plan, the recent seconds' arrivals
are replayed (`lookback.PoolModel`: what each pool turns away to the function) under
- the moving plan as it was decided (`PlanHistory`: its targets, each ready a startup after
  it was asked for, paid from the ask, kept for the scale-in delay after it was no longer
  wanted),
- every fixed count, and
- the drifting plan (the best fixed count held on the moving plan's side while the
  traffic drifts), as it was decided,
and the cheapest is the plan now. All are priced on the same replay, the same per-second
counts, the same capacities, the recent minutes weighing more. A rule that bends one plan
towards another (the drifting plan) is priced as a plan of its own: bolted onto the fixed
count, it made the fixed count chase a 10-minute cycle just as the moving plan did.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .lookback import PoolModel


class PlanHistory:
    """A plan's targets, as (time, count) at each plan."""

    def __init__(self, keep_s: float = 1200.0) -> None:
        self.keep_s = keep_s
        self.targets: deque[tuple[float, int]] = deque()

    def add(self, now: float, target: int) -> None:
        self.targets.append((now, target))
        while self.targets and self.targets[0][0] < now - self.keep_s:
            self.targets.popleft()

    def at(self, times: np.ndarray) -> np.ndarray:
        """The target in force at each of `times`; before the first, the first: the plans
        began with a pool already there (the simulator's provisioned one, or the gateway's
        configured servers), not with one still starting. Counting the first plan's pool as
        started from nothing charged the moving plans, for their first start-up, the
        function's bill for traffic their instances served, and the fixed count won in
        hindsight for ten minutes (issue 15)."""
        if not self.targets:
            return np.zeros(np.shape(times))
        when = np.array([t for t, _ in self.targets])
        count = np.array([n for _, n in self.targets], dtype=float)
        index = np.searchsorted(when, times, side="right") - 1
        return count[np.maximum(index, 0)]

    def ready(self, times: np.ndarray, startup_s: float, hold_s: float, step_s: float = 10.0) -> np.ndarray:
        """Instances serving at each of `times` had the plan been carried out: from a startup
        after they were wanted until `hold_s` after they no longer were."""
        lags = np.arange(0.0, hold_s + 1e-9, max(step_s, 1.0))  # the plans within the hold (one per `step_s`)
        paid = self.at(times[None, :] - lags[:, None]).max(axis=0)
        ready = self.at(times[None, :] - startup_s - lags[:, None]).max(axis=0)
        return np.minimum(paid, ready)


def moving_cost(counts: np.ndarray, times: np.ndarray, history: PlanHistory, model: PoolModel, *,
                startup_s: float, hold_s: float, instance_per_s: float, per_request: float | np.ndarray,
                step_s: float = 10.0, weights: np.ndarray | None = None) -> float:  # fmt: skip
    """What a plan would have cost per second over `counts` (arrivals in the seconds starting
    at `times`, each second weighing `weights`, default alike): its serving instances, the
    function's bill for what they turn away, and each start's start-up, billed serving
    nothing. A start is charged when its instance begins to serve, not when it was asked
    for: a plan that starts instances a startup ahead of a ramp was charged for them while
    the ramp was still to come, and lost in hindsight to a count that had not seen it yet."""
    ready = history.ready(times, startup_s, hold_s, step_s).astype(int)
    turned_away = model.turned_away(int(ready.max(initial=0)) + 1, counts)[ready, np.arange(len(counts))]
    started = np.maximum(0, np.diff(ready, prepend=ready[:1]))  # instances that began to serve in each second
    weights = np.ones(len(counts)) if weights is None else weights
    per_second = (ready + started * startup_s) * instance_per_s + turned_away * counts * per_request
    return float(per_second @ weights / weights.sum())
