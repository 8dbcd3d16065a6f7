"""Choosing between plans by what each would have cost over the last minutes (issue 15).

On a family of workloads it was not tuned on, the moving hybrid plan lost most often to a
fixed pool of the right size: it started instances for ramps and bursts that did not last
(each start pays `startup_s` of an instance that serves nothing, and a minimum bill), and
stopped them before the traffic came back. Which plan is right depends on the traffic: a
diurnal curve of an hour wants a pool that follows it, a 10-minute cycle with instances that
take 90 s to start wants one that does not.

So the planner keeps both and looks back: every plan, the recent seconds' arrivals are
replayed (`lookback.PoolModel`: what each pool turns away to the function) under
- the moving plan as it was decided (`PlanHistory`: its targets, each ready a startup after
  it was asked for, paid from the ask, kept for the scale-in delay after it was no longer
  wanted), and
- every fixed count,
and the cheaper of the moving plan and the best fixed count is the plan now. Both are
priced on the same replay, the same per-second counts, the same capacities.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .lookback import PoolModel


class PlanHistory:
    """The moving plan's targets, as (time, count) at each plan."""

    def __init__(self, keep_s: float = 1200.0) -> None:
        self.keep_s = keep_s
        self.targets: deque[tuple[float, int]] = deque()

    def add(self, now: float, target: int) -> None:
        self.targets.append((now, target))
        while self.targets and self.targets[0][0] < now - self.keep_s:
            self.targets.popleft()

    def at(self, times: np.ndarray) -> np.ndarray:
        """The target in force at each of `times` (0 before the first)."""
        if not self.targets:
            return np.zeros(len(times))
        when = np.array([t for t, _ in self.targets])
        count = np.array([n for _, n in self.targets], dtype=float)
        index = np.searchsorted(when, times, side="right") - 1
        return np.where(index >= 0, count[np.maximum(index, 0)], 0.0)

    def pool(self, times: np.ndarray, startup_s: float, hold_s: float, step_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
        """(paid, ready) instances at each of `times` had the plan been carried out: an
        instance is paid from when it is wanted until `hold_s` after it no longer is, and
        serves from a startup after it was wanted."""
        lags = np.arange(0.0, hold_s + 1e-9, max(step_s, 1.0))  # the plans within the hold (one per `step_s`)
        paid = np.max([self.at(times - d) for d in lags], axis=0)
        ready = np.max([self.at(times - startup_s - d) for d in lags], axis=0)
        return paid, np.minimum(paid, ready)


def moving_cost(counts: np.ndarray, times: np.ndarray, history: PlanHistory, model: PoolModel, *,
                startup_s: float, hold_s: float, instance_per_s: float, per_request: float,
                step_s: float = 10.0) -> float:  # fmt: skip
    """What the moving plan would have cost per second over `counts` (arrivals in the seconds
    starting at `times`)."""
    paid, ready = history.pool(times, startup_s, hold_s, step_s)
    ready = ready.astype(int)
    turned_away = model.turned_away(int(ready.max(initial=0)) + 1, counts)[ready, np.arange(len(counts))]
    return float(paid.mean() * instance_per_s + turned_away @ counts / len(counts) * per_request)
