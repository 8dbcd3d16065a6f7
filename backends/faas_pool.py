"""A serverless function as a pool: one instance that takes `concurrency` batches at once.

The function scales itself, so there is nothing to start or stop; the pool only
bounds how many batches are in flight (the function's concurrency limit, or the
share of it this gateway may use) and stops dispatching while the function is
unreachable, probing until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .lambda_backend import LambdaBackend
from .pool import Instance, wait_until_ready

log = logging.getLogger("sluice.faas")


class FaasPool:
    def __init__(self, backend: LambdaBackend, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.backend, self.concurrency = backend, concurrency
        self.instances: list[Instance] = []
        self._listeners: list[Callable[[], None]] = []
        self._probe: asyncio.Task | None = None

    def on_capacity(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def set_share(self, share: int) -> None:
        """This gateway's part of the function's concurrency, of several replicas sharing it;
        more room wakes the dispatcher."""
        if not self.instances:
            return
        instance = self.instances[0]
        grew = share > instance.max_inflight
        instance.max_inflight = share
        if grew:
            for callback in self._listeners:
                callback()

    async def start(self) -> None:
        instance = Instance(self.backend, max_inflight=self.concurrency)
        self.instances = [instance]
        instance.healthy = await self.backend.ready()
        if not instance.healthy:
            self.report_failure(instance)

    def report_failure(self, instance: Instance) -> None:
        instance.healthy = False
        if self._probe is None:
            self._probe = asyncio.create_task(self._recover(instance))

    async def _recover(self, instance: Instance) -> None:
        await wait_until_ready(self.backend, first_delay_s=0.1)
        instance.healthy = True
        self._probe = None
        log.info("function is reachable", extra={"backend": instance.name})
        for callback in self._listeners:
            callback()

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.backend.close()
