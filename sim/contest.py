"""Hybrid against every baseline at its best, on one member of the family (`sim.family`).

A baseline's knobs are swept on each member and its cheapest setting that meets the SLO
stands for it, so that hybrid is compared with each baseline at its best (issue 15):
- MArk as published (every 60 s, instances for `headroom` x the forecast peak, FaaS for
  what they cannot take in time), `headroom` 1.0, 1.2 (the paper's), 1.5 and 2.0;
- the concurrency-target autoscaler (Ray Serve, Knative), target 0.5, 0.7 and 0.9 batches in
  flight per instance (Knative's default is 70% of the container's concurrency);
- fixed pools of 0.5x to 2x the instances the mean rate fills, FaaS for their overflow;
- FaaS only.

Each run is instrumented (instance-hours and their bill, the function's bill and share of
batches, cold starts, instances started, SLO attainment, and the planner's decision time),
so that a loss can be read off rather than guessed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from batching import Batch, FixedPolicy
from scheduler import FaasOnly, FixedPool, HybridScheduler, Mark, Placement, PoolOnly, PoolPlan, Scheduler, View

from .family import Member
from .scheduled import simulate_scheduled

ATTAINMENT = 0.99  # the SLO is a p99


class Timed:
    """A scheduler whose `plan` calls are timed (wall clock: the benchmark's, not the core's)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name, self.plan_interval_s = inner.name, inner.plan_interval_s
        self.plan_s: list[float] = []

    def place(self, batch: Batch, view: View, now: float) -> Placement:
        return self.inner.place(batch, view, now)

    def plan(self, view: View, now: float) -> PoolPlan:
        began = time.perf_counter()
        plan = self.inner.plan(view, now)
        self.plan_s.append(time.perf_counter() - began)
        return plan

    def observe(self, arrivals: int, now: float) -> None:
        self.inner.observe(arrivals, now)


@dataclass
class Run:
    member: str
    scheduler: str  # "hybrid", "mark", "autoscaler", "fixed", "faas-only"
    setting: str
    cost_usd: float
    attainment: float
    p99_ms: float
    instance_hours: float
    instance_usd: float
    faas_usd: float
    faas_batch_share: float
    cold_starts: int
    instances_started: int
    requests: int
    plan_ms_max: float
    plan_ms_median: float
    wall_s: float

    @property
    def meets(self) -> bool:
        return self.attainment >= ATTAINMENT

    def as_dict(self) -> dict:
        return asdict(self)


FILLS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # fixed pools: these times the instances the mean rate fills
HEADROOMS = (1.0, 1.2, 1.5, 2.0)  # MArk's
TARGETS = (0.5, 0.7, 0.9)  # the autoscaler's batches in flight per instance


def fixed_size(member: Member, fill: float) -> int:
    """The fixed pool of `fill` times the instances the member's mean rate fills
    (`Member.busy_at_mean`)."""
    return max(1, math.ceil(member.busy_at_mean * fill))


def rules(member: Member) -> list[tuple[str, str, str, Callable[[], Scheduler]]]:
    """(scheduler, rule, setting, factory) for every baseline rule: the rule is the knob as a
    user sets it once for every member (a fixed pool: a fill of the mean rate), the setting
    what it is on `member` (a fixed pool: its size)."""
    grid: list[tuple[str, str, str, Callable[[], Scheduler]]] = [("faas-only", "-", "-", FaasOnly)]
    grid += [("mark", f"headroom {h}", f"headroom {h}", lambda h=h: Mark(headroom=h)) for h in HEADROOMS]
    grid += [("autoscaler", f"target {t}", f"target {t}", lambda t=t: PoolOnly(target_inflight=t)) for t in TARGETS]
    grid += [("fixed", f"{f}x the mean rate's fill", f"{n} instances", lambda n=n: FixedPool(n))
             for f, n in ((f, fixed_size(member, f)) for f in FILLS)]  # fmt: skip
    return grid


def baselines(member: Member) -> list[tuple[str, str, Callable[[], Scheduler]]]:
    """(scheduler, setting, factory) for every baseline setting swept on `member` (each once:
    two fills may give one size)."""
    settings = {(name, setting): make for name, _, setting, make in rules(member)}
    return [(name, setting, make) for (name, setting), make in settings.items()]


