"""Forecasting the arrival rate a pool must be ready for: cheap, online, one number in, one out.

Each forecaster is fed the request count of consecutive intervals of `step_s`
seconds (`update(count)`) and answers the expected rate `horizon_s` ahead
(`forecast(horizon_s)`) and its recent error (`spread`, one standard deviation of
the one-step errors, requests/s), which the planner uses as a margin.

- `Ewma`: a level only (no trend): steady traffic.
- `Holt`: level and trend (double exponential smoothing): ramps.
- `Seasonal`: Holt plus an additive daily (or any period) profile, learned per
  slot of the period (Holt-Winters): diurnal traffic, the morning ramp seen coming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class _ErrorTracker:
    """Exponentially weighted variance of one-step forecast errors."""

    alpha: float = 0.1
    variance: float = 0.0
    seen: int = 0

    def add(self, error: float) -> None:
        self.seen += 1
        weight = max(self.alpha, 1.0 / self.seen)
        self.variance = (1 - weight) * self.variance + weight * error * error

    @property
    def spread(self) -> float:
        return math.sqrt(self.variance)


@dataclass
class Ewma:
    step_s: float = 10.0
    alpha: float = 0.3
    level: float | None = None
    errors: _ErrorTracker = field(default_factory=_ErrorTracker)

    def update(self, count: int) -> None:
        rate = count / self.step_s
        if self.level is None:
            self.level = rate
            return
        self.errors.add(rate - self.level)
        self.level += self.alpha * (rate - self.level)

    def forecast(self, horizon_s: float) -> float:
        return max(0.0, self.level or 0.0)

    @property
    def spread(self) -> float:
        return self.errors.spread


@dataclass
class Holt:
    step_s: float = 10.0
    alpha: float = 0.3
    beta: float = 0.1
    level: float | None = None
    trend: float = 0.0
    errors: _ErrorTracker = field(default_factory=_ErrorTracker)

    def update(self, count: int) -> None:
        rate = count / self.step_s
        if self.level is None:
            self.level = rate
            return
        predicted = self.level + self.trend
        self.errors.add(rate - predicted)
        level = predicted + self.alpha * (rate - predicted)
        self.trend += self.beta * (level - self.level - self.trend)
        self.level = level

    def forecast(self, horizon_s: float) -> float:
        if self.level is None:
            return 0.0
        return max(0.0, self.level + self.trend * horizon_s / self.step_s)

    @property
    def spread(self) -> float:
        return self.errors.spread


@dataclass
class Seasonal:
    """Holt on the deseasonalised rate, plus a profile per slot of `period_s`."""

    step_s: float = 60.0
    period_s: float = 86400.0
    alpha: float = 0.3
    beta: float = 0.05
    gamma: float = 0.2
    holt: Holt | None = None
    profile: dict[int, float] = field(default_factory=dict)
    steps: int = 0

    def __post_init__(self) -> None:
        if self.holt is None:
            self.holt = Holt(self.step_s, self.alpha, self.beta)

    def _slot(self, step: int) -> int:
        return step % max(1, round(self.period_s / self.step_s))

    def update(self, count: int) -> None:
        holt = self.holt
        assert holt is not None
        rate = count / self.step_s
        slot = self._slot(self.steps)
        season = self.profile.get(slot, 0.0)
        holt.update(round((rate - season) * self.step_s))
        base = holt.level or 0.0
        self.profile[slot] = season + self.gamma * (rate - base - season) if slot in self.profile else rate - base
        self.steps += 1

    def forecast(self, horizon_s: float) -> float:
        holt = self.holt
        assert holt is not None
        ahead = max(0, round(horizon_s / self.step_s))
        return max(0.0, holt.forecast(horizon_s) + self.profile.get(self._slot(self.steps + ahead), 0.0))

    @property
    def spread(self) -> float:
        assert self.holt is not None
        return self.holt.spread


FORECASTERS = {"ewma": Ewma, "holt": Holt, "seasonal": Seasonal}
