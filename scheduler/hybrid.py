"""The cost-aware hybrid scheduler: a pool planned ahead of load, FaaS for what it cannot take.

Placement, per batch: predict when each option would answer it (an instance: after
the work already queued on it, plus s(b); FaaS: the invocation overhead plus s(b),
plus a cold start when no environment is warm) and what it would cost more (an
instance is paid for anyway: nothing; FaaS: its bill). Take the cheapest that meets
the batch's earliest deadline; when none does, FaaS (a late batch there delays only
itself), else the fastest.

Planning, every `plan_interval_s`: forecast the rate an instance started now would
meet (`startup_s` ahead), and choose the instance count n that minimises the
expected cost per second: n instances, plus the FaaS bill of the expected overflow
E[(rate - n x capacity)+], taken over the recent per-step rates moved to the
forecast level (so bursts weigh as they came). Capacity is what an instance serves
at batch size B and a utilisation that keeps its queue within a quarter of the SLO.
Scale-out is at once; scale-in waits until fewer instances have been enough for
`scale_in_after_s`, and only stops idle instances past their minimum billing.

MArk (Zhang et al., ATC'19) plans hourly with a fixed 1.2x headroom and fixed
batches; this plans every few seconds, from the same service model as the batching
policy, and weighs the bursts it has seen instead of a fixed margin.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from batching import Batch

from .forecast import Ewma, Holt
from .types import Placement, PoolPlan, View, batch_deadline


def _expected_overflow(rates: Sequence[float], shift: float, capacity: float) -> float:
    """E[(X - capacity)+] over the recent per-step rates, moved by `shift` (the forecast's
    change from their mean): bursts count as they came, not as a symmetric spread."""
    if not rates:
        return 0.0
    return sum(max(0.0, r + shift - capacity) for r in rates) / len(rates)


def options(batch: Batch, view: View, now: float) -> list[Placement]:
    """Every place this batch could go now, with its predicted completion and added cost."""
    b = batch.size
    found = []
    if view.pool_service is not None:
        for instance in view.instances:
            if instance.ready:
                done = max(now, instance.busy_until) + view.pool_service(b)
                found.append(Placement("instance", instance.id, done, 0.0))
    faas = view.faas
    if faas is not None and view.faas_service is not None and faas.has_room:
        service = view.faas_service(b)
        cold = faas.cold_start_s if faas.warm_idle <= 0 else 0.0
        found.append(Placement("faas", None, now + faas.overhead_s + cold + service, view.prices.faas_batch_cost(service)))
    return found


def cheapest_in_time(candidates: list[Placement], deadline: float) -> Placement | None:
    """The cheapest option that meets the deadline (then the earliest). When none does:
    FaaS if it can take it, since a late batch there delays only itself, while one
    queued on an instance delays every batch behind it; else the earliest."""
    if not candidates:
        return None
    meeting = [o for o in candidates if o.predicted_done <= deadline]
    if meeting:
        return min(meeting, key=lambda o: (o.cost, o.predicted_done))
    faas = [o for o in candidates if o.kind == "faas"]
    return faas[0] if faas else min(candidates, key=lambda o: (o.predicted_done, o.cost))


class HybridScheduler:
    name = "hybrid"

    def __init__(
        self,
        *,
        plan_interval_s: float = 10.0,
        step_s: float = 10.0,
        utilization: float = 0.95,
        utilization_cap: float | None = None,
        scale_in_after_s: float = 60.0,
        margin: float = 0.05,
        forecaster: Ewma | Holt | None = None,
        recent_steps: int = 30,
    ) -> None:
        self.plan_interval_s = plan_interval_s
        self.utilization, self.scale_in_after_s, self.margin = utilization, scale_in_after_s, margin
        self.utilization_cap = utilization_cap  # a fixed utilisation instead of the SLO-derived one
        # A slow level by default: an instance takes `startup_s` to help and bills a
        # minimum, so it is worth starting only for traffic that lasts; bursts shorter
        # than that are FaaS's (a trend-following forecaster would chase them).
        self.forecaster = forecaster or Ewma(step_s=step_s, alpha=0.1)
        self._step_end: float | None = None
        self._count = 0
        self._lower_since: float | None = None
        self.recent: deque[float] = deque(maxlen=recent_steps)  # the last steps' rates, requests/s

    # -- traffic -----------------------------------------------------------------

    def observe(self, arrivals: int, now: float) -> None:
        step = self.forecaster.step_s
        if self._step_end is None:
            self._step_end = now + step
        while now >= self._step_end:  # close every step that ended, empty ones too
            self.forecaster.update(self._count)
            self.recent.append(self._count / step)
            self._count = 0
            self._step_end += step
        self._count += arrivals

    def expected_rate(self, view: View) -> tuple[float, float]:
        """(rate, spread) expected when an instance started now would be ready."""
        if self.forecaster.level is None:
            return view.arrivals.rate, 0.0
        return self.forecaster.forecast(view.startup_s), self.forecaster.spread

    # -- decisions ---------------------------------------------------------------

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        # Predictions are not exact: aim a little inside the deadline.
        deadline = batch_deadline(batch, view.slo_s) - self.margin * view.slo_s
        choice = cheapest_in_time(options(batch, view, now), deadline)
        return choice or Placement.reject("no instance is ready and FaaS is at its concurrency limit")

    def wanted(self, view: View) -> int:
        """The instance count with the lowest expected cost per second."""
        if view.pool_service is None:
            return 0
        rate, spread = self.expected_rate(view)
        b = max(1, view.batch_size)
        service = view.pool_service(b)
        capacity = self.utilization_for(service, view.slo_s) * b / service  # requests/s one instance takes
        if view.faas is None or view.faas_service is None:
            return min(view.max_instances, math.ceil((rate + 2 * spread) / capacity)) if rate > 0 else 0
        per_request = view.prices.faas_batch_cost(view.faas_service(b)) / b
        rates = list(self.recent) or [rate]
        shift = rate - sum(rates) / len(rates)
        best, best_cost = 0, math.inf
        for n in range(view.max_instances + 1):
            cost = n * view.prices.instance_per_s + _expected_overflow(rates, shift, n * capacity) * per_request
            if cost < best_cost - 1e-15:
                best, best_cost = n, cost
            if n * capacity > max(rates) + shift:
                break  # more instances only add their price
        return best

    def utilization_for(self, service_s: float, slo_s: float) -> float:
        """How busy an instance may run: queueing (as M/D/1, wait = rho s / (2 (1 - rho)))
        within a quarter of the SLO, and at most `utilization`."""
        if self.utilization_cap is not None:
            return self.utilization_cap
        return max(0.3, min(self.utilization, slo_s / (slo_s + 2 * service_s)))

    def plan(self, view: View, now: float) -> PoolPlan:
        live = [i for i in view.instances if i.state in ("starting", "ready")]
        target = self.wanted(view)
        if target >= len(live):
            self._lower_since = None
            return PoolPlan(target, start=target - len(live))
        if self._lower_since is None:
            self._lower_since = now
        if now - self._lower_since < self.scale_in_after_s:
            return PoolPlan(len(live))
        stoppable = [
            i for i in live
            if i.ready and i.busy_until <= now and now - i.billed_since >= view.prices.instance_min_billed_s
        ]  # fmt: skip
        stoppable.sort(key=lambda i: i.billed_since)
        stop = tuple(i.id for i in stoppable[: len(live) - target])
        return PoolPlan(len(live) - len(stop), stop=stop)
