"""A server pool and a serverless function, served as one pool: the hybrid's two places.

The server pool is any provider: local worker processes (which a planner can grow
and shrink), a static list of upstream URLs, or self-registering instances. The
runner sees every instance (servers first, then the function); a scheduler decides
which one each batch takes.
"""

from __future__ import annotations

from collections.abc import Callable

from .faas_pool import FaasPool
from .pool import Instance, Pool


class MixedPool:
    def __init__(self, servers: Pool, faas: FaasPool) -> None:
        self.servers, self.faas = servers, faas

    @property
    def instances(self) -> list[Instance]:
        return [*self.servers.instances, *self.faas.instances]

    def on_capacity(self, callback: Callable[[], None]) -> None:
        self.servers.on_capacity(callback)
        self.faas.on_capacity(callback)

    async def start(self) -> None:
        await self.servers.start()
        try:
            await self.faas.start()
        except BaseException:
            await self.servers.stop()
            raise

    def report_failure(self, instance: Instance) -> None:
        (self.faas if instance in self.faas.instances else self.servers).report_failure(instance)

    async def stop(self) -> None:
        await self.servers.stop()
        await self.faas.stop()
