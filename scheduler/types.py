"""What a scheduler sees and what it decides: the `Scheduler` interface.

A scheduler answers two questions, as pure functions of a `View` and `now`:
- `place(batch, view, now)`: where does this closed batch run: a pool instance,
  FaaS, or nowhere (a rejection, with a reason)?
- `plan(view, now)`: how many pool instances should run, and which to start or stop?

The gateway and the simulator build the view from their own state and carry the
decisions out; a scheduler never does I/O. Write your own by implementing these two
methods (see `scheduler.baselines` for small examples) and load it with
`--scheduler module:Class`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from batching import Batch

ServiceTime = Callable[[int], float]  # batch size -> seconds


def billed_ms(seconds: Any) -> Any:
    """A duration as the provider bills it: whole milliseconds, at least one. Float noise is
    rounded away first (0.007 s is 7 ms, not 8)."""
    if isinstance(seconds, float | int):
        return float(max(1, math.ceil(round(seconds * 1000.0, 6))))
    ms = np.maximum(np.ceil(np.round(np.asarray(seconds, dtype=float) * 1000.0, 6)), 1.0)
    return float(ms) if ms.ndim == 0 else ms


@dataclass(frozen=True)
class Prices:
    """What capacity costs: instances by the second with a minimum, functions by the GB-second."""

    instance_per_hour: float = 0.085
    instance_min_billed_s: float = 60.0
    faas_per_gb_s: float = 0.0000166667
    faas_per_request: float = 0.0000002
    faas_memory_mb: int = 1024

    def faas_batch_cost(self, service_s: Any) -> Any:
        """One invocation that runs `service_s` (or an array of them): billed in whole milliseconds."""
        return self.faas_bill(billed_ms(service_s))

    def faas_bill(self, billed_ms: Any) -> Any:
        """One invocation's bill: billed duration x memory, plus the request. The one
        formula of the function's bill (the gateway prices each REPORT line with it, the
        simulator each simulated invocation)."""
        return billed_ms / 1000.0 * self.faas_memory_mb / 1024.0 * self.faas_per_gb_s + self.faas_per_request

    @property
    def instance_per_s(self) -> float:
        return self.instance_per_hour / 3600.0


@dataclass(frozen=True)
class InstanceView:
    """One pool instance. `busy_until`: when the work already given to it is done (at
    most `now` when idle). `ready_at`: when a starting instance can take batches."""

    id: str
    state: str  # "starting" | "ready" | "stopping"
    busy_until: float
    queued: int  # batches given to it and not finished, the running one included
    ready_at: float
    billed_since: float  # billing started (instances bill from their start request)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def live(self) -> bool:
        """Starting or ready: what a plan counts as the pool's size (a stopping one is leaving)."""
        return self.state in ("starting", "ready")


@dataclass(frozen=True)
class FaasView:
    in_flight: int
    concurrency_limit: int | None  # None: unlimited
    warm_idle: int  # environments believed warm and idle
    overhead_s: float  # invocation overhead
    cold_start_s: float

    @property
    def has_room(self) -> bool:
        return self.concurrency_limit is None or self.in_flight < self.concurrency_limit


@dataclass(frozen=True)
class ArrivalView:
    """Recent traffic: the observed rate (requests/s) and what the forecaster expects."""

    rate: float
    forecast: Callable[[float], float]  # horizon seconds -> expected rate then
    spread: float = 0.0  # the forecaster's recent error (requests/s, one standard deviation)


@dataclass(frozen=True)
class View:
    instances: Sequence[InstanceView]
    faas: FaasView | None
    arrivals: ArrivalView
    prices: Prices
    pool_service: ServiceTime | None  # s(b) on an instance; None without a pool
    faas_service: ServiceTime | None  # s(b) on a function; None without FaaS
    batch_size: int  # the batching policy's B now (what a busy instance serves at)
    slo_s: float
    startup_s: float  # how long an instance takes to become ready
    max_instances: int = 64
    batch_wait_s: float = 0.0  # the batching policy's timeout now: how long a batch's oldest request may wait to close

    @property
    def live(self) -> list[InstanceView]:
        """The instances starting or ready, in the view's order."""
        return [i for i in self.instances if i.live]


@dataclass(frozen=True)
class Placement:
    """`kind`: "instance" (with `instance`), "faas", or "reject" (with `reason`)."""

    kind: str
    instance: str | None = None
    predicted_done: float = math.inf
    cost: float = 0.0
    reason: str = ""

    @classmethod
    def reject(cls, reason: str) -> Placement:
        return cls("reject", reason=reason)


@dataclass(frozen=True)
class PoolPlan:
    """The instance count wanted, and what to do now to get there."""

    target: int
    start: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)


class Scheduler(Protocol):
    name: str
    plan_interval_s: float  # how often `plan` wants to be asked

    def place(self, batch: Batch, view: View, now: float) -> Placement: ...

    def plan(self, view: View, now: float) -> PoolPlan: ...

    def observe(self, arrivals: int, now: float) -> None:
        """Told how many requests arrived since the last call (forecasters learn from it)."""
        ...


def batch_deadline(batch: Batch, slo_s: float) -> float:
    """The batch's earliest deadline: a request's own, or its arrival plus the SLO."""
    own = batch.earliest_deadline
    budget = batch.oldest_arrival + slo_s
    return budget if own is None else min(own, budget)
