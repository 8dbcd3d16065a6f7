"""The emulator's lifecycle: its functions' pools, the keep-alive reaper and the HTTP server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from .app import make_app
from .config import FunctionConfig
from .metrics import EmulatorMetrics
from .pool import FunctionPool

log = logging.getLogger("sluice.faas_emulator")

_REAP_EVERY_S = 0.5


class FaasEmulator:
    """A local AWS Lambda Invoke API: `await start()` serves, `await stop()` ends every environment."""

    def __init__(self, functions: Sequence[FunctionConfig], host: str = "127.0.0.1", port: int = 0) -> None:
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise ValueError(f"function names must be unique, got {names}")
        self.host, self.port = host, port
        self.metrics = EmulatorMetrics()
        self.pools = {f.name: FunctionPool(f, self.metrics.for_function(f.name)) for f in functions}
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Bind and serve; with port 0 the chosen port is in `self.port` afterwards."""
        self._runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = self._runner.addresses[0][1]
        self._reaper = asyncio.create_task(self._reap_forever())
        log.info("serving %s on %s:%d", ", ".join(sorted(self.pools)), self.host, self.port)

    def run_in_background(self, coroutine) -> None:
        """An asynchronous (Event) invocation: kept here so that stop() can cancel it."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(_REAP_EVERY_S)
            for pool in self.pools.values():
                pool.reap()

    def pids(self) -> list[int]:
        return [pid for pool in self.pools.values() for pid in pool.pids()]

    async def stop(self) -> None:
        """Refuse new invocations, end every environment process (failing the invocations in them),
        then close the server."""
        if self._reaper:
            self._reaper.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(pool.stop() for pool in self.pools.values()))
        await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        # Invocations that were in flight may have retired their environment after the pools stopped.
        await asyncio.gather(*(pool.stop() for pool in self.pools.values()))
