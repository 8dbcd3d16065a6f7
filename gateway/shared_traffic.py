"""Traffic policies and rollouts across replicas, through the state store.

A replica that changes a model's traffic policy (`PUT /admin/models/{m}/traffic`, or a
rollout step) publishes it as `traffic:<model>` with a revision (the wall time of the
change); every replica reads it every `sync_s` and applies a newer revision than the one
it has. A rollout is led by one replica: the one that started it holds the lease
`rollout:<model>` while it runs (another replica refuses a second rollout with 409), and
publishes its state as `rollout-state:<model>`, so that `GET .../rollout` answers the same
on every replica. The leader judges on the answers it saw itself: with a load balancer
spreading requests evenly, a replica's traffic is a fair sample of the cluster's.

With the in-memory store (one replica) all of this reads back what it wrote, and does
nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from .loop import BackgroundLoop
from .replicas import StateUnavailable
from .traffic import TrafficPolicy

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("sluice.gateway")
KEEP_S = 7 * 24 * 3600.0  # how long a published policy lives without being changed again


class SharedTraffic(BackgroundLoop):
    def __init__(self, gateway: Gateway, sync_s: float) -> None:
        self.gateway, self.sync_s = gateway, sync_s
        self.applied: dict[str, float] = {}  # model -> the revision of its policy in force here

    @property
    def store(self):
        return self.gateway.cluster.store

    async def publish(self, name: str, policy: TrafficPolicy) -> None:
        """This replica changed `name`'s policy: the others take it at their next sync."""
        revision = time.time()
        self.applied[name] = revision
        try:
            await self.store.publish(f"traffic:{name}", json.dumps({"revision": revision, "policy": policy.to_json()}),
                                     KEEP_S, revision)  # fmt: skip
        except StateUnavailable:
            log.warning("traffic policy not shared: the state store is down", extra={"model": name})

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync()
            except StateUnavailable:
                continue

    async def sync(self) -> None:
        for name, versions in list(self.gateway.models.items()):
            raw = await self.store.read(f"traffic:{name}", time.time())
            if raw is None:
                continue
            doc = json.loads(raw)
            if doc["revision"] <= self.applied.get(name, 0.0):
                continue
            try:
                versions.set_traffic(doc["policy"])
            except ValueError as exc:  # a version this replica has not loaded (yet): try again next time
                log.warning("shared traffic policy not applied", extra={"model": name, "error": str(exc)})
                continue
            self.applied[name] = doc["revision"]
            log.info("traffic policy from another replica", extra={"model": name, **doc["policy"]})

    # -- rollouts -------------------------------------------------------------

    async def lead(self, name: str, ttl_s: float) -> bool:
        """Take or keep the lead of `name`'s rollout; False when another replica leads one."""
        try:
            return await self.store.hold_lease(f"rollout:{name}", self.gateway.cluster.replica, ttl_s, time.time())
        except StateUnavailable:
            return True  # alone: lead what this replica started

    async def step_down(self, name: str) -> None:
        try:
            await self.store.release_lease(f"rollout:{name}", self.gateway.cluster.replica)
        except StateUnavailable:
            pass

    async def publish_rollout(self, name: str, state: dict) -> None:
        try:
            await self.store.publish(f"rollout-state:{name}", json.dumps(state), KEEP_S, time.time())
        except StateUnavailable:
            pass

    async def rollout_state(self, name: str) -> dict | None:
        try:
            raw = await self.store.read(f"rollout-state:{name}", time.time())
        except StateUnavailable:
            return None
        return json.loads(raw) if raw is not None else None
