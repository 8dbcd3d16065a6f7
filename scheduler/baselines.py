"""The schedulers Sluice is measured against, and small examples of the interface.

- `FaasOnly`: every batch to the function (BATCH's setting).
- `PoolOnly`: a pool only; a fixed size, or a concurrency-target autoscaler as in
  Ray Serve and Knative (target batches in flight per instance, with up and down delays;
  in flight counts what the arrival rate keeps busy, since the backlog is not in the view).
- `FixedPool`: a fixed count of instances, FaaS for what they cannot take in time.
- `Mark`: MArk (Zhang et al., ATC'19): every 60 s, instances for 1.2x the forecast
  peak; FaaS only for batches the instances cannot take in time.
"""

from __future__ import annotations

import importlib
import math

from batching import Batch

from .forecast import Holt
from .hybrid import HybridScheduler
from .placement import front, on_function
from .types import Placement, PoolPlan, Scheduler, View, batch_deadline


class FaasOnly:
    name = "faas-only"
    plan_interval_s = 60.0

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        return on_function(batch, view, now) or Placement.reject("FaaS is at its concurrency limit")

    def plan(self, view: View, now: float) -> PoolPlan:
        return PoolPlan(0, stop=tuple(i.id for i in view.live))

    def observe(self, arrivals: int, now: float) -> None:
        pass


class PoolOnly:
    """`instances` fixed; or, with `target_inflight`, autoscaled on batches in flight."""

    name = "pool-only"

    def __init__(self, instances: int = 1, target_inflight: float | None = 2.0, up_delay_s: float = 0.0,
                 down_delay_s: float = 60.0, plan_interval_s: float = 2.0) -> None:  # fmt: skip
        self.instances, self.target_inflight = instances, target_inflight
        self.up_delay_s, self.down_delay_s = up_delay_s, down_delay_s
        self.plan_interval_s = plan_interval_s
        self._want_since: dict[str, float] = {}

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        pool = [o for o in front(batch, view, now) if o.kind == "instance"]
        if not pool:
            return Placement.reject("no instance is ready")
        return min(pool, key=lambda o: o.predicted_done)

    def plan(self, view: View, now: float) -> PoolPlan:
        live = view.live
        if self.target_inflight is None:
            wanted = self.instances
        else:
            wanted = max(self.instances, math.ceil(self.concurrency(view, live) / self.target_inflight))
        wanted = min(wanted, view.max_instances)
        direction = "up" if wanted > len(live) else "down" if wanted < len(live) else ""
        for other in ("up", "down"):
            if other != direction:
                self._want_since.pop(other, None)
        if not direction:
            return PoolPlan(len(live))
        since = self._want_since.setdefault(direction, now)
        if direction == "up":
            return PoolPlan(wanted, start=wanted - len(live)) if now - since >= self.up_delay_s else PoolPlan(len(live))
        if now - since < self.down_delay_s:
            return PoolPlan(len(live))
        idle = sorted((i for i in live if i.ready and i.busy_until <= now), key=lambda i: i.billed_since)
        stop = tuple(i.id for i in idle[: len(live) - wanted])
        return PoolPlan(len(live) - len(stop), stop=stop)

    @staticmethod
    def concurrency(view: View, live: list) -> float:
        """Batches in flight: those on the instances, or what the arrival rate keeps busy
        (Little's law, at full batches), whichever is more. The backlog waiting for an
        instance is not in the view; the rate stands for it, as Knative's activator counts
        requests queued ahead of the pods."""
        on_instances = sum(i.queued for i in live)
        if view.pool_service is None:
            return on_instances
        b = max(1, view.batch_size)
        return max(on_instances, view.arrivals.rate / b * view.pool_service(b))

    def observe(self, arrivals: int, now: float) -> None:
        pass


