"""A server's side of self-registration: join a gateway model's pool, renew the lease, leave.

The lease is renewed every third of its length, so two lost renewals in a row still
keep the membership; a gateway that is down or restarting is simply tried again at
the next renewal (a restarted gateway learns its members back within one period).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

log = logging.getLogger("sluice.worker")


class Membership:
    def __init__(self, gateway_url: str, model: str, advertise_url: str, token: str, lease_s: float = 15.0) -> None:
        self.endpoint = f"{gateway_url.rstrip('/')}/admin/models/{model}/instances"
        self.advertise_url, self.lease_s = advertise_url, lease_s
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        self.renewals = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(1.0, self.lease_s / 3)))
        await self.renew()
        self._task = asyncio.create_task(self._renewing())

    async def renew(self) -> bool:
        assert self._session is not None
        body = {"url": self.advertise_url, "ttl_s": self.lease_s}
        try:
            async with self._session.post(self.endpoint, json=body, headers=self._headers) as response:
                if response.status in (200, 201):
                    self.renewals += 1
                    if response.status == 201:
                        log.info("registered with %s as %s", self.endpoint, self.advertise_url)
                    return True
                log.warning("registration refused (%d): %s", response.status, await response.text())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("registration failed, will retry: %r", exc)
        return False

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.renew()

    async def leave(self) -> None:
        """Deregister (best effort: if the gateway cannot be told, the lease runs out)."""
        if self._task is not None:
            self._task.cancel()
        if self._session is None:
            return
        try:
            async with self._session.delete(self.endpoint, json={"url": self.advertise_url}, headers=self._headers):
                pass
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("could not deregister: %r", exc)
        finally:
            await self._session.close()
