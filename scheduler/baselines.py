"""The schedulers Sluice is measured against, and small examples of the interface.

- `FaasOnly`: every batch to the function (BATCH's setting).
- `PoolOnly`: a pool only; a fixed size, or a concurrency-target autoscaler as in
  Ray Serve and Knative (target batches in flight per instance, with up and down delays).
- `Mark`: MArk (Zhang et al., ATC'19): every 60 s, instances for 1.2x the forecast
  peak; FaaS only for batches the instances cannot take in time.
"""

from __future__ import annotations

import importlib
import math

from batching import Batch

from .forecast import Holt
from .hybrid import HybridScheduler, options
from .types import Placement, PoolPlan, Scheduler, View, batch_deadline


class FaasOnly:
    name = "faas-only"
    plan_interval_s = 60.0

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        faas = [o for o in options(batch, view, now) if o.kind == "faas"]
        return faas[0] if faas else Placement.reject("FaaS is at its concurrency limit")

    def plan(self, view: View, now: float) -> PoolPlan:
        return PoolPlan(0, stop=tuple(i.id for i in view.instances if i.state in ("starting", "ready")))

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
        pool = [o for o in options(batch, view, now) if o.kind == "instance"]
        if not pool:
            return Placement.reject("no instance is ready")
        return min(pool, key=lambda o: o.predicted_done)

    def plan(self, view: View, now: float) -> PoolPlan:
        live = [i for i in view.instances if i.state in ("starting", "ready")]
        if self.target_inflight is None:
            wanted = self.instances
        else:
            inflight = sum(i.queued for i in live)
            wanted = max(self.instances, math.ceil(inflight / self.target_inflight))
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
        found = options(batch, view, now)
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

    def plan(self, view: View, now: float) -> PoolPlan:
        live = [i for i in view.instances if i.state in ("starting", "ready")]
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


BUILT_IN = {"hybrid": HybridScheduler, "faas-only": FaasOnly, "pool-only": PoolOnly, "mark": Mark}


def load_scheduler(spec: str) -> Scheduler:
    """A built-in scheduler by name, or `module:Class` (constructed with no arguments)."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]()
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"scheduler {spec!r}: use one of {', '.join(BUILT_IN)} or module:Class")
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
