"""A scheduler at work live: it places each batch on a server or the function, and sizes the
server pool (`scheduler.Scheduler`, the same objects `sluice sim --scheduler` runs).

`LivePlacer` builds the scheduler's `View` from the pool's state: servers with their
batches in flight (busy until those are done, by the measured s(b)), the function's
invocations in flight and whether an environment is likely warm, the arrival rate,
prices and service curves. The runner asks `choose(batch, now)` for each batch it
could dispatch; `PlanLoop` asks `plan` every `plan_interval_s`. On a pool it can grow
(local workers: real processes, with their real start-up time) it starts and stops
servers; on any other (upstream URLs, registered servers) the plan is advice,
published as `sluice_pool_desired_instances` for whoever runs those servers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np

from backends import BackendError, ModelMetadata
from backends.mixed_pool import MixedPool
from backends.pool import Instance, scalable
from backends.profiling import measure_batch_times, service_curve
from batching import Batch
from batching.tuner import MAX_BATCH
from scheduler import ArrivalView, FaasView, InstanceView, Placement, PoolPlan, Prices, Scheduler, View

from .loop import BackgroundLoop
from .metrics import ModelMetrics

log = logging.getLogger("sluice.scheduler")

_RATE_WINDOW_S = 30.0
_BILLING_TICK_S = 1.0


class LivePlacer:
    def __init__(
        self, scheduler: Scheduler, pool: MixedPool, *, pool_service: np.ndarray, faas_service: np.ndarray,
        prices: Prices, slo_s: float, batch_size: object, max_workers: int, keep_alive_s: float,
        metrics: ModelMetrics | None = None,
    ) -> None:  # fmt: skip
        self.scheduler, self.pool, self.prices, self.slo_s = scheduler, pool, prices, slo_s
        self._pool_service, self._faas_service = pool_service, faas_service
        self.pool_measured = True  # False while the servers' curve is the function's, standing in
        self.batch_size = batch_size  # callable: the policy's B now
        self.max_workers, self.keep_alive_s = max_workers, keep_alive_s
        self.metrics = metrics
        self.startup_s = 1.0
        self.starting = 0  # servers asked for and not up yet
        self.stopping: set[str] = set()  # servers draining before they stop
        self.arrivals: deque[float] = deque()
        self.started_at: dict[int, float] = {}  # id(instance) -> when billing began
        self.last_faas_done = -1e18
        self.cluster_rate: float | None = None  # all replicas' arrivals, for a shared pool (gateway.cluster)
        self.placed = {"instance": 0, "faas": 0}

    def pool_service(self, b: int) -> float:
        return float(self._pool_service[min(b, len(self._pool_service)) - 1])

    def faas_service(self, b: int) -> float:
        return float(self._faas_service[min(b, len(self._faas_service)) - 1])

    def measured_servers(self, curve: np.ndarray) -> None:
        self._pool_service, self.pool_measured = curve, True

    def observe(self, now: float) -> None:
        self.arrivals.append(now)
        self.scheduler.observe(1, now)

    def view(self, now: float) -> View:
        while self.arrivals and self.arrivals[0] < now - _RATE_WINDOW_S:
            self.arrivals.popleft()
        rate = len(self.arrivals) / _RATE_WINDOW_S if self.cluster_rate is None else self.cluster_rate
        servers = []
        batch_size = max(1, int(self.batch_size()))
        per_batch = self.pool_service(batch_size)  # what each batch given to a server holds it for
        for instance in self.pool.servers.instances:
            up = instance.healthy and instance.breaker.allows(now, instance.inflight)
            state = "stopping" if instance.name in self.stopping else "ready" if up else "starting"
            busy = now + instance.inflight * per_batch
            billed = self.started_at.setdefault(id(instance), now)
            servers.append(InstanceView(instance.name, state, busy, instance.inflight, now, billed))
        for n in range(self.starting):
            servers.append(InstanceView(f"starting-{n}", "starting", now, 0, now + self.startup_s, now))
        faas_instance = self.pool.faas.instances[0] if self.pool.faas.instances else None
        faas = None
        if faas_instance is not None and faas_instance.healthy:
            warm = 1 if now - self.last_faas_done < self.keep_alive_s else 0
            faas = FaasView(faas_instance.inflight, faas_instance.max_inflight, warm, 0.0, 1.0)
        return View(
            servers, faas, ArrivalView(rate, lambda _h: rate), self.prices, self.pool_service, self.faas_service,
            batch_size, self.slo_s, self.startup_s, self.max_workers,
        )  # fmt: skip

    def choose(self, batch: Batch, now: float) -> Instance | None:
        """The instance to dispatch `batch` to now; None to keep it waiting (its place is busy)."""
        placement: Placement = self.scheduler.place(batch, self.view(now), now)
        if placement.kind == "faas":
            instance = self.pool.faas.instances[0]
        elif placement.kind == "instance":
            instance = next((i for i in self.pool.servers.instances if i.name == placement.instance), None)
        else:
            return None
        if instance is None or not instance.accepts(now):
            return None
        self.placed[placement.kind] += 1
        if self.metrics is not None:
            self.metrics.placed("faas" if placement.kind == "faas" else "pool")
        return instance

    def finished(self, instance: Instance, now: float) -> None:
        """A batch came back from `instance`: a function environment is warm for a while."""
        if instance in self.pool.faas.instances:
            self.last_faas_done = now


class PlanLoop(BackgroundLoop):
    """Every `plan_interval_s`: the scheduler's plan, carried out on the server pool (or
    published, where the pool is not ours to size). Every second: the servers' bill."""

    def __init__(self, model: str, placer: LivePlacer, metadata: ModelMetadata) -> None:
        self.model, self.placer, self.metadata = model, placer, metadata
        self.started = self.stopped = 0
        self.desired: int | None = None
        self.leader = True  # of several replicas, only the leader plans a shared pool (gateway.cluster)
        self.instance_seconds = 0.0
        self._tasks: set[asyncio.Task] = set()

    async def _run(self) -> None:
        placer = self.placer
        last = next_plan = time.monotonic()
        try:
            while True:
                await asyncio.sleep(_BILLING_TICK_S)
                now = time.monotonic()
                self._bill(now - last)
                last = now
                if not placer.pool_measured:
                    await self._measure_servers()
                if now >= next_plan + placer.scheduler.plan_interval_s:
                    next_plan = now
                    await self._plan(now)
        finally:
            for task in self._tasks:
                task.cancel()

    def _bill(self, seconds: float) -> None:
        """Servers bill while they live, from their start request on (`started_at`)."""
        count = len(self.placer.pool.servers.instances)
        self._charge(count * seconds)
        if self.placer.metrics is not None:
            self.placer.metrics.pool_size(count)

    def _charge(self, seconds: float) -> None:
        self.instance_seconds += seconds
        if self.placer.metrics is not None and seconds > 0:
            self.placer.metrics.pool_billed(seconds, seconds * self.placer.prices.instance_per_s)

    async def _measure_servers(self) -> None:
        first = next((i for i in self.placer.pool.servers.instances if i.healthy), None)
        if first is None:
            return
        try:
            curve = service_curve(await measure_batch_times(first.backend, self.metadata), MAX_BATCH)
        except BackendError as exc:
            log.warning("measuring a server failed; will try again", extra={"model": self.model, "error": str(exc)})
            return
        self.placer.measured_servers(curve)
        log.info("servers measured", extra={"model": self.model, "ms_b1": round(float(curve[0]) * 1e3, 3)})

    @property
    def shared(self) -> bool:
        """Servers every replica uses (upstream or registered), as opposed to local workers,
        which serve only the replica that started them and are planned by it."""
        return not scalable(self.placer.pool.servers)

    def follow(self, desired: int) -> None:
        """Another replica leads: its plan is this one's."""
        self.desired = desired
        if self.placer.metrics is not None:
            self.placer.metrics.pool_desired(desired)

    async def _plan(self, now: float) -> None:
        placer, servers = self.placer, self.placer.pool.servers
        if self.shared and not self.leader:
            return
        try:
            plan: PoolPlan = placer.scheduler.plan(placer.view(now), now)
        except Exception:  # a failed plan keeps the pool as it is
            log.exception("planning failed", extra={"model": self.model})
            return
        self.desired = plan.target
        if placer.metrics is not None:
            placer.metrics.pool_desired(plan.target)
            placer.metrics.planned()
        if not scalable(servers):
            return
        room = placer.max_workers - len(servers.instances) - placer.starting
        for _ in range(max(0, min(plan.start, room))):
            placer.starting += 1
            self._background(self._start_one())
        for name in plan.stop:
            instance = next((i for i in servers.instances if i.name == name), None)
            if instance is not None and name not in placer.stopping:
                placer.stopping.add(name)
                self._background(self._stop_one(instance))

    def _background(self, job) -> None:
        """Starts and stops take seconds; the bill and the next plan do not wait for them."""
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        placer = self.placer
        began = time.monotonic()
        try:
            instance = await placer.pool.servers.add_instance()
        except Exception:
            log.exception("starting a server failed", extra={"model": self.model})
            return
        finally:
            placer.starting -= 1
        placer.started_at[id(instance)] = began
        placer.startup_s = time.monotonic() - began
        self._charge(placer.startup_s)  # billed while it booted, before it was in the pool
        self.started += 1
        log.info("pool grew", extra={"model": self.model, "servers": len(placer.pool.servers.instances),
                                     "startup_s": round(placer.startup_s, 3)})  # fmt: skip

    async def _stop_one(self, instance: Instance) -> None:
        placer = self.placer
        try:
            await placer.pool.servers.remove_instance(instance)
        finally:
            placer.stopping.discard(instance.name)
        lived = time.monotonic() - placer.started_at.pop(id(instance), time.monotonic())
        self._charge(max(0.0, placer.prices.instance_min_billed_s - lived))  # the minimum bill
        self.stopped += 1
        log.info("pool shrank", extra={"model": self.model, "servers": len(placer.pool.servers.instances)})
