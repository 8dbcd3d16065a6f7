"""A scheduler's plan carried out live: the server pool grown and shrunk, and billed.

The dispatch core places each batch (`scheduler.Dispatcher`, with the scheduler's
`place`) and keeps the pool's state and bill (`scheduler.Fleet`); `PlanLoop` asks the
core for a plan every `plan_interval_s` (the same `View`, built by the same code, that
`sluice sim` gives the scheduler). On a pool it can grow (local workers: real
processes, with their real start-up time) it starts and stops servers, as the core's
`Fleet.apply` bounds them; on any other (upstream URLs, registered servers) the plan is
advice, published as `sluice_pool_desired_instances` for whoever runs those servers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from backends import BackendError, ModelMetadata
from backends.mixed_pool import MixedPool
from backends.pool import Instance, scalable
from backends.profiling import measure_batch_times, service_curve
from batching.tuner import MAX_BATCH
from scheduler import Dispatcher, PoolPlan

from .loop import BackgroundLoop
from .metrics import ModelMetrics

log = logging.getLogger("sluice.scheduler")

_BILLING_TICK_S = 1.0


class PlanLoop(BackgroundLoop):
    """Every `plan_interval_s`: the scheduler's plan, carried out on the server pool (or
    published, where the pool is not ours to size). Every second: the servers' bill."""

    def __init__(self, model: str, core: Dispatcher, pool: MixedPool, metadata: ModelMetadata,
                 metrics: ModelMetrics | None = None, *, servers_measured: bool = True) -> None:  # fmt: skip
        self.model, self.core, self.pool, self.metadata, self.metrics = model, core, pool, metadata, metrics
        self.servers_measured = servers_measured  # False while the servers' curve is the function's, standing in
        self.desired: int | None = None
        self.leader = True  # of several replicas, only the leader plans a shared pool (gateway.replicas)
        self._billed = 0.0
        self._tasks: set[asyncio.Task] = set()
        core.fleet.sync(time.monotonic())  # the servers there before any plan bill from now

    @property
    def fleet(self):
        return self.core.fleet

    async def _run(self) -> None:
        next_plan = time.monotonic()
        try:
            while True:
                await asyncio.sleep(_BILLING_TICK_S)
                now = time.monotonic()
                self._bill(now)
                if not self.servers_measured:
                    await self._measure_servers()
                if now >= next_plan + self.core.scheduler.plan_interval_s:  # type: ignore[union-attr]
                    next_plan = now
                    self._plan(now)
        finally:
            for task in self._tasks:
                task.cancel()

    def _bill(self, now: float) -> None:
        """What the servers billed since the last tick (the ledger bills from each start request)."""
        self.fleet.sync(now)
        total = self.fleet.ledger.instance_seconds(now)
        seconds, self._billed = total - self._billed, total
        if self.metrics is not None:
            self.metrics.pool_size(len(self.pool.servers.instances))
            if seconds > 0:
                self.metrics.pool_billed(seconds, seconds * self.fleet.prices.instance_per_s)

    async def _measure_servers(self) -> None:
        first = next((i for i in self.pool.servers.instances if i.healthy), None)
        if first is None:
            return
        try:
            curve = service_curve(await measure_batch_times(first.backend, self.metadata), MAX_BATCH)
        except BackendError as exc:
            log.warning("measuring a server failed; will try again", extra={"model": self.model, "error": str(exc)})
            return
        self.core.pool_service = lambda b, c=curve: float(c[min(b, len(c)) - 1])
        self.servers_measured = True
        log.info("servers measured", extra={"model": self.model, "ms_b1": round(float(curve[0]) * 1e3, 3)})

    @property
    def shared(self) -> bool:
        """Servers every replica uses (upstream or registered), as opposed to local workers,
        which serve only the replica that started them and are planned by it."""
        return not scalable(self.pool.servers)

    def follow(self, desired: int) -> None:
        """Another replica leads: its plan is this one's."""
        self.desired = desired
        if self.metrics is not None:
            self.metrics.pool_desired(desired)

    def _plan(self, now: float) -> None:
        if self.shared and not self.leader:
            return
        try:
            plan: PoolPlan = self.core.plan(now)
        except Exception:  # a failed plan keeps the pool as it is
            log.exception("planning failed", extra={"model": self.model})
            return
        self.desired = plan.target
        if self.metrics is not None:
            self.metrics.pool_desired(plan.target)
            self.metrics.planned()
        if not scalable(self.pool.servers):
            return
        start, stop = self.fleet.apply(plan, now)
        if start or stop:
            log.info("plan", extra={"model": self.model, "target": plan.target, "start": start,
                                    "stop": [i.name for i in stop]})  # fmt: skip
        for _ in range(start):
            self._background(self._start_one(self.fleet.start_requested(now)))
        for instance in stop:
            self._background(self._stop_one(instance))  # type: ignore[arg-type]

    def _background(self, job) -> None:
        """Starts and stops take seconds; the bill and the next plan do not wait for them."""
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_one(self, token: int) -> None:
        instance = None
        try:
            instance = await self.pool.servers.add_instance()  # type: ignore[attr-defined]
        except Exception:
            log.exception("starting a server failed", extra={"model": self.model})
        finally:
            self.fleet.start_ended(token, instance, time.monotonic())
        if instance is not None:
            log.info("pool grew", extra={"model": self.model, "servers": len(self.pool.servers.instances),
                                         "startup_s": round(self.fleet.startup_s, 3)})  # fmt: skip

    async def _stop_one(self, instance: Instance) -> None:
        try:
            await self.pool.servers.remove_instance(instance)  # type: ignore[attr-defined]
        finally:
            self.fleet.stop_ended(instance, time.monotonic())
        log.info("pool shrank", extra={"model": self.model, "servers": len(self.pool.servers.instances)})
