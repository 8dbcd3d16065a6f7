"""A progressive rollout with an SLO guard: the decisions, as pure functions of the evidence and `now`.

A rollout moves a model's traffic to a candidate version in steps (5, 25, 50, 100
percent, say). Each step lasts at least `min_step_s` and `min_requests` candidate
requests; then it advances, or, at the last step, promotes the candidate. At any
time the guard may roll it back: all traffic to the stable version at once.

The guard asks whether the candidate is *significantly worse* than the stable
version over the same stretch of time, on two counts, each a one-sided test at
level `alpha` that accounts for both sample sizes:

- errors (5xx answers): the difference of the two error ratios, with Newcombe's
  hybrid score interval (Wilson intervals combined; Newcombe 1998): it holds its
  level with few requests and with no error at all on either side, where a normal
  approximation does not. Worse when the interval's lower end exceeds
  `error_tolerance`.
- latency at the model's SLO percentile p: with L = (1 + latency_tolerance) times
  an upper confidence bound on the stable version's p-quantile (an order statistic:
  distribution-free, and it widens when the stable sample is small), a candidate no
  worse answers at most a share 1 - p of its requests above L. The count above L is
  binomial; worse when an exact binomial test rejects that share (the test reads
  the percentile the SLO is about, not the mean). A candidate several times slower
  is caught within its first few dozen requests.

A step ends only once it has its minimums and the candidate is not worse even at
the looser level `hold_alpha`; in between, the rollout holds the step. Judging
every tick peeks at the data again and again: `alpha` is kept small (0.01) for
that reason. An optional shadow floor rolls back when the candidate, shadowed
beforehand, agreed with the stable's top class on too few rows.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

STATES = ("running", "promoted", "rolled_back", "aborted")


@dataclass(frozen=True)
class Guard:
    error_tolerance: float = 0.01  # the candidate's error ratio may exceed the stable's by this much
    latency_tolerance: float = 0.10  # and its latency at the SLO percentile by this fraction
    alpha: float = 0.01  # the level at which "worse" rolls back
    hold_alpha: float = 0.05  # the level at which "perhaps worse" holds a step
    min_samples: int = 20  # candidate requests before any judgement
    shadow_agreement: float | None = None  # least share of rows agreeing on the top class, when shadowed

    def check(self) -> None:
        if not (0 <= self.error_tolerance < 1 and self.latency_tolerance >= 0 and 0 < self.alpha <= self.hold_alpha < 1):
            raise ValueError("guard: error_tolerance in [0, 1), latency_tolerance >= 0, 0 < alpha <= hold_alpha < 1")
        if self.min_samples < 1 or (self.shadow_agreement is not None and not 0 <= self.shadow_agreement <= 1):
            raise ValueError("guard: min_samples >= 1 and shadow_agreement in [0, 1]")


@dataclass(frozen=True)
class Evidence:
    """One version's answers over a stretch of time."""

    requests: int
    errors: int
    latencies_s: np.ndarray  # of its successful answers

    def summary(self, percentile: float) -> dict:
        lat = self.latencies_s
        return {"requests": self.requests, "errors": self.errors,
                "error_ratio": round(self.errors / self.requests, 6) if self.requests else None,
                "latency_ms_at_percentile": round(float(np.quantile(lat, percentile)) * 1e3, 3) if len(lat) else None}  # fmt: skip


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def error_excess_lower_bound(stable: Evidence, candidate: Evidence, alpha: float) -> float:
    """Newcombe's lower confidence bound (one-sided, level alpha) on p_candidate - p_stable."""
    z = NormalDist().inv_cdf(1 - alpha)
    pc = candidate.errors / candidate.requests if candidate.requests else 0.0
    ps = stable.errors / stable.requests if stable.requests else 0.0
    lc, _ = wilson(candidate.errors, candidate.requests, z)
    _, us = wilson(stable.errors, stable.requests, z)
    return (pc - ps) - math.sqrt((pc - lc) ** 2 + (us - ps) ** 2)


def binomial_tail(k: int, n: int, q: float) -> float:
    """P(X >= k) for X ~ Binomial(n, q)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    from scipy.special import bdtrc  # scipy loads only once a rollout judges

    return float(bdtrc(k - 1, n, q))


def quantile_upper_bound(sample: np.ndarray, p: float, alpha: float) -> float:
    """A distribution-free upper confidence bound (level alpha) on the p-quantile: the
    j-th smallest value, with j the least order whose binomial(n, p) CDF reaches 1 - alpha;
    infinite where the sample is too small to bound it."""
    n = len(sample)
    from scipy.special import bdtr

    j = next((j for j in range(int(n * p), n + 1) if bdtr(j - 1, n, p) >= 1 - alpha), None) if n else None
    return float(np.partition(sample, j - 1)[j - 1]) if j is not None and j >= 1 else math.inf


def latency_excess_pvalue(stable: Evidence, candidate: Evidence, percentile: float, tolerance: float,
                          alpha: float) -> tuple[float, float]:  # fmt: skip
    """(p-value of "the candidate answers more than 1 - p of its requests above L", L),
    with L the upper bound (level alpha) of the stable version's p-quantile, times
    1 + tolerance: the stable version's own sample size counts too."""
    if len(candidate.latencies_s) == 0:
        return 1.0, math.nan
    limit = quantile_upper_bound(stable.latencies_s, percentile, alpha) * (1 + tolerance)
    if not math.isfinite(limit):
        return 1.0, limit
    above = int(np.count_nonzero(candidate.latencies_s > limit))
    return binomial_tail(above, len(candidate.latencies_s), 1 - percentile), limit


