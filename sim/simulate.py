"""simulate(): run a batching policy over arrival times at virtual time, on a simulated target.

Two ways to the same answer:
- the event path drives a real `batching.BatchQueue` with the policy, request by
  request, on the discrete-event engine; it runs any policy, on any target;
- the fast path, for a fixed (B, T) on FaaS with unlimited concurrency, forms all
  batches at once with `form_batches` and computes latencies with numpy.
Both call the same code for what happens after a batch closes (slots, warm
environments, service times, jitter) and for latency and cost, so they agree
exactly; the tests hold them to it.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from batching import BatchPolicy, BatchQueue, FixedPolicy, NoBatchingPolicy, Request
from batching.formation import REASONS, form_batches

from scheduler.keepwarm import KeepWarmPolicy

from .engine import Engine
from .profiles import ServiceProfile
from .results import SimResult

TARGETS = ("faas", "pool")
PATHS = ("auto", "fast", "event")
# Order of events at one instant: batch timers fire before arrivals are pushed (the
# gateway's owner loop polls first), and finished invocations free their slots in between.
TIMER, DONE, ARRIVAL = 0, 1, 2
_REASON_CODE = {name: code for code, name in enumerate(REASONS)}
_PROGRESS_EVERY = 1 << 16


class WarmEnvironments:
    """FaaS execution environments. A batch reuses an environment that has been idle for
    less than keep_alive_s, else starts a new one (a cold start). Of several idle ones it
    takes the one idle longest: every reuse then refreshes the environment closest to
    being reclaimed, which keeps as many warm as the traffic can.

    With a `KeepWarmPolicy`, the policy hears of every invocation and its pings run as
    short invocations (`ping_s` each) at the times it asks for; they are counted apart
    (`pings`, and `ping_cold_starts` for the pings that started an environment)."""

    def __init__(
        self, keep_alive_s: float, keep_warm: KeepWarmPolicy | None = None, ping_s: float = 0.001, cold_start_s: float = 0.0
    ) -> None:
        self.keep_alive_s = keep_alive_s
        self.keep_warm, self.ping_s, self.cold_start_s = keep_warm, ping_s, cold_start_s
        self.pings = self.ping_cold_starts = 0
        self._free_at: list[float] = []  # heap: when each live environment is (or was) free
        self._ends: list[float] = []  # heap: batch invocations' ends, not yet told to the policy

    def preload(self, count: int, at: float) -> None:
        """`count` environments already warm and idle at `at` (a gateway warms one at startup)."""
        for _ in range(count):
            heapq.heappush(self._free_at, at)

    def idle_count(self, now: float) -> int:
        """Environments warm and idle at `now`."""
        return sum(1 for t in self._free_at if t <= now and now - t < self.keep_alive_s)

    def acquire(self, now: float) -> bool:
        """Take an environment at `now`; True if it had to be started cold."""
        if self.keep_warm is not None:
            self.advance(now)
            self.keep_warm.started(now)
        return self._take(now)

    def _take(self, now: float) -> bool:
        free_at = self._free_at
        while free_at and now - free_at[0] >= self.keep_alive_s:
            heapq.heappop(free_at)  # idle too long: reclaimed by the provider
        if free_at and free_at[0] <= now:
            heapq.heappop(free_at)
            return False
        return True

    def release_at(self, free_time: float) -> None:
        heapq.heappush(self._free_at, free_time)
        if self.keep_warm is not None:
            heapq.heappush(self._ends, free_time)

    def advance(self, until: float) -> None:
        """Tell the policy of the invocations that ended, and run its pings, in time order up to `until`."""
        policy = self.keep_warm
        if policy is None:
            return
        while True:
            end = self._ends[0] if self._ends else math.inf
            ping = policy.next_wakeup()
            ping = math.inf if ping is None else ping
            if min(end, ping) > until or min(end, ping) == math.inf:
                return
            if end <= ping:
                policy.ended(heapq.heappop(self._ends))
                continue
            count = policy.due(ping)
            if count == 0 and policy.next_wakeup() == ping:
                return  # nothing more will change before another invocation
            taken = [self._take(ping) for _ in range(count)]
            for cold in taken:  # a ping that starts an environment holds it through the cold start
                heapq.heappush(self._free_at, ping + self.ping_s + (self.cold_start_s if cold else 0.0))
            self.pings += count
            self.ping_cold_starts += sum(taken)


@dataclass
class _Target:
    """A target reduced to what the simulation loop needs."""

    kind: str
    service_s: Callable  # batch size (or array of them) -> seconds
    overhead_s: float
    cold_start_s: float
    slots: int | None  # batches in service at once; None = unlimited
    environments: WarmEnvironments | None
    memory_mb: int | None = None

    def begin(self, now: float, service_s: float) -> tuple[bool, float]:
        """Invoke a batch at `now`: (cold start?, completion time)."""
        cold = self.environments.acquire(now) if self.environments else False
        done = now + (self.overhead_s + (self.cold_start_s if cold else 0.0) + service_s)
        if self.environments:
            self.environments.release_at(done)
        return cold, done


class _Jitter:
    """Multiplicative service-time noise: lognormal, mean 1, log-sd `sigma`, one draw per
    batch in closing order (array and one-by-one draws give the same numbers)."""

    def __init__(self, sigma: float, seed: int) -> None:
        self.sigma = sigma
        self._rng = np.random.default_rng(seed)

    def factors(self, n: int) -> np.ndarray:
        return self._rng.lognormal(-self.sigma**2 / 2, self.sigma, n)

    def factor(self) -> float:
        return float(self._rng.lognormal(-self.sigma**2 / 2, self.sigma))


def simulate(
    arrivals: np.ndarray,
    policy: BatchPolicy,
    profile: ServiceProfile,
    *,
    target: str = "faas",
    memory_mb: int | None = None,
    instances: int = 1,
    concurrency_limit: int | None = None,
    keep_alive_s: float = 600.0,
    keep_warm: KeepWarmPolicy | None = None,
    warm_environments: int = 0,
    jitter: float = 0.0,
    seed: int = 0,
    slo_s: float | None = None,
    path: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Simulate `policy` batching sorted `arrivals` (seconds) and serving them on `target`:
    "faas" (functions with `memory_mb`, optionally at most `concurrency_limit` at once) or
    "pool" (`instances` servers, one batch each at a time). `path` forces "fast" or "event".
    On FaaS, `warm_environments` are warm when the first request arrives.
    `progress(fraction)` is called now and then on the event path."""
    began = time.perf_counter()
    times = np.asarray(arrivals, dtype=float)
    if times.ndim != 1 or not np.isfinite(times).all():
        raise ValueError("arrivals must be a one-dimensional array of finite times")
    if len(times) > 1 and (np.diff(times) < 0).any():
        raise ValueError("arrivals must be sorted in non-decreasing order")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be non-negative, got {jitter!r}")
    if keep_warm is not None and target != "faas":
        raise ValueError("keeping environments warm applies to the faas target")
    resolved = _resolve_target(profile, target, memory_mb, instances, concurrency_limit, keep_alive_s, keep_warm)
    if resolved.environments is not None and len(times):
        resolved.environments.preload(warm_environments, float(times[0]))
    constant = type(policy) in (FixedPolicy, NoBatchingPolicy)
    # Deadline-aware closing needs the queue itself: only plain fixed limits have a fast path.
    fixed = constant and not policy.limits(0.0).service_s
    if constant and target == "pool" and profile.iaas and profile.iaas.max_batch_size is not None:
        if policy.limits(0.0).max_size > profile.iaas.max_batch_size:
            raise ValueError(f"batch size {policy.limits(0.0).max_size} exceeds the pool's max_batch_size {profile.iaas.max_batch_size}")
    fast_ok = fixed and target == "faas" and concurrency_limit is None
    if path == "fast" and not fast_ok:
        raise ValueError("the fast path needs a FixedPolicy or NoBatchingPolicy on FaaS without a concurrency limit")
    use_fast = fast_ok and path != "event"
    jitter_draws = _Jitter(jitter, seed) if jitter > 0 else None

    if use_fast:
        first, size, close, reason, start, cold, service = _fast_path(times, policy, resolved, jitter_draws)
    else:
        first, size, close, reason, start, cold, service = _EventRun(times, policy, resolved, jitter_draws, progress).run()

    # Latency = (queue wait + wait for a slot) + overhead + cold start + service, summed
    # in the same order as _Target.begin sums a completion time.
    delay = resolved.overhead_s + np.where(cold, resolved.cold_start_s, 0.0) + service
    batch = np.repeat(np.arange(len(size)), size)
    if len(batch) != len(times) or (len(first) and not np.array_equal(first, np.cumsum(size) - size)):
        raise RuntimeError("batches do not cover the requests once each, in order")
    latency = (start[batch] - times) + delay[batch]
    pings = 0
    if target == "faas":
        cost = float(np.sum(profile.faas_batch_cost(service, resolved.memory_mb))) if len(size) else 0.0
        environments = resolved.environments
        if environments is not None and environments.keep_warm is not None:
            environments.advance(math.inf)  # the pings after the last batch are paid for too
            pings = environments.pings
            cost += pings * float(profile.faas_batch_cost(np.array([environments.ping_s]), resolved.memory_mb)[0])
    else:
        span = float(np.max(start + delay) - times[0]) if len(times) else 0.0
        cost = instances * span * profile.iaas.price_per_hour / 3600.0  # type: ignore[union-attr]
    return SimResult(
        arrival=times, latency_s=latency, batch=batch, close_time=close, start_time=start,
        size=size, reason=reason, cold=cold, service_s=service, cost_usd=cost,
        wall_s=time.perf_counter() - began, target=target, memory_mb=resolved.memory_mb,
        path="fast" if use_fast else "event", slo_s=slo_s, pings=pings,
    )  # fmt: skip


