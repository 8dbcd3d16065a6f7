"""simulate_scheduled(): a `Scheduler` placing batches on a simulated pool and FaaS, at virtual time.

The batching policy closes batches through the gateway's own `BatchQueue`; each
closed batch goes where `scheduler.place` says: an instance (its queue is FIFO, one
batch at a time), FaaS (overhead, a cold start when no environment is warm, the
service time), or nowhere (its requests fail). Every `plan_interval_s`
`scheduler.plan` sizes the pool: new instances bill from their start and take
batches `startup_s` later; a stopped instance finishes its queue first and bills
at least the provider's minimum. At the first arrival the scheduler's plan is
provisioned at once (yesterday's traffic is known; nobody starts the day cold).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from batching import BatchPolicy, BatchQueue, Request
from scheduler import ArrivalView, FaasView, InstanceView, Prices, Scheduler, View

from .engine import Engine
from .profiles import ServiceProfile
from .results import SimResult
from .simulate import _REASON_CODE, ARRIVAL, DONE, QueueTimer, WarmEnvironments, resolved_memory

PLAN, READY = 3, 4
RATE_WINDOW_S = 60.0


@dataclass
class _Instance:
    id: str
    state: str  # starting | ready | stopping | stopped
    ready_at: float
    billed_since: float
    queue: deque[int] = field(default_factory=deque)
    running: int | None = None
    running_done: float = 0.0
    queued_s: float = 0.0  # service time of the queued batches (not the running one)
    stopped_at: float | None = None


class ScheduledRun(QueueTimer):
    def __init__(
        self, times: np.ndarray, policy: BatchPolicy, profile: ServiceProfile, scheduler: Scheduler, *,
        memory_mb: int | None, slo_s: float, keep_alive_s: float, concurrency_limit: int | None, max_instances: int,
    ) -> None:  # fmt: skip
        if profile.iaas is None and profile.faas is None:
            raise ValueError(f"profile {profile.name!r} has neither a pool ('iaas') nor FaaS")
        self.times = times.tolist()
        self.policy, self.profile, self.scheduler = policy, profile, scheduler
        self.slo_s, self.max_instances, self.concurrency_limit = slo_s, max_instances, concurrency_limit
        self.engine = Engine(start=self.times[0] if self.times else 0.0)
        self.queue = BatchQueue(policy)
        self.memory = resolved_memory(profile, memory_mb) if profile.faas else None
        faas = profile.faas
        self.prices = Prices(
            instance_per_hour=profile.iaas.price_per_hour if profile.iaas else 0.0,
            faas_per_gb_s=faas.price_per_gb_s if faas else 0.0, faas_per_request=faas.price_per_request if faas else 0.0,
            faas_memory_mb=self.memory or 1024,
        )  # fmt: skip
        self.environments = WarmEnvironments(keep_alive_s) if faas else None
        self.faas_in_flight = 0
        self.instances: dict[str, _Instance] = {}
        self._started = 0
        self.timer = None
        self.recent: deque[float] = deque()  # arrival times within the rate window
        self.batches: list = []
        self.start: list[float] = []
        self.done: list[float] = []
        self.where: list[str] = []
        self.cold: list[bool] = []
        self.service: list[float] = []
        self.faas_cost = 0.0

    # -- what the scheduler sees ---------------------------------------------------

    def pool_service(self, b: int) -> float:
        return float(self.profile.iaas_service_s(b))  # type: ignore[union-attr]

    def faas_service(self, b: int) -> float:
        return float(self.profile.faas_service_s(b, self.memory))

    def busy_until(self, instance: _Instance, now: float) -> float:
        until = max(now, instance.running_done if instance.running is not None else now, instance.ready_at)
        return until + instance.queued_s

    def view(self, now: float) -> View:
        while self.recent and self.recent[0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        span = min(RATE_WINDOW_S, max(now - self.times[0], 1.0))
        instances = [
            InstanceView(i.id, i.state, self.busy_until(i, now), len(i.queue) + (i.running is not None), i.ready_at,
                         i.billed_since)
            for i in self.instances.values() if i.state != "stopped"
        ]  # fmt: skip
        faas = None
        if self.environments is not None:
            f = self.profile.faas
            faas = FaasView(self.faas_in_flight, self.concurrency_limit, self.environments.idle_count(now),
                            f.invoke_overhead_ms / 1e3, f.cold_start_ms / 1e3)  # type: ignore[union-attr]  # fmt: skip
        rate = len(self.recent) / span
        return View(
            instances, faas, ArrivalView(rate, lambda _h: rate), self.prices,
            self.pool_service if self.profile.iaas else None, self.faas_service if self.profile.faas else None,
            self.policy.limits(now).max_size, self.slo_s, self.profile.iaas.startup_s if self.profile.iaas else 0.0,
            self.max_instances,
        )  # fmt: skip

    # -- the run -------------------------------------------------------------------

    def run(self) -> None:
        if not self.times:
            return
        first = self.times[0]
        # Provision for the first minute's traffic, ready at once.
        self.recent.extend(t for t in self.times if t < first + RATE_WINDOW_S)
        view = self.view(first + RATE_WINDOW_S)
        self.recent.clear()
        self.apply(self.scheduler.plan(view, first), first, ready_now=True)
        self.engine.schedule(first, self.arrive, 0, priority=ARRIVAL)
        self.engine.schedule(first + self.scheduler.plan_interval_s, self.plan, priority=PLAN)
        self.engine.run()
        if len(self.queue):
            raise RuntimeError("requests left in the queue after the last event")

    def arrive(self, i: int) -> None:
        now = self.engine.now
        if i + 1 < len(self.times):
            self.engine.schedule(self.times[i + 1], self.arrive, i + 1, priority=ARRIVAL)
        self.recent.append(now)
        self.scheduler.observe(1, now)
        self.batches_closed(self.queue.push(Request(id=str(i), arrival=now, payload=i), now))
        if i + 1 == len(self.times) and self.queue.next_wakeup() == math.inf:
            self.batches_closed(self.queue.drain(now))
        self.rearm()

    def plan(self) -> None:
        now = self.engine.now
        self.apply(self.scheduler.plan(self.view(now), now), now)
        if now < self.times[-1]:
            self.engine.schedule(now + self.scheduler.plan_interval_s, self.plan, priority=PLAN)

    def apply(self, plan, now: float, ready_now: bool = False) -> None:
        live = [i for i in self.instances.values() if i.state in ("starting", "ready")]
        room = self.max_instances - len(live)
        for _ in range(max(0, min(plan.start, room)) if self.profile.iaas else 0):
            ready_at = now if ready_now else now + self.profile.iaas.startup_s  # type: ignore[union-attr]
            instance = _Instance(f"i{self._started}", "ready" if ready_now else "starting", ready_at, now)
            self._started += 1
            self.instances[instance.id] = instance
            if not ready_now:
                self.engine.schedule(ready_at, self.ready, instance, priority=READY)
        for name in plan.stop:
            instance = self.instances.get(name)
            if instance is not None and instance.state in ("starting", "ready"):
                instance.state = "stopping"
                self.maybe_stopped(instance, now)

    def ready(self, instance: _Instance) -> None:
        if instance.state == "starting":
            instance.state = "ready"
            self.next_on(instance)

    def maybe_stopped(self, instance: _Instance, now: float) -> None:
        if instance.state == "stopping" and instance.running is None and not instance.queue:
            instance.state, instance.stopped_at = "stopped", now

    def batches_closed(self, batches: list) -> None:
        now = self.engine.now
        for batch in batches:
            k = len(self.batches)
            self.batches.append(batch)
            self.start.append(math.nan)
            self.done.append(math.inf)
            self.cold.append(False)
            self.service.append(0.0)
            placement = self.scheduler.place(batch, self.view(now), now)
            self.where.append(placement.kind)
            if placement.kind == "instance" and placement.instance in self.instances:
                instance = self.instances[placement.instance]
                instance.queue.append(k)
                instance.queued_s += self.pool_service(len(batch.requests))
                self.next_on(instance)
            elif placement.kind == "faas" and self.environments is not None:
                self.invoke(k, now)
            else:
                self.where[k] = "reject"

    def next_on(self, instance: _Instance) -> None:
        now = self.engine.now
        if instance.running is not None or not instance.queue or instance.state not in ("ready", "stopping"):
            return
        if now < instance.ready_at:
            return
        k = instance.queue.popleft()
        service = self.pool_service(len(self.batches[k].requests))
        instance.queued_s = max(0.0, instance.queued_s - service)
        instance.running, instance.running_done = k, now + service
        self.start[k], self.service[k], self.done[k] = now, service, now + service
        self.engine.schedule(now + service, self.finished_on, instance, priority=DONE)

    def finished_on(self, instance: _Instance) -> None:
        instance.running = None
        self.next_on(instance)
        self.maybe_stopped(instance, self.engine.now)

    def invoke(self, k: int, now: float) -> None:
        faas = self.profile.faas
        assert faas is not None and self.environments is not None
        service = self.faas_service(len(self.batches[k].requests))
        cold = self.environments.acquire(now)
        done = now + faas.invoke_overhead_ms / 1e3 + (faas.cold_start_ms / 1e3 if cold else 0.0) + service
        self.environments.release_at(done)
        self.faas_in_flight += 1
        self.start[k], self.service[k], self.done[k], self.cold[k] = now, service, done, cold
        self.faas_cost += float(self.profile.faas_batch_cost(service, self.memory))
        self.engine.schedule(done, self.faas_done, priority=DONE)

    def faas_done(self) -> None:
        self.faas_in_flight -= 1

    def instance_seconds(self, end: float) -> float:
        minimum = self.prices.instance_min_billed_s
        return sum(max(minimum, (i.stopped_at if i.stopped_at is not None else end) - i.billed_since)
                   for i in self.instances.values())  # fmt: skip


def simulate_scheduled(
    arrivals: np.ndarray, policy: BatchPolicy, profile: ServiceProfile, scheduler: Scheduler, *,
    slo_s: float, memory_mb: int | None = None, keep_alive_s: float = 600.0, concurrency_limit: int | None = None,
    max_instances: int = 64,
) -> SimResult:  # fmt: skip
    """Run `policy` batching and `scheduler` placing on the profile's pool and FaaS."""
    began = time.perf_counter()
    times = np.asarray(arrivals, dtype=float)
    if times.ndim != 1 or (len(times) > 1 and (np.diff(times) < 0).any()):
        raise ValueError("arrivals must be a sorted one-dimensional array")
    run = ScheduledRun(times, policy, profile, scheduler, memory_mb=memory_mb, slo_s=slo_s, keep_alive_s=keep_alive_s,
                       concurrency_limit=concurrency_limit, max_instances=max_instances)  # fmt: skip
    run.run()
    size = np.array([len(b.requests) for b in run.batches], dtype=np.int64)
    done = np.array(run.done, dtype=float)
    batch = np.repeat(np.arange(len(size)), size)
    latency = done[batch] - times if len(times) else np.zeros(0)
    end = float(np.max(done[np.isfinite(done)])) if np.isfinite(done).any() else (float(times[-1]) if len(times) else 0.0)
    instance_s = run.instance_seconds(end)
    cost = run.faas_cost + instance_s * run.prices.instance_per_s
    where = np.array(run.where)
    return SimResult(
        arrival=times, latency_s=latency, batch=batch, close_time=np.array([b.closed_at for b in run.batches]),
        start_time=np.array(run.start, dtype=float), size=size,
        reason=np.array([_REASON_CODE[b.reason] for b in run.batches], dtype=np.int8),
        cold=np.array(run.cold, dtype=bool), service_s=np.array(run.service, dtype=float), cost_usd=cost,
        wall_s=time.perf_counter() - began, target="hybrid", memory_mb=run.memory, path="event", slo_s=slo_s,
        instance_hours=instance_s / 3600.0, faas_batches=int(np.count_nonzero(where == "faas")),
        rejected_batches=int(np.count_nonzero(where == "reject")), instances_started=run._started,
    )  # fmt: skip
