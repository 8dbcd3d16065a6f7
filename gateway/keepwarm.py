"""Keep a FaaS model's environments warm while the gateway serves (`scheduler.keepwarm`).

The Lambda backend tells the policy when each batch's invocation starts and ends;
this loop sleeps until the policy's next check, asks it how many pings are due,
and sends them. Pings are billed and counted like any invocation (outcome "ping").
"""

from __future__ import annotations

import asyncio
import logging
import time

from backends.lambda_backend import LambdaBackend
from scheduler.keepwarm import KeepWarmPolicy

from .loop import BackgroundLoop

log = logging.getLogger("sluice.faas")

_IDLE_POLL_S = 1.0  # with nothing planned, look again this often (a batch may have ended since)


class KeepWarmLoop(BackgroundLoop):
    def __init__(self, policy: KeepWarmPolicy, backend: LambdaBackend) -> None:
        self.policy, self.backend = policy, backend

    async def _run(self) -> None:
        while True:
            due = self.policy.next_wakeup()
            now = time.monotonic()
            await asyncio.sleep(_IDLE_POLL_S if due is None else min(_IDLE_POLL_S, max(0.0, due - now)))
            count = self.policy.due(time.monotonic())
            if count:
                log.debug("keep-warm pings", extra={"backend": self.backend.name, "count": count})
                try:
                    await self.backend.ping(count)
                except Exception:  # a lost ping only costs warmth; the loop must live on
                    log.exception("keep-warm ping failed", extra={"backend": self.backend.name})
