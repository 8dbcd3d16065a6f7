"""This replica's part in a cluster of gateways that share a `StateStore`.

Every `sync_s` it writes what it saw and reads what the others saw, per model:
- arrivals: its own, counted into one-second buckets; the cluster's rate over the
  last `RATE_WINDOW_S` comes back. A model whose servers are shared (upstream or
  registered, not local workers) plans for that rate, and its scheduler's
  forecasters are fed the other replicas' arrivals too;
- the plan: one replica holds the model's leader lease and plans its shared pool;
  the others take the leader's published plan instead of making their own;
- members of a self-registering pool: a server that registered through any replica
  serves through all of them, and leaves all of them when it leaves one;
- the function's concurrency: each replica reports its demand, and all compute the
  same split (`split_budget`), so that together they stay within the limit.

When the store does not answer, the replica says so (a warning, `sluice_state_store_up`
0) and goes on alone: its own arrivals, its own plan, members registered through it,
and the function's limit split evenly over the replicas it last knew of. When the store is back, it rejoins.
With the in-memory store (the default, one replica) all of this is the local state.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field

from backends.faas_pool import FaasPool
from backends.registered_pool import RegisteredPool
from scheduler import Fleet
from scheduler.budget import faas_demand, split_budget

from ..loop import BackgroundLoop
from ..metrics import Metrics
from ..scheduling import PlanLoop
from .state import StateStore, StateUnavailable

log = logging.getLogger("sluice.cluster")

RATE_WINDOW_S = 30


def default_replica_id(port: int | None = None) -> str:
    return f"{socket.gethostname()}:{port or 0}:{os.getpid()}:{os.urandom(2).hex()}"


@dataclass
class ClusterModel:
    """What the cluster loop tends for one model; each part is there if the model has it."""

    name: str
    runner_arrivals: object = None  # callable: admitted + refused arrivals so far
    plan: PlanLoop | None = None
    registry: RegisteredPool | None = None
    faas: FaasPool | None = None
    fleet: Fleet | None = None  # the model's dispatch core's instances: the function's peak in flight
    counted: int = 0  # arrivals already put into buckets
    unsent: dict[int, int] = field(default_factory=dict)  # bucket -> arrivals not yet written
    others_seen: dict[int, int] = field(default_factory=dict)  # bucket -> others' arrivals fed to the scheduler
    replicas: int = 1


class Cluster(BackgroundLoop):
    def __init__(
        self, store: StateStore, replica: str, metrics: Metrics, *, sync_s: float = 0.5, lease_s: float = 10.0,
        member_lease_s: float = 30.0,
    ) -> None:  # fmt: skip
        self.store, self.replica, self.metrics = store, replica, metrics
        self.sync_s, self.lease_s, self.member_lease_s = sync_s, lease_s, member_lease_s
        self.models: dict[str, ClusterModel] = {}
        self.up = True
        self._wall = time.time
        metrics.state_up.set(1)

    # -- what the gateway tells it ----------------------------------------------

    def watch(self, name: str, **parts) -> ClusterModel:
        """Tend `name`'s parts (runner_arrivals, plan, registry, faas); called again as a model's parts appear."""
        model = self.models.setdefault(name, ClusterModel(name))
        for key, value in parts.items():
            setattr(model, key, value)
        return model

    def forget(self, name: str) -> None:
        """Stop tending `name` (a version unloaded); its lease, if it leads, runs out."""
        self.models.pop(name, None)

    async def member_renewed(self, model: str, url: str, ttl_s: float) -> None:
        await self._try(self.store.renew_member(model, url, self._wall() + ttl_s))

    async def member_left(self, model: str, url: str) -> None:
        await self._try(self.store.remove_member(model, url, self._wall(), self.member_lease_s))

    async def leave(self) -> None:
        """On shutdown: give up the leases, so that another replica plans at once."""
        for name, model in self.models.items():
            if model.plan is not None and model.plan.leader:
                await self._try(self.store.release_lease(f"plan:{name}", self.replica))

    # -- the loop ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(self.sync_s)

    async def sync(self) -> None:
        for model in list(self.models.values()):
            try:
                await self._sync_model(model, self._wall(), time.monotonic())
            except StateUnavailable as exc:
                self._down(exc)
                self._alone(model)
                continue
            except Exception:  # a bug here must not end the loop for every model
                log.exception("cluster sync failed", extra={"model": model.name})
                continue
            self._back()

    async def _sync_model(self, model: ClusterModel, wall: float, now: float) -> None:
        self._count(model, wall)
        if model.unsent:
            await self.store.count_arrivals(model.name, self.replica, model.unsent)
            model.unsent = {}
        await self._rate(model, wall, now)
        await self._heartbeat(model, wall)
        if model.plan is not None and model.plan.shared:
            await self._lead(model, wall)
        if model.registry is not None:
            await self._members(model, wall, now)

    def _count(self, model: ClusterModel, wall: float) -> None:
        if model.runner_arrivals is None:
            return
        total = model.runner_arrivals()
        if total > model.counted:
            bucket = int(wall)
            model.unsent[bucket] = model.unsent.get(bucket, 0) + total - model.counted
            model.counted = total
        for bucket in [b for b in model.unsent if b < wall - 2 * RATE_WINDOW_S]:
            del model.unsent[bucket]  # unsent while the store was away, and too old to matter now

    async def _rate(self, model: ClusterModel, wall: float, now: float) -> None:
        current = int(wall)
        buckets = await self.store.arrivals(model.name, current - RATE_WINDOW_S, current)
        complete = sum(sum(per.values()) for b, per in buckets.items() if b < current)
        rate = complete / RATE_WINDOW_S
        self.metrics.cluster_rate.labels(model.name).set(rate)
        plan = model.plan
        if plan is None or not plan.shared:
            return  # local servers serve local traffic: the local rate is the right one
        plan.fleet.cluster_rate = rate
        others = 0
        for bucket in range(current - 5, current + 1):
            count = sum(n for r, n in buckets.get(bucket, {}).items() if r != self.replica)
            others += max(0, count - model.others_seen.get(bucket, 0))
            model.others_seen[bucket] = count
        for bucket in [b for b in model.others_seen if b < current - 5]:
            del model.others_seen[bucket]
        if others:
            plan.core.scheduler.observe(others, now)

    async def _heartbeat(self, model: ClusterModel, wall: float) -> None:
        """Report this replica alive (with its FaaS demand) and take its share of the function."""
        faas = model.faas
        instance = faas.instances[0] if faas is not None and faas.instances else None
        demand = 0
        if instance is not None and model.fleet is not None:
            demand = faas_demand(model.fleet.take_peak(instance), instance.max_inflight, faas.concurrency)
        await self.store.report_demand(model.name, self.replica, demand, wall + max(2.0, 4 * self.sync_s))
        demands = await self.store.demands(model.name, wall)
        demands[self.replica] = demand
        model.replicas = len(demands)
        self.metrics.cluster_replicas.labels(model.name).set(model.replicas)
        if instance is not None:
            self._share(model, split_budget(faas.concurrency, demands)[self.replica])

    def _share(self, model: ClusterModel, share: int) -> None:
        model.faas.set_share(share)
        self.metrics.faas_share.labels(model.name).set(share)

    async def _lead(self, model: ClusterModel, wall: float) -> None:
        plan, key = model.plan, f"plan:{model.name}"
        leader = await self.store.hold_lease(key, self.replica, self.lease_s, wall)
        if leader != plan.leader:
            log.info("leader" if leader else "follower", extra={"model": model.name, "replica": self.replica})
        plan.leader = leader
        self.metrics.leader.labels(model.name).set(int(leader))
        if leader:
            if plan.desired is not None:
                await self.store.publish(key, str(plan.desired), 3 * self.lease_s, wall)
        else:
            published = await self.store.read(key, wall)
            if published is not None:
                plan.follow(int(published))

    async def _members(self, model: ClusterModel, wall: float, now: float) -> None:
        members, left = await self.store.members(model.name, wall)
        registry = model.registry
        for url, expires in members.items():
            local = registry.members.get(url)
            if local is not None and local.leaving:
                continue  # it left here; only its own registration brings it back
            if local is None and expires - wall < 2 * self.sync_s:
                continue  # about to lapse: not worth adding
            if registry.register(url, expires - wall, now):
                log.info("instance learned from the cluster", extra={"model": model.name, "backend": url})
        for url in left:
            local = registry.members.get(url)
            if local is not None and not local.leaving and url not in members:
                registry.deregister(url)

    # -- when the store is away -----------------------------------------------

    async def _try(self, call) -> None:
        try:
            await call
        except StateUnavailable as exc:
            self._down(exc)

    def _down(self, exc: Exception) -> None:
        self.metrics.state_errors.inc()
        if self.up:
            self.up = False
            self.metrics.state_up.set(0)
            log.warning("state store unreachable; going on with local state",
                        extra={"store": self.store.name, "error": str(exc)})  # fmt: skip

    def _back(self) -> None:
        if not self.up:
            self.up = True
            self.metrics.state_up.set(1)
            log.info("state store reachable again; rejoined the cluster", extra={"store": self.store.name})

    def _alone(self, model: ClusterModel) -> None:
        """Local state: this replica's rate, its own plan, and an even share of the function
        (the limit over the replicas it last knew of)."""
        plan = model.plan
        if plan is not None:
            plan.fleet.cluster_rate = None
            if not plan.leader:
                log.info("leader", extra={"model": model.name, "replica": self.replica, "alone": True})
            plan.leader = True
            self.metrics.leader.labels(model.name).set(1)
        faas = model.faas
        if faas is not None and faas.instances:
            self._share(model, max(1, math.floor(faas.concurrency / max(1, model.replicas))))
