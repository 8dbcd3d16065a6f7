"""The SLO-adaptive batching policy: (B, T) re-tuned from the traffic seen, continuously.

It watches every arrival through an `ArrivalEstimator`, and every `retune_s` (or
at once after the estimator detects a change) refits the arrival model
(`fit_arrivals`) and runs the tuner. A re-tune is skipped while the traffic's rate,
SCV and correlation stay close to those of the window last tuned for, so steady
traffic costs almost nothing.

Tuning is split so that the gateway can keep it off its event loop: `plan(now)`
(cheap: is a re-tune due? then the window's gaps), `solve(gaps)` (pure: the fit and
the tuner, tens of milliseconds; the gateway runs it in its solver process) and
`apply(solved, now)`. With `inline=True` (the simulator's way) `observe_arrival`
runs all three itself, at virtual time.

On a server pool (`work_conserving=True`) there is nothing to trade: the instances
are paid for whether they run or idle, so holding a request back to fill a batch only
spends the user's latency. The policy then releases a batch whenever an instance is
free (`BatchLimits.work_conserving`), and batches grow with the load by themselves:
while every instance is busy, arrivals gather into the next batch. What is left to
choose is the largest batch the SLO allows (`pool_batch_limit`), which bounds the
wait of a request that arrives just after a full batch started, and, at high load
only, how far a thin batch is held back from a free instance (`pool_hold`, from the
measured rate). No tuner runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .arrivals import MAP
from .arrival_fits import fit_arrivals
from .coldtune import Warmth, tune_with_cold_starts
from .estimator import ArrivalEstimator
from .fitting import FitResult, describe
from .policy import BatchLimits
from .tuner import Choice, Target, TuneResult, tune_coarse_to_fine


def pool_hold(service_s: Sequence[float], rate: float, utilization: float, max_size: int, slack_s: float) -> tuple[int, float]:
    """How far a work-conserving pool holds the open batch back at arrival `rate`: the
    fewest rows b (up to `max_size`) whose batches keep an instance busy at most
    `utilization` of the time (rate x s(b) / b) or, where none does, come within 10% of
    the cheapest rows; and the expected time to gather them, at most `slack_s`. At low
    load that is (1, 0.0): every request goes at once. The instances and the gateway
    share the machine's CPU, and each batch costs both of them a hop: batches of one
    row at high load would take the CPU that fuller ones leave free."""
    if rate <= 0:
        return 1, 0.0
    per_row = [float(service_s[b - 1]) / b for b in range(1, max_size + 1)]
    # Where no batch gets there (a model batching barely helps), the fewest rows within
    # 10% of the cheapest per row: holding longer would cost latency for next to nothing.
    enough = max(utilization / rate, 1.1 * min(per_row))
    rows = next(b for b, cost in enumerate(per_row, start=1) if cost <= enough)
    return rows, min((rows - 1) / rate, max(0.0, slack_s))


def pool_batch_limit(service_s: Sequence[float], overhead_s: float, budget_s: float) -> int:
    """The largest batch size b (at least 1) that a work-conserving pool may form within
    `budget_s`: a request that arrives just after a batch of b started waits for it, then
    for its own batch of up to b, so 2 s(b) + overhead must fit. Capacity grows with b,
    so this is also the configuration that serves the most within the SLO."""
    best = 1
    for b, s in enumerate(service_s, start=1):
        if 2.0 * float(s) + overhead_s <= budget_s:
            best = b
    return best


@dataclass(frozen=True)
class Solved:
    """A re-tune's outcome: the arrival model fitted to the window, the tuner's result for
    it, and the per-target cold-start probabilities it was tuned with."""

    fit: FitResult
    result: TuneResult
    cold: tuple[float, ...] = ()


class AdaptivePolicy:
    name = "adaptive"

    def __init__(
        self,
        targets: Sequence[Target],
        slo_s: float,
        percentile: float,
        *,
        estimator: ArrivalEstimator | None = None,
        retune_s: float = 5.0,
        initial: BatchLimits = BatchLimits(1, 0.0),
        inline: bool = True,
        rate_tolerance: float = 0.05,
        shape_tolerance: float = 0.2,
        headroom: float = 0.03,
        deadline_aware: bool = True,
        work_conserving: bool = False,
        utilization: float = 0.5,
        warmth: Warmth | None = None,
    ) -> None:
        if not 0 < percentile < 1 or slo_s <= 0:
            raise ValueError("need 0 < percentile < 1 and a positive SLO")
        self.targets, self.slo_s, self.percentile = list(targets), slo_s, percentile
        self.estimator = estimator or ArrivalEstimator()
        self.retune_s, self.inline = retune_s, inline
        self.rate_tolerance, self.shape_tolerance = rate_tolerance, shape_tolerance
        # The model is exact for the traffic it is given; the traffic it is given is an
        # estimate. Tuning for a slightly tighter SLO absorbs that error.
        self.headroom = headroom
        # Deadline-aware closing for the tuned SLO: a batch about to make its oldest
        # request late is released early (`BatchLimits`), and the tuner models that.
        self.deadline_aware = deadline_aware
        self.allowance_s = 0.0  # measured lateness beyond the targets' predictions (`OverrunTracker`)
        self.work_conserving = work_conserving
        self.utilization = utilization  # a work-conserving pool's instances: busy at most this
        # On a function with cold starts, the provider's keep-alive and concurrency: each
        # solve then tunes with the cold-start probability its choice meets (`batching.coldtune`).
        self.warmth = warmth
        self.cold: tuple[float, ...] = ()  # the probabilities of the last solve, per target
        self._hold: tuple[int, float] = (1, 0.0)  # its (idle_rows, hold_s) for the measured rate
        self._limits = initial
        self.choice: Choice | None = None
        self.tuned_for: MAP | None = None  # the fitted arrival model of the last re-tune
        self._tuned_stats: dict[str, float] | None = None  # and its window's rate, SCV, acf1
        self.retunes = 0
        self._next_check = -math.inf
        self._changes_seen = 0
        if work_conserving:
            if len(self.targets) != 1:
                raise ValueError("a work-conserving policy serves one pool: give exactly one target")
            self.choice = self._pool_choice()
            self._limits = self._limits_for(self.choice)

    # -- what the queue asks ----------------------------------------------------

    def limits(self, now: float) -> BatchLimits:
        return self._limits

    def observe_arrival(self, now: float) -> None:
        self.estimator.observe(now)
        if self.inline:
            gaps = self.plan(now)
            if gaps is not None:
                self.apply(self.solve(gaps), now)

    def observe_arrivals(self, times: np.ndarray) -> int:
        """Tell of sorted arrivals as `observe_arrival` one by one would, up to and including
        the first at which a re-tune may happen (its check is due, or the estimator raised
        an alarm); how many were told. The simulator's bulk path: before that arrival
        `plan` does nothing, so the estimator takes them in bulk (`observe_many`)."""
        changes = self.estimator.changes
        if not self.inline:
            return self.estimator.observe_many(times)
        if changes != self._changes_seen or not times[0] < self._next_check:
            self.observe_arrival(float(times[0]))
            return 1
        told = self.estimator.observe_many(times[: int(np.searchsorted(times, self._next_check, side="left"))])
        if self.estimator.changes != changes:  # the last one told raised the alarm: plan there
            now = float(times[told - 1])
            gaps = self.plan(now)
            if gaps is not None:
                self.apply(self.solve(gaps), now)
        return told

    # -- re-tuning, in three steps ----------------------------------------------

    def plan(self, now: float) -> np.ndarray | None:
        """The window's gaps to tune for, when a re-tune is due and the traffic has moved;
        else None. Never on a work-conserving pool: its batches follow the load without
        a tuner; its hold (`pool_hold`) is refreshed here from the measured rate, every
        second at most."""
        changed = self.estimator.changes != self._changes_seen
        if now < self._next_check and not changed:
            return None
        self._next_check = now + (min(self.retune_s, 1.0) if self.work_conserving else self.retune_s)
        self._changes_seen = self.estimator.changes
        if self.work_conserving:
            self._refresh_hold(now)
            return None
        gaps = self.estimator.gaps(now)
        if gaps is None:
            return None
        if self._tuned_stats is not None and not changed and self._close(describe(gaps), self._tuned_stats, len(gaps) + 1):
            return None
        return gaps

    def solve(self, gaps: np.ndarray) -> Solved:
        """Pure: fit the arrivals and run the tuner. Safe to call in another process."""
        fit = fit_arrivals(gaps)
        slo = self.tuning_slo_s
        targets = [replace(t, overhead_s=t.overhead_s + self.allowance_s) for t in self.targets]
        hint = self.choice.timeout_s if self.choice is not None and self.choice.batch_size > 1 else None

        def search(with_cold: list[Target]) -> TuneResult:
            return tune_coarse_to_fine(fit.map, with_cold, slo, self.percentile, deadline_s=slo if self.deadline_aware else None,
                                       hint_s=hint)  # fmt: skip

        if self.warmth is None:
            return Solved(fit, search(targets))
        result, cold = tune_with_cold_starts(search, fit.map, targets, self.warmth, start=self.cold or None)
        return Solved(fit, result, tuple(cold))

    @property
    def tuning_slo_s(self) -> float:
        return self.slo_s * (1 - self.headroom)

    def apply(self, solved: Solved, now: float) -> None:
        """Take the tuner's choice (or, if the SLO cannot be met, the lowest-latency one)
        for the traffic it was solved for."""
        chosen = solved.result.choice or solved.result.fallback
        if chosen is None:
            return
        self.choice = chosen
        self._limits = self._limits_for(chosen)
        self.tuned_for = solved.fit.map
        self._tuned_stats = solved.fit.target
        self.cold = solved.cold
        self.retunes += 1

    def _pool_choice(self) -> Choice:
        """The work-conserving choice: the largest batch the SLO allows, the measured
        allowance counted once on top (it is lateness per answer, not per batch); its
        wait bounded by the SLO."""
        target = self.targets[0]
        extra = target.overhead_s + self.allowance_s
        size = pool_batch_limit(target.service_s, extra, self.tuning_slo_s)
        return Choice(
            size, self.tuning_slo_s, target, latency_s=2.0 * float(target.service_s[size - 1]) + extra,
            cost_per_request=float(target.batch_cost[size - 1]) / size, mean_batch_size=float(size),
        )  # fmt: skip

    def _refresh_hold(self, now: float) -> None:
        if self.choice is None:
            return
        target, size = self.choice.target, self.choice.batch_size
        slack = self.tuning_slo_s - self.choice.latency_s  # what the largest batch leaves of the SLO
        hold = pool_hold(target.service_s, self.estimator.rate(now), self.utilization, size, slack)
        if hold != self._hold:
            self._hold = hold
            self._limits = self._limits_for(self.choice)

    def _limits_for(self, chosen: Choice) -> BatchLimits:
        if self.work_conserving:
            service = self.predicted_service(chosen) if self.deadline_aware else ()
            deadline = self.tuning_slo_s if self.deadline_aware else None
            rows, hold = self._hold
            return BatchLimits(chosen.batch_size, chosen.timeout_s, service, deadline, work_conserving=True,
                               idle_rows=min(rows, chosen.batch_size), hold_s=hold)  # fmt: skip
        timeout = math.floor(chosen.timeout_s * 1e6) / 1e6
        if not self.deadline_aware:
            return BatchLimits(chosen.batch_size, timeout)
        return BatchLimits(chosen.batch_size, timeout, self.predicted_service(chosen), self.tuning_slo_s)

    def predicted_service(self, chosen: Choice | None = None) -> tuple[float, ...]:
        """Close-to-answer times by batch size on the chosen target (by name: the solve
        may have added an allowance to its copy): s(b), its overhead, and the measured
        allowance. Empty before the first choice."""
        chosen = chosen or self.choice
        if chosen is None:
            return ()
        base = next(t for t in self.targets if t.name == chosen.target.name)
        return tuple(float(s) + base.overhead_s + self.allowance_s for s in base.service_s)

    def base_service(self, rows: int) -> float:
        """The prediction without the allowance: what overruns are measured against."""
        service = self.predicted_service()
        return service[min(rows, len(service)) - 1] - self.allowance_s if service else 0.0

    def allow(self, allowance_s: float) -> None:
        """Take a new measured allowance: at once for deadline-aware closing, and in the
        next solve for the tuner."""
        self.allowance_s = max(0.0, allowance_s)
        if self.work_conserving:
            self.choice = self._pool_choice()
        if self.choice is not None:
            self._limits = self._limits_for(self.choice)

    def _close(self, seen: dict[str, float], tuned: dict[str, float], samples: int) -> bool:
        """Is the traffic (rate, SCV, lag-1 correlation of the window's gaps) within
        estimation noise of the window tuned for? A window of n arrivals pins the rate
        to about 1/sqrt(n), and the SCV and correlation far more loosely; without this,
        sparse traffic would re-tune on noise alone."""
        noise = 3.0 / math.sqrt(max(samples, 1))

        def near(a: float, b: float, tolerance: float) -> bool:
            return abs(a - b) <= max(tolerance, noise) * max(abs(b), 1e-9)

        return (
            near(seen["rate"], tuned["rate"], self.rate_tolerance)
            and near(seen["scv"], tuned["scv"], self.shape_tolerance * 2 if samples < 1000 else self.shape_tolerance)
            and abs(seen["acf1"] - tuned["acf1"]) <= max(self.shape_tolerance / 2, noise)
        )

    def __repr__(self) -> str:
        return f"AdaptivePolicy(slo_s={self.slo_s}, percentile={self.percentile}, limits={self._limits})"
