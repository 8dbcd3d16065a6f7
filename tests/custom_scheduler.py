"""A user's scheduler, loaded by `module:Class` in tests: every batch to the pool's first
ready instance, a fixed pool of two. Written only against the public `scheduler` API."""

from __future__ import annotations

from scheduler import Placement, PoolPlan, View


class TwoInstancesFirstReady:
    name = "two-first-ready"
    plan_interval_s = 2.0

    def place(self, batch, view: View, now: float) -> Placement:
        ready = [i for i in view.instances if i.ready]
        if not ready:
            return Placement.reject("no instance is ready")
        return Placement("instance", ready[0].id)

    def plan(self, view: View, now: float) -> PoolPlan:
        live = [i for i in view.instances if i.state in ("starting", "ready")]
        return PoolPlan(2, start=max(0, 2 - len(live)))

    def observe(self, arrivals: int, now: float) -> None:
        pass