def _fast_path(times: np.ndarray, policy: BatchPolicy, target: _Target, jitter: _Jitter | None) -> tuple[np.ndarray, ...]:
    """Fixed limits on FaaS without a concurrency limit: every batch is invoked when it
    closes, so only the warm-environment bookkeeping needs a loop (over batches)."""
    limits = policy.limits(0.0)
    formation = form_batches(times, limits.max_size, limits.max_wait)
    size, close = formation.size, formation.close_time
    service = target.service_s(size) if len(size) else np.zeros(0)
    if jitter:
        service = service * jitter.factors(len(size))
    cold = np.zeros(len(size), dtype=bool)
    for k, (now, service_s) in enumerate(zip(close.tolist(), service.tolist())):
        cold[k] = target.begin(now, service_s)[0]
    return formation.start, size, close, formation.reason, close, cold, service


def resolved_memory(profile: ServiceProfile, memory_mb: int | None) -> int:
    """The FaaS memory size to use: the one given, or the profile's only one."""
    sizes = profile.memory_sizes
    if memory_mb is None:
        if len(sizes) != 1:
            raise ValueError(f"profile {profile.name!r} has FaaS memory sizes {sizes}; choose one (memory_mb)")
        return sizes[0]
    if memory_mb not in sizes:
        raise ValueError(f"profile {profile.name!r} has no FaaS memory size {memory_mb}; it has {sizes}")
    return int(memory_mb)


