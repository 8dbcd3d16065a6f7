"""A pool whose instances register themselves: servers started by someone else (an
orchestrator, `sluice worker --register`) announce their URL and renew it while they live.

Membership is a lease: an instance that stops renewing is gone after its TTL, and
one that leaves on purpose (`deregister`) first finishes the batches it holds. The
pool itself never starts or stops a server; a planner's wishes for it are advice,
published as a metric for whoever does (see `ScalablePool` for the other kind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .pool import Instance, UpstreamPool

log = logging.getLogger("sluice.pool")

_REAP_EVERY_S = 0.5


@dataclass
class Membership:
    instance: Instance
    expires: float  # monotonic; renewed by each registration
    leaving: bool = False


class RegisteredPool(UpstreamPool):
    def __init__(
        self, model: str, *, max_ttl_s: float = 60.0, max_inflight: int = 4, binary: bool = False, timeout_s: float = 30.0
    ) -> None:
        super().__init__([], model, max_inflight=max_inflight, binary=binary, timeout_s=timeout_s)
        self.max_ttl_s = max_ttl_s
        self.members: dict[str, Membership] = {}
        self._reaper: asyncio.Task | None = None

    async def start(self) -> None:
        await super().start()
        self._reaper = asyncio.create_task(self._reap())

    def register(self, url: str, ttl_s: float, now: float | None = None) -> bool:
        """Add `url`, or renew its lease; True when it is new. The instance takes
        batches once its readiness probe answers."""
        now = time.monotonic() if now is None else now
        expires = now + min(ttl_s, self.max_ttl_s)
        member = self.members.get(url)
        if member is not None and not member.leaving:
            member.expires = expires
            return False
        if member is not None:  # it left and came back before its batches were done
            self._drop(url)
        instance = Instance(self._backend(url), max_inflight=self._max_inflight)
        self.members[url] = Membership(instance, expires)
        self.instances.append(instance)
        self.report_failure(instance)  # unhealthy until its probe answers
        log.info("instance registered", extra={"model": self._model, "backend": url, "ttl_s": round(expires - now, 3)})
        return True

    def deregister(self, url: str) -> bool:
        """`url` leaves on purpose: no new batches; gone once its batches are answered."""
        member = self.members.get(url)
        if member is None or member.leaving:
            return False
        member.leaving = True
        member.instance.healthy = False
        self._stop_probe(member.instance)  # a probe answering later must not bring it back
        log.info("instance leaving", extra={"model": self._model, "backend": url})
        return True

    def expire(self, now: float) -> list[str]:
        """Drop members whose lease ran out, and leavers with nothing in flight."""
        gone = [
            url for url, m in self.members.items()
            if now >= m.expires or (m.leaving and m.instance.inflight == 0)
        ]  # fmt: skip
        for url in gone:
            if not self.members[url].leaving:
                log.warning("instance lease expired", extra={"model": self._model, "backend": url})
            self._drop(url)
        return gone

    def _drop(self, url: str) -> None:
        member = self.members.pop(url)
        member.instance.healthy = False
        self.instances.remove(member.instance)
        self._stop_probe(member.instance)
        # Batches still in flight on it finish or fail on their own; the session stays open.

    def _stop_probe(self, instance: Instance) -> None:
        probe = self._probes.pop(instance, None)
        if probe is not None:
            probe.cancel()

    def report_failure(self, instance: Instance) -> None:
        if any(m.instance is instance and m.leaving for m in self.members.values()):
            return  # leaving: no probe brings it back
        super().report_failure(instance)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(_REAP_EVERY_S)
            self.expire(time.monotonic())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await super().stop()