def worse(stable: Evidence, candidate: Evidence, guard: Guard, percentile: float, alpha: float,
          shadow_agreement: float | None = None) -> list[str]:  # fmt: skip
    """Why the candidate is worse than the stable version at level `alpha` (empty: not shown worse)."""
    reasons = []
    if candidate.requests >= guard.min_samples:
        bound = error_excess_lower_bound(stable, candidate, alpha)
        if bound > guard.error_tolerance:
            reasons.append(f"error ratio: at least {bound:.4f} above the stable version's (tolerance {guard.error_tolerance})")
        pvalue, limit = latency_excess_pvalue(stable, candidate, percentile, guard.latency_tolerance, alpha)
        if pvalue < alpha:
            reasons.append(f"latency: more than {1 - percentile:.3g} of its answers above {limit * 1e3:.1f} ms "
                           f"(the stable p{percentile * 100:g} + {guard.latency_tolerance:.0%}), p = {pvalue:.2g}")  # fmt: skip
    if guard.shadow_agreement is not None and shadow_agreement is not None and shadow_agreement < guard.shadow_agreement:
        reasons.append(f"shadow agreement {shadow_agreement:.4f} below {guard.shadow_agreement}")
    return reasons


@dataclass
class Rollout:
    """One model's rollout of `candidate` over `stable`: its state, step and history."""

    model: str
    candidate: str
    stable: str
    steps: list[float]
    min_step_s: float
    min_requests: int
    percentile: float  # the model's SLO percentile, as a fraction
    guard: Guard = field(default_factory=Guard)
    keep_stable: bool = True  # after promotion: keep the old version loaded, or unload it
    state: str = "running"
    step: int = 0
    step_started: float = 0.0
    started: float = 0.0
    holding: bool = False
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps) or any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError("steps must rise strictly, each in (0, 100]")
        if self.steps[-1] != 100:
            raise ValueError("the last step must be 100 (the candidate takes all traffic)")
        if self.min_step_s < 0 or self.min_requests < 1:
            raise ValueError("min_step_s must be >= 0 and min_requests >= 1")
        if self.candidate == self.stable:
            raise ValueError("the candidate is the stable version")
        self.guard.check()

    def stable_since(self) -> float:
        """From when the stable version's answers are the comparison: the step's start, or,
        at a step that gives the candidate everything, the rollout's."""
        return self.started if self.weight >= 100 else self.step_started

    @property
    def weight(self) -> float:
        """The candidate's share of traffic now, in percent."""
        if self.state == "promoted":
            return 100.0
        return self.steps[self.step] if self.state == "running" else 0.0

    def decide(self, now: float, stable: Evidence, candidate: Evidence, shadow_agreement: float | None = None) -> dict | None:
        """What to do at `now` given the evidence since the step began: a decision
        ({"decision": advance | hold | promote | rollback, ...}) when something changes, else None."""
        if self.state != "running":
            return None
        reasons = worse(stable, candidate, self.guard, self.percentile, self.guard.alpha, shadow_agreement)
        if reasons:
            return self._record(now, "rollback", stable, candidate, reasons)
        if now - self.step_started < self.min_step_s or candidate.requests < self.min_requests:
            return None
        doubts = worse(stable, candidate, self.guard, self.percentile, self.guard.hold_alpha, shadow_agreement)
        if doubts:
            if self.holding:
                return None
            self.holding = True
            return self._record(now, "hold", stable, candidate, doubts)
        return self._record(now, "promote" if self.step == len(self.steps) - 1 else "advance", stable, candidate, [])

    def _record(self, now: float, decision: str, stable: Evidence, candidate: Evidence, reasons: list[str]) -> dict:
        entry = {"decision": decision, "at": now, "step": self.step, "weight": self.weight, "reasons": reasons,
                 "stable": stable.summary(self.percentile), "candidate": candidate.summary(self.percentile)}  # fmt: skip
        if decision == "rollback":
            self.state = "rolled_back"
        elif decision == "promote":
            self.state = "promoted"
        elif decision == "advance":
            self.step += 1
            self.step_started, self.holding = now, False
        entry["weight_after"] = self.weight
        self.history.append(entry)
        return entry

    def abort(self, now: float) -> dict:
        entry = {"decision": "abort", "at": now, "step": self.step, "weight": self.weight, "reasons": ["aborted"]}
        self.state = "aborted"
        entry["weight_after"] = self.weight
        self.history.append(entry)
        return entry

    def to_json(self) -> dict:
        return {"model": self.model, "version": self.candidate, "stable": self.stable, "state": self.state,
                "step": self.step, "steps": self.steps, "weight": self.weight, "min_step_s": self.min_step_s,
                "min_requests": self.min_requests, "guard": asdict(self.guard), "keep_stable": self.keep_stable,
                "last_decision": self.history[-1] if self.history else None, "history": self.history}  # fmt: skip


class Outcomes:
    """A version's recent answers, as the guard reads them: the last `capacity` of
    (time, status, latency). Errors are 5xx and 429 (a version too slow to keep up sheds);
    other 4xx are the client's and do not count."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._answers: deque[tuple[float, int, float]] = deque(maxlen=capacity)

    def record(self, now: float, status: int, latency_s: float) -> None:
        if status < 400 or status >= 500 or status == 429:
            self._answers.append((now, status, latency_s))

    def since(self, start: float) -> Evidence:
        recent = list(itertools.takewhile(lambda a: a[0] >= start, reversed(self._answers)))
        errors = sum(1 for _, status, _ in recent if status >= 429)
        latencies = np.array([latency for _, status, latency in recent if status < 400], dtype=float)
        return Evidence(len(recent), errors, latencies)