def _resolve_target(
    profile: ServiceProfile, target: str, memory_mb: int | None, instances: int,
    concurrency_limit: int | None, keep_alive_s: float, keep_warm: KeepWarmPolicy | None = None,
) -> _Target:  # fmt: skip
    if target == "faas":
        if profile.faas is None:
            raise ValueError(f"profile {profile.name!r} has no 'faas' section")
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ValueError(f"concurrency limit must be at least 1, got {concurrency_limit}")
        if not keep_alive_s >= 0:
            raise ValueError(f"keep-alive must be non-negative, got {keep_alive_s!r}")
        memory = resolved_memory(profile, memory_mb)
        return _Target(
            "faas", lambda b: profile.faas_service_s(b, memory), profile.faas.invoke_overhead_ms / 1000.0,
            profile.faas.cold_start_ms / 1000.0, concurrency_limit,
            WarmEnvironments(keep_alive_s, keep_warm, cold_start_s=profile.faas.cold_start_ms / 1000.0), memory,
        )  # fmt: skip
    if target == "pool":
        if profile.iaas is None:
            raise ValueError(f"profile {profile.name!r} has no 'iaas' section")
        if instances < 1:
            raise ValueError(f"a pool needs at least one instance, got {instances}")
        return _Target("pool", profile.iaas_service_s, 0.0, 0.0, int(instances), None)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


