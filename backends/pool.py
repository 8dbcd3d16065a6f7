"""Pools of instances: places that each run a bounded number of batches at once.

The gateway books an instance for a batch and releases it after; a pool keeps the
instances alive (restarting worker processes, probing upstreams) and tells its
listener when capacity comes back, so batches waiting in the gateway move on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from .base import Backend
from .http_v2 import HttpV2Backend
from .wire import AiohttpTransport

log = logging.getLogger("sluice.pool")


@dataclass(eq=False)
class Instance:
    """One instance of a pool. The pool owns whether it is healthy and how many batches it
    takes at once; the dispatch core (`scheduler.Dispatcher`) owns the rest: what is in
    flight on it, when it was last used, and its circuit breaker."""

    backend: Backend
    max_inflight: int = 1
    inflight: int = 0
    high_water: int = 0  # most in flight at once since the last look (the cluster's FaaS demand)
    healthy: bool = False
    last_dispatch: float = float("-inf")
    dispatched: int = 0

    @property
    def name(self) -> str:
        return self.backend.name


class Pool(Protocol):
    instances: list[Instance]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Register `callback`, called whenever an instance becomes usable."""
        ...

    def report_failure(self, instance: Instance) -> None:
        """The dispatcher could not reach `instance`; take it out until it recovers."""
        ...


class ScalablePool(Pool, Protocol):
    """A pool whose provider can start and stop instances on demand (local worker
    processes); a planner grows and shrinks it. Static and self-registering pools
    are not: their size is someone else's, and a plan for them is only advice."""

    async def add_instance(self) -> Instance:
        """Start one more instance and return it once it serves."""
        ...

    async def remove_instance(self, instance: Instance) -> None:
        """Stop sending `instance` batches, let its batch in flight finish, then stop it."""
        ...


def scalable(pool: Pool) -> bool:
    return callable(getattr(pool, "add_instance", None)) and callable(getattr(pool, "remove_instance", None))


async def wait_until_ready(backend: Backend, first_delay_s: float, max_delay_s: float = 5.0) -> None:
    """Ask `backend.ready()` with exponential backoff until it says yes."""
    delay = first_delay_s
    while not await backend.ready():
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def new_session() -> aiohttp.ClientSession:
    # One keep-alive connection per in-flight batch is all a pool needs.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60), auto_decompress=False)


class UpstreamPool:
    """A static list of servers that speak the protocol (Triton, MLServer, KServe, ...)."""

    def __init__(
        self, urls: list[str], model: str, *, max_inflight: int = 4, binary: bool = False, timeout_s: float = 30.0
    ) -> None:
        self._urls, self._model = urls, model
        self._max_inflight, self._binary, self._timeout = max_inflight, binary, timeout_s
        self.instances: list[Instance] = []
        self._session: aiohttp.ClientSession | None = None
        self._listeners: list[Callable[[], None]] = []
        self._probes: dict[Instance, asyncio.Task] = {}

    def on_capacity(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def start(self) -> None:
        self._session = new_session()
        self.instances = [Instance(self._backend(url), max_inflight=self._max_inflight) for url in self._urls]
        for instance in self.instances:
            instance.healthy = await instance.backend.ready()
            if not instance.healthy:
                self.report_failure(instance)

    def _backend(self, url: str) -> HttpV2Backend:
        assert self._session is not None, "start the pool first"
        transport = AiohttpTransport(url, self._session, self._timeout)
        return HttpV2Backend(transport, self._model, binary=self._binary, name=url)

    def report_failure(self, instance: Instance) -> None:
        instance.healthy = False
        if instance not in self._probes:
            self._probes[instance] = asyncio.create_task(self._probe(instance))

    async def _probe(self, instance: Instance) -> None:
        await wait_until_ready(instance.backend, first_delay_s=0.2)
        instance.healthy = True
        del self._probes[instance]
        log.info("upstream is ready", extra={"backend": instance.name})
        for callback in self._listeners:
            callback()

    async def stop(self) -> None:
        for task in self._probes.values():
            task.cancel()
        if self._session:
            await self._session.close()
