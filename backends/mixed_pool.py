"""A local worker pool and a serverless function, served as one pool: the hybrid's two places.

The runner sees every instance (workers first, then the function); a scheduler
decides which one each batch takes, and grows or shrinks the workers.
"""

from __future__ import annotations

from collections.abc import Callable

from .faas_pool import FaasPool
from .local_pool import LocalWorkerPool
from .pool import Instance


class MixedPool:
    def __init__(self, workers: LocalWorkerPool, faas: FaasPool) -> None:
        self.workers, self.faas = workers, faas

    @property
    def instances(self) -> list[Instance]:
        return [*self.workers.instances, *self.faas.instances]

    def on_capacity(self, callback: Callable[[], None]) -> None:
        self.workers.on_capacity(callback)
        self.faas.on_capacity(callback)

    async def start(self) -> None:
        await self.workers.start()
        try:
            await self.faas.start()
        except BaseException:
            await self.workers.stop()
            raise

    def report_failure(self, instance: Instance) -> None:
        (self.faas if instance in self.faas.instances else self.workers).report_failure(instance)

    async def stop(self) -> None:
        await self.workers.stop()
        await self.faas.stop()
