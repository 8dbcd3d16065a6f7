"""A background task with an explicit lifecycle: `start()` on the running loop, `stop()` cancels it
and waits. The gateway's periodic jobs (re-tuning, keep-warm pings, pool planning) are these."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("sluice.gateway")

_RECANCEL_S = 1.0


class BackgroundLoop:
    _task: asyncio.Task | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Cancel the task and wait for it to end. A cancellation swallowed on the way (a
        library that catches it) would leave the loop running and this wait endless: cancel
        again every second until it ends, and say so."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        while True:
            done, _ = await asyncio.wait({task}, timeout=_RECANCEL_S)
            if done:
                break
            log.warning("a background loop ignored its cancellation; cancelling again", extra={"loop": type(self).__name__})
            task.cancel()
        if not task.cancelled():
            task.result()  # an error that ended the loop: raise it here, as awaiting the task would
