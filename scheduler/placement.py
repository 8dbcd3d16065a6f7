"""Which instance takes the next batch: a pure decision over the pool's state.

The cost-aware hybrid scheduler will replace this with a priced choice between
pool instances and FaaS; until then every batch goes to the pool, to a free
instance with the fewest batches in flight, and on a tie to the one used most
recently. That keeps one instance hot at low load (an instance idle for tens of
milliseconds runs its next batch several times slower: caches gone cold) while
under load every instance is busy anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


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
