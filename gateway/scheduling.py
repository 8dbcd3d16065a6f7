"""A scheduler at work live: it places each batch on a worker or the function, and sizes the
worker pool (`scheduler.Scheduler`, the same objects `sluice sim --scheduler` runs).

`LivePlacer` builds the scheduler's `View` from the pool's state: workers with their
batches in flight (busy until those are done, by the measured s(b)), the function's
invocations in flight and whether an environment is likely warm, the arrival rate,
prices and service curves. The runner asks `choose(batch, now)` for each batch it
could dispatch; `PlanLoop` asks `plan` every `plan_interval_s` and starts or stops
workers (real processes, with their real start-up time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np

from backends.mixed_pool import MixedPool
from backends.pool import Instance
from batching import Batch
from scheduler import ArrivalView, FaasView, InstanceView, Placement, Prices, Scheduler, View

from .loop import BackgroundLoop

log = logging.getLogger("sluice.scheduler")

_RATE_WINDOW_S = 30.0


class LivePlacer:
    def __init__(
        self, scheduler: Scheduler, pool: MixedPool, *, pool_service: np.ndarray, faas_service: np.ndarray,
        prices: Prices, slo_s: float, batch_size: object, max_workers: int, keep_alive_s: float,
    ) -> None:  # fmt: skip
        self.scheduler, self.pool, self.prices, self.slo_s = scheduler, pool, prices, slo_s
        self._pool_service, self._faas_service = pool_service, faas_service
        self.batch_size = batch_size  # callable: the policy's B now
        self.max_workers, self.keep_alive_s = max_workers, keep_alive_s
        self.startup_s = 1.0
        self.arrivals: deque[float] = deque()
        self.started_at: dict[int, float] = {}  # id(instance) -> when it was started (billing)
        self.last_faas_done = -1e18
        self.placed = {"instance": 0, "faas": 0, "reject": 0}

    def pool_service(self, b: int) -> float:
        return float(self._pool_service[min(b, len(self._pool_service)) - 1])

    def faas_service(self, b: int) -> float:
        return float(self._faas_service[min(b, len(self._faas_service)) - 1])

    def observe(self, now: float) -> None:
        self.arrivals.append(now)
        self.scheduler.observe(1, now)

    def view(self, now: float) -> View:
        while self.arrivals and self.arrivals[0] < now - _RATE_WINDOW_S:
            self.arrivals.popleft()
        rate = len(self.arrivals) / _RATE_WINDOW_S
        workers = []
        for instance in self.pool.workers.instances:
            state = "ready" if instance.healthy else "starting"
            busy = now + instance.inflight * self.pool_service(max(1, int(self.batch_size())))
            billed = self.started_at.setdefault(id(instance), now)
            workers.append(InstanceView(instance.name, state, busy, instance.inflight, now, billed))
        faas_instance = self.pool.faas.instances[0] if self.pool.faas.instances else None
        faas = None
        if faas_instance is not None and faas_instance.healthy:
            warm = 1 if now - self.last_faas_done < self.keep_alive_s else 0
            faas = FaasView(faas_instance.inflight, faas_instance.max_inflight, warm, 0.0, 1.0)
        return View(
            workers, faas, ArrivalView(rate, lambda _h: rate), self.prices, self.pool_service, self.faas_service,
            int(self.batch_size()), self.slo_s, self.startup_s, self.max_workers,
        )  # fmt: skip

    def choose(self, batch: Batch, now: float) -> Instance | None:
        """The instance to dispatch `batch` to now; None to keep it waiting (its place is busy)."""
        placement: Placement = self.scheduler.place(batch, self.view(now), now)
        if placement.kind == "faas":
            instance = self.pool.faas.instances[0]
        elif placement.kind == "instance":
            instance = next((i for i in self.pool.workers.instances if i.name == placement.instance), None)
        else:
            return None
        if instance is None or not instance.free:
            return None
        self.placed[placement.kind] += 1
        return instance

    def finished(self, instance: Instance, now: float) -> None:
        """A batch came back from `instance`: a function environment is warm for a while."""
        if instance in self.pool.faas.instances:
            self.last_faas_done = now


class PlanLoop(BackgroundLoop):
    """Every `plan_interval_s`: the scheduler's plan, carried out on the worker pool."""

    def __init__(self, model: str, placer: LivePlacer) -> None:
        self.model, self.placer = model, placer
        self.started = self.stopped = 0

    async def _run(self) -> None:
        placer, workers = self.placer, self.placer.pool.workers
        while True:
            await asyncio.sleep(placer.scheduler.plan_interval_s)
            now = time.monotonic()
            try:
                plan = placer.scheduler.plan(placer.view(now), now)
                for _ in range(max(0, min(plan.start, placer.max_workers - len(workers.instances)))):
                    began = time.monotonic()
                    instance = await workers.add_worker()
                    placer.started_at[id(instance)] = began
                    placer.startup_s = time.monotonic() - began
                    self.started += 1
                    log.info("pool grew", extra={"model": self.model, "workers": len(workers.instances)})
                for name in plan.stop:
                    instance = next((i for i in workers.instances if i.name == name), None)
                    if instance is not None:
                        await workers.remove_worker(instance)
                        self.stopped += 1
                        log.info("pool shrank", extra={"model": self.model, "workers": len(workers.instances)})
            except Exception:  # a failed plan keeps the pool as it is
                log.exception("planning failed", extra={"model": self.model})