class QueueTimer:
    """Keeps exactly one engine timer at the queue's next wakeup, and hands what it
    closes to `batches_closed`: the part of an event run that drives a BatchQueue."""

    engine: Engine
    queue: BatchQueue
    timer: Any

    def batches_closed(self, batches: list) -> None:
        raise NotImplementedError

    def timer_due(self) -> None:
        self.timer = None
        self.batches_closed(self.queue.poll(self.engine.now))
        self.offer_idle()  # a hold may have run out while a slot is free
        self.rearm()

    def offer_idle(self) -> None:
        """A slot may be free to take the open batch (`BatchQueue.idle`); drivers with slots say."""

    def rearm(self) -> None:
        due = self.queue.next_wakeup()
        if self.timer is not None:
            if self.timer.time == due:
                return
            self.timer.cancel()
            self.timer = None
        if due is not None and math.isfinite(due):
            self.timer = self.engine.schedule(max(due, self.engine.now), self.timer_due, priority=TIMER)


class _EventRun(QueueTimer):
    """The event path: arrivals, batch timers and completions on the engine, with the
    gateway's own BatchQueue deciding when batches close."""

    def __init__(self, times: np.ndarray, policy: BatchPolicy, target: _Target,
                 jitter: _Jitter | None, progress: Callable[[float], None] | None) -> None:  # fmt: skip
        self.times = times.tolist()
        self.engine = Engine(start=self.times[0] if self.times else 0.0)
        self.queue = BatchQueue(policy)
        self.target = target
        self.jitter = jitter
        self.progress = progress
        self.timer = None
        self.waiting: deque[int] = deque()  # batches waiting for a free slot, FIFO
        self.busy = 0
        self.first: list[int] = []
        self.size: list[int] = []
        self.close: list[float] = []
        self.reason: list[int] = []
        self.start: list[float] = []
        self.cold: list[bool] = []
        self.service: list[float] = []

    def run(self) -> tuple[np.ndarray, ...]:
        if self.times:
            self.engine.schedule(self.times[0], self.arrive, 0, priority=ARRIVAL)
        self.engine.run()
        if len(self.queue):
            raise RuntimeError("requests left in the queue after the last event")
        if self.progress:
            self.progress(1.0)
        return (
            np.array(self.first, dtype=np.int64), np.array(self.size, dtype=np.int64),
            np.array(self.close, dtype=float), np.array(self.reason, dtype=np.int8),
            np.array(self.start, dtype=float), np.array(self.cold, dtype=bool), np.array(self.service, dtype=float),
        )  # fmt: skip

    def arrive(self, i: int) -> None:
        now = self.engine.now
        last = i + 1 == len(self.times)
        if not last:
            self.engine.schedule(self.times[i + 1], self.arrive, i + 1, priority=ARRIVAL)
        if self.progress and i % _PROGRESS_EVERY == 0:
            self.progress(i / len(self.times))
        self.batches_closed(self.queue.push(Request(id=str(i), arrival=now, payload=i), now))
        self.offer_idle()
        if last and self.queue.next_wakeup() == math.inf:
            # No timer will ever close the last batch: release it with the last arrival.
            self.batches_closed(self.queue.drain(now))
        self.rearm()

    def batches_closed(self, batches: list) -> None:
        for batch in batches:
            k = len(self.size)
            self.first.append(batch.requests[0].payload)
            self.size.append(len(batch.requests))
            self.close.append(batch.closed_at)
            self.reason.append(_REASON_CODE[batch.reason])
            service = self.target.service_s(len(batch.requests))
            self.service.append(service * self.jitter.factor() if self.jitter else service)
            self.start.append(math.nan)
            self.cold.append(False)
            if self.target.slots is None or (self.busy < self.target.slots and not self.waiting):
                self.begin(k)
            else:
                self.waiting.append(k)

    def begin(self, k: int) -> None:
        now = self.engine.now
        self.cold[k], done = self.target.begin(now, self.service[k])
        self.start[k] = now
        if self.target.slots is not None:
            self.busy += 1
            self.engine.schedule(done, self.finished, priority=DONE)

    def finished(self) -> None:
        self.busy -= 1
        if self.waiting:
            self.begin(self.waiting.popleft())
        else:
            self.offer_idle()
            self.rearm()

    def offer_idle(self) -> None:
        """A slot is free and no closed batch waits: the queue may release its open batch
        now (work-conserving limits), as the gateway's runner asks it to."""
        if self.target.slots is not None and self.busy < self.target.slots and not self.waiting:
            self.batches_closed(self.queue.idle(self.engine.now))