def run(member: Member, scheduler: str, setting: str, make: Callable[[], Scheduler]) -> Run:
    """One scheduler on the member's traffic, pool and function."""
    timed = Timed(make())
    began = time.perf_counter()
    result = simulate_scheduled(
        member.arrivals(), FixedPolicy(member.batch_size, member.timeout_s), member.profile(), timed,
        slo_s=member.slo_s, memory_mb=member.memory_mb, instance_min_billed_s=member.min_billed_s,
    )  # fmt: skip
    s = result.summary()
    price_per_h = member.profile_dict()["iaas"]["price_per_hour"]
    instance_usd = s["instance_hours"] * price_per_h
    plans = sorted(timed.plan_s) or [0.0]
    return Run(
        member=member.name, scheduler=scheduler, setting=setting, cost_usd=s["cost_usd"],
        attainment=s["slo_attainment"], p99_ms=s["latency_ms"]["p99"], instance_hours=s["instance_hours"],
        instance_usd=instance_usd, faas_usd=s["cost_usd"] - instance_usd, faas_batch_share=s["faas_share"],
        cold_starts=s["cold_starts"], instances_started=s["instances_started"], requests=s["requests"],
        plan_ms_max=plans[-1] * 1e3, plan_ms_median=plans[len(plans) // 2] * 1e3, wall_s=time.perf_counter() - began,
    )  # fmt: skip


@dataclass
class Verdict:
    """Hybrid's run against the cheapest SLO-meeting baseline setting on one member."""

    member: str
    hybrid: Run
    best: Run | None  # None: no baseline met the SLO
    best_of: dict[str, Run]  # per baseline, its cheapest setting that met the SLO

    @property
    def ratio(self) -> float:
        """Hybrid's cost over the best baseline's; inf when hybrid misses the SLO."""
        if not self.hybrid.meets:
            return math.inf
        return self.hybrid.cost_usd / self.best.cost_usd if self.best is not None else 0.0

    @property
    def mixed(self) -> bool:
        """Pool and function both carry a real part of the cheapest plan's bill (5% or more)."""
        run = self.best if self.best is not None and self.best.cost_usd < self.hybrid.cost_usd else self.hybrid
        return min(run.instance_usd, run.faas_usd) >= 0.05 * run.cost_usd


def verdict(runs: list[Run]) -> Verdict:
    hybrid = next(r for r in runs if r.scheduler == "hybrid")
    best_of: dict[str, Run] = {}
    for r in runs:
        if r.scheduler != "hybrid" and r.meets and (r.scheduler not in best_of or r.cost_usd < best_of[r.scheduler].cost_usd):
            best_of[r.scheduler] = r
    best = min(best_of.values(), key=lambda r: r.cost_usd, default=None)
    return Verdict(hybrid.member, hybrid, best, best_of)


def contest(member: Member, hybrid: Callable[[], Scheduler] = HybridScheduler) -> Verdict:
    """Hybrid and every baseline setting on `member`, one after the other (the benchmark runs them in parallel)."""
    runs = [run(member, "hybrid", "-", hybrid)]
    runs += [run(member, name, setting, make) for name, setting, make in baselines(member)]
    return verdict(runs)


class StepHybrid(HybridScheduler):
    """The hybrid planner before issue 15 (10 s rates, the M/D/1 utilisation): `--hybrid sim.contest:StepHybrid`."""

    def __init__(self) -> None:
        super().__init__(lookback=False)


class FirstPool(HybridScheduler):
    """The hybrid planner whose first pool (provisioned before any traffic) is `count`, the
    best fixed count in hindsight; every later plan its own. Not a scheduler anyone can run;
    it measures what the first pool, chosen from one minute of traffic, costs."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def plan(self, view: View, now: float) -> PoolPlan:
        plan = super().plan(view, now)
        if self._step_end is None:  # no traffic seen yet: the provisioning plan
            live = len(view.live)
            return PoolPlan(self.count, start=max(0, self.count - live))
        return plan


def best_fixed(runs: list[Run], member: str) -> int:
    """The size of the cheapest fixed pool that met the SLO on `member` (0: none did)."""
    fixed = [r for r in runs if r.member == member and r.scheduler == "fixed" and r.meets]
    return int(min(fixed, key=lambda r: r.cost_usd).setting.split()[0]) if fixed else 0


class Oracle(HybridScheduler):
    """The hybrid planner told the future: its replay runs over the expected rates of the
    seconds a pool started now would serve (`Member.rates`), not over the past. Not a
    scheduler anyone can run; a bound on what forecasting better could buy."""

    def __init__(self, rates: np.ndarray, ahead_s: float = 300.0) -> None:
        super().__init__()
        self.rates, self.ahead_s = rates, ahead_s
        self._now = 0.0

    def plan(self, view: View, now: float) -> PoolPlan:
        self._now = now
        return super().plan(view, now)

    def watched_enough(self) -> bool:
        return True

    def in_hindsight(self, view: View, moving: int, now: float) -> int:
        return moving  # it knows what comes: no need to look back

    def second_samples(self, view: View) -> np.ndarray:
        first = int(self._now + view.startup_s)
        return self.rates[first : first + int(self.ahead_s)]

    def wanted(self, view: View) -> int:
        if view.pool_service is None or view.faas_service is None:
            return super().wanted(view)
        return self.replayed(view, view.pool_service(max(1, view.batch_size)))


@dataclass
class Rule:
    """One baseline at one setting for every member (a fixed pool: one fill of the mean rate),
    as a user who cannot tune it on each member's future would run it."""

    scheduler: str
    setting: str
    meets: int  # members where it met the SLO
    members: int
    median: float | None  # hybrid's cost over its, where both met the SLO
    worst: float | None
    hybrid_cheaper: int  # members where both met it and hybrid cost no more


def one_setting(members: list[Member], runs: list[Run]) -> list[Rule]:
    """Hybrid against each baseline at each single setting across `members`."""
    found = {(r.member, r.scheduler, r.setting): r for r in runs if r.scheduler != "hybrid"}
    hybrid = {r.member: r for r in runs if r.scheduler == "hybrid"}
    settings = {m.name: [setting for _, _, setting, _ in rules(m)] for m in members}
    table = []
    for k, (name, label, _, _) in enumerate(rules(members[0]) if members else []):
        pairs = [(hybrid[m.name], found.get((m.name, name, settings[m.name][k]))) for m in members]
        met = [(h, b) for h, b in pairs if b is not None and b.meets]
        ratios = [h.cost_usd / b.cost_usd if h.meets else math.inf for h, b in met]
        table.append(Rule(name, label, len(met), len(pairs), float(np.median(ratios)) if ratios else None,
                          max(ratios, default=None), sum(r <= 1.0 for r in ratios)))  # fmt: skip
    return table