def pool_first(batch: Batch, view: View, now: float) -> Placement:
    """MArk's placement: the instance that answers first if it meets the deadline, else FaaS."""
    found = front(batch, view, now)
    pool = [o for o in found if o.kind == "instance"]
    deadline = batch_deadline(batch, view.slo_s)
    if pool:
        best = min(pool, key=lambda o: o.predicted_done)
        if best.predicted_done <= deadline:
            return best
    faas = [o for o in found if o.kind == "faas"]
    if faas:
        return faas[0]
    return min(pool, key=lambda o: o.predicted_done) if pool else Placement.reject("no capacity")


class FixedPool:
    """A fixed count of instances, FaaS for the batches they cannot take in time."""

    name = "fixed"
    plan_interval_s = 60.0

    def __init__(self, instances: int = 1) -> None:
        self.instances = instances

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        return pool_first(batch, view, now)

    def plan(self, view: View, now: float) -> PoolPlan:
        live = view.live
        wanted = min(self.instances, view.max_instances)
        return PoolPlan(wanted, start=max(0, wanted - len(live)))

    def observe(self, arrivals: int, now: float) -> None:
        pass


class Mark:
    name = "mark"
    plan_interval_s = 60.0

    def __init__(self, headroom: float = 1.2, step_s: float = 10.0) -> None:
        self.headroom = headroom
        self._traffic = HybridScheduler(step_s=step_s, forecaster=Holt(step_s=step_s))
        self._peak = 0.0
        self._last = 0

    def observe(self, arrivals: int, now: float) -> None:
        self._traffic.observe(arrivals, now)
        self._last += arrivals

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        return pool_first(batch, view, now)

    def plan(self, view: View, now: float) -> PoolPlan:
        live = view.live
        if view.pool_service is None:
            return PoolPlan(0)
        rate, _ = self._traffic.expected_rate(view)
        peak = max(rate, view.arrivals.rate)
        b = max(1, view.batch_size)
        capacity = b / view.pool_service(b)
        wanted = min(view.max_instances, math.ceil(self.headroom * peak / capacity)) if peak > 0 else 0
        if wanted >= len(live):
            return PoolPlan(wanted, start=wanted - len(live))
        idle = sorted((i for i in live if i.ready and i.busy_until <= now), key=lambda i: i.billed_since)
        stop = tuple(i.id for i in idle[: len(live) - wanted])
        return PoolPlan(len(live) - len(stop), stop=stop)


BUILT_IN = {"hybrid": HybridScheduler, "faas-only": FaasOnly, "pool-only": PoolOnly, "mark": Mark, "fixed": FixedPool}
# The one knob a built-in takes after a colon, as the benchmark sweeps it: `fixed:3` (instances),
# `mark:1.5` (headroom over the forecast peak), `pool-only:0.7` (target batches in flight).
SETTINGS = {"fixed": ("instances", int), "mark": ("headroom", float), "pool-only": ("target_inflight", float)}


def load_scheduler(spec: str) -> Scheduler:
    """A built-in scheduler by name, with its setting (`fixed:3`, `mark:1.5`, `pool-only:0.7`),
    or `module:Class` (constructed with no arguments)."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]()
    module_name, _, class_name = spec.partition(":")
    if module_name in SETTINGS:
        knob, kind = SETTINGS[module_name]
        try:
            value = kind(class_name)
        except ValueError:
            raise ValueError(f"scheduler {spec!r}: {module_name}'s setting is its {knob}, a number") from None
        if not 0 < value < math.inf:
            raise ValueError(f"scheduler {spec!r}: {module_name}'s {knob} must be above 0 and finite")
        return BUILT_IN[module_name](**{knob: value})
    if not module_name or not class_name:
        raise ValueError(f"scheduler {spec!r}: use one of {', '.join(BUILT_IN)} (fixed:N, mark:H, pool-only:T) or module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"scheduler {spec!r}: {exc}") from None
    scheduler = cls()
    for method in ("place", "plan", "observe"):
        if not callable(getattr(scheduler, method, None)):
            raise ValueError(f"scheduler {spec!r} has no {method}() method")
    if not hasattr(scheduler, "plan_interval_s"):
        raise ValueError(f"scheduler {spec!r} has no plan_interval_s")
    return scheduler
