"""Where the next batch goes: pure decisions over the pool's and the function's state.

Without a scheduler (`pick_instance`), every batch goes to the pool, to a free instance
with the fewest batches in flight, and on a tie to the one used most recently. That keeps
one instance hot at low load (an instance idle for tens of milliseconds runs its next
batch several times slower: caches gone cold) while under load every instance is busy
anyway.

With one, the options are priced (`options`, `front`, `on_function`): each ready instance
answers after the work already queued on it plus s(b), at no added cost (it is paid for
anyway); the function after its overhead, a cold start when no environment is warm, and
s(b), at its bill. `cheapest_in_time` chooses among them for the hybrid scheduler and the
baselines that send overflow to the function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from batching import Batch

from .types import Placement, View


class InstanceState(Protocol):
    healthy: bool
    inflight: int
    max_inflight: int
    last_dispatch: float


def pick_instance(instances: Sequence[InstanceState], now: float) -> int | None:
    """Index of the instance to use, or None when every instance is busy or down."""
    best, best_key = None, None
    for index, instance in enumerate(instances):
        if not instance.healthy or instance.inflight >= instance.max_inflight:
            continue
        key = (instance.inflight, -instance.last_dispatch)
        if best_key is None or key < best_key:
            best, best_key = index, key
    return best


def options(batch: Batch, view: View, now: float) -> list[Placement]:
    """Every place this batch could go now, with its predicted completion and added cost."""
    found = []
    if view.pool_service is not None:
        service = view.pool_service(batch.size)
        found = [Placement("instance", i.id, max(now, i.busy_until) + service, 0.0) for i in view.instances if i.ready]
    faas = on_function(batch, view, now)
    return found + [faas] if faas is not None else found


def front(batch: Batch, view: View, now: float) -> list[Placement]:
    """The places worth comparing: the instance that would answer first (the first of
    equals), then the function. Every instance adds nothing to the bill, so no other
    instance can beat the first one on cost or on time; the placement rules here choose
    from these what they would choose from all of `options`, without building a
    `Placement` per instance for every batch offered (most of a busy simulation's time)."""
    found = []
    if view.pool_service is not None:
        service = view.pool_service(batch.size)
        first, done = None, math.inf
        for instance in view.instances:
            if instance.ready:
                at = max(now, instance.busy_until) + service
                if at < done:
                    first, done = instance.id, at
        if first is not None:
            found.append(Placement("instance", first, done, 0.0))
    faas = on_function(batch, view, now)
    return found + [faas] if faas is not None else found


def on_function(batch: Batch, view: View, now: float) -> Placement | None:
    """The function, if it can take the batch now: after its overhead, a cold start when no
    environment is warm, and its service; at its bill."""
    faas = view.faas
    if faas is None or view.faas_service is None or not faas.has_room:
        return None
    service = view.faas_service(batch.size)
    cold = faas.cold_start_s if faas.warm_idle <= 0 else 0.0
    return Placement("faas", None, now + faas.overhead_s + cold + service, view.prices.faas_batch_cost(service))


def cheapest_in_time(candidates: list[Placement], deadline: float) -> Placement | None:
    """The cheapest option that meets the deadline (then the earliest). When none does:
    FaaS if it can take it, since a late batch there delays only itself, while one
    queued on an instance delays every batch behind it; else the earliest."""
    if not candidates:
        return None
    meeting = [o for o in candidates if o.predicted_done <= deadline]
    if meeting:
        return min(meeting, key=lambda o: (o.cost, o.predicted_done))
    faas = [o for o in candidates if o.kind == "faas"]
    return faas[0] if faas else min(candidates, key=lambda o: (o.predicted_done, o.cost))
