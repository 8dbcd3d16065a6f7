"""simulate(): run a batching policy over arrival times at virtual time, on a simulated target.

Two ways to the same answer:
- the event path serves the arrivals as the gateway would (`sim.served`: the gateway's
  own dispatch core, request by request, on the discrete-event engine), with no
  deadlines and no admission; it runs any policy, on any target;
- the fast path, on FaaS (with or without a concurrency limit), for fixed limits or the
  adaptive policy, forms the batches in bulk (`form_batches`; `sim.segments` between the policy's
  changes of limits, and for deadline-aware closing) and computes latencies with numpy.
Both draw the same jitter, keep warm environments the same way and bill with the same
formula, so they agree exactly; the tests hold them to it.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from batching import BatchPolicy, FixedPolicy, NoBatchingPolicy
from batching.formation import form_batches

from scheduler import KeepWarmPolicy, WarmEnvironments

from .segments import follows_arrivals, form_by_runs, limit_runs
from .served import Serving, simulate_served
from .profiles import ServiceProfile, resolved_memory
from .results import SimResult

TARGETS = ("faas", "pool")
PATHS = ("auto", "fast", "event")


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
    if constant and target == "pool" and profile.iaas and profile.iaas.max_batch_size is not None:
        if policy.limits(0.0).max_size > profile.iaas.max_batch_size:
            raise ValueError(f"batch size {policy.limits(0.0).max_size} exceeds the pool's max_batch_size {profile.iaas.max_batch_size}")
    # Batches formed in bulk: on FaaS nothing that happens to a batch after it closes feeds
    # back into closing, and the policy's limits change only with the arrivals it is told
    # of (`sim.segments`).
    fast_ok = target == "faas" and follows_arrivals(policy)
    if path == "fast" and not fast_ok:
        raise ValueError("the fast path needs fixed limits or the adaptive policy, on FaaS")
    use_fast = fast_ok and path != "event"
    jitter_draws = _Jitter(jitter, seed) if jitter > 0 else None

    if not use_fast:
        serving = Serving(
            servers=instances if target == "pool" else 0, function=target == "faas", concurrency=concurrency_limit,
            memory_mb=resolved.memory_mb, keep_alive_s=keep_alive_s, warm_environments=warm_environments,
            timeout_s=math.inf, admit_on_slo=False, max_pending=1 << 62, instance_min_billed_s=0.0,
            jitter=jitter, seed=seed, progress=progress,
        )  # fmt: skip
        serving.keep_warm = keep_warm or False
        result = simulate_served(times, policy, profile, serving, slo_s=slo_s)
        result.target, result.instance_hours, result.faas_batches, result.rejected_batches = target, None, None, None
        result.instances_started, result.wall_s = None, time.perf_counter() - began
        if progress:
            progress(1.0)
        return result
    first, size, close, reason, start, cold, service = _fast_path(times, policy, resolved, jitter_draws, progress)
    if progress:
        progress(1.0)

    # Latency = (queue wait + wait for a slot) + overhead + cold start + service, summed
    # in the same order as _Target.begin sums a completion time.
    delay = resolved.overhead_s + np.where(cold, resolved.cold_start_s, 0.0) + service
    batch = np.repeat(np.arange(len(size)), size)
    if len(batch) != len(times) or (len(first) and not np.array_equal(first, np.cumsum(size) - size)):
        raise RuntimeError("batches do not cover the requests once each, in order")
    latency = (start[batch] - times) + delay[batch]
    pings = 0
    cost = float(np.sum(profile.faas_batch_cost(service, resolved.memory_mb))) if len(size) else 0.0
    environments = resolved.environments
    if environments is not None and environments.keep_warm is not None:
        environments.advance(math.inf)  # the pings after the last batch are paid for too
        pings = environments.pings
        cost += pings * float(profile.faas_batch_cost(np.array([environments.ping_s]), resolved.memory_mb)[0])
    return SimResult(
        arrival=times, latency_s=latency, batch=batch, close_time=close, start_time=start,
        size=size, reason=reason, cold=cold, service_s=service, cost_usd=cost,
        wall_s=time.perf_counter() - began, target=target, memory_mb=resolved.memory_mb,
        path="fast", slo_s=slo_s, pings=pings,
    )  # fmt: skip


def _fast_path(
    times: np.ndarray, policy: BatchPolicy, target: _Target, jitter: _Jitter | None,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """On FaaS the batches do not depend on when they run: they are formed in bulk (plain
    fixed limits by `form_batches`, others run by run of the policy's limits), and only
    the invocations loop (over batches): at once, or under the concurrency limit."""
    limits = policy.limits(0.0)
    if type(policy) in (FixedPolicy, NoBatchingPolicy) and not limits.service_s:
        formation = form_batches(times, limits.max_size, limits.max_wait)
    else:
        arrivals = times.tolist()
        formation = form_by_runs(arrivals, limit_runs(policy, arrivals, progress))
    size, close = formation.size, formation.close_time
    service = target.service_s(size) if len(size) else np.zeros(0)
    if jitter:
        service = service * jitter.factors(len(size))
    cold = np.zeros(len(size), dtype=bool)
    start = close
    if target.environments is not None and len(size):
        # Each batch busy for overhead + (cold start) + s(b), summed as `_Target.begin` sums it.
        warm_s = ((target.overhead_s + 0.0) + service).tolist()
        cold_s = ((target.overhead_s + target.cold_start_s) + service).tolist()
        if target.slots is None:
            cold = np.array(target.environments.run_all(close.tolist(), warm_s, cold_s), dtype=bool)
        else:
            start, cold = _in_slots(close.tolist(), warm_s, cold_s, target.slots, target.environments)
    return formation.start, size, close, formation.reason, start, cold, service


def _in_slots(
    close: list[float], warm_s: list[float], cold_s: list[float], slots: int, environments: WarmEnvironments
) -> tuple[np.ndarray, np.ndarray]:
    """Batches under a concurrency limit: each starts, in closing order (the core's backlog
    is first in, first out), when it has closed and one of `slots` invocations has ended
    (the core sends a waiting batch the moment one ends). Start times and cold starts."""
    ends: list[float] = []  # heap: when each running invocation ends
    starts, colds = [0.0] * len(close), [False] * len(close)
    for k, closed_at in enumerate(close):
        now = closed_at
        if len(ends) == slots:
            now = max(now, heapq.heappop(ends))
        cold = environments.acquire(now)
        done = now + (cold_s[k] if cold else warm_s[k])
        environments.release_at(done)
        heapq.heappush(ends, done)
        starts[k], colds[k] = now, cold
    return np.array(starts, dtype=float), np.array(colds, dtype=bool)


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
