"""Forecasting the arrival rate a pool must be ready for: cheap, online, one number in, one out.

Each forecaster is fed the request count of consecutive intervals of `step_s`
seconds (`update(count)`) and answers the expected rate `horizon_s` ahead
(`forecast(horizon_s)`) and its recent error (`spread`, one standard deviation of
the one-step errors, requests/s), which the planner uses as a margin.

- `Ewma`: a level only (no trend): steady traffic.
- `Holt`: level and trend (double exponential smoothing): ramps.
- `Seasonal`: Holt plus an additive daily (or any period) profile, learned per
  slot of the period (Holt-Winters): diurnal traffic, the morning ramp seen coming.
- `Trend`: a straight line through the last few minutes, fitted robustly
  (repeated medians): ramps, without being lifted or tilted by the bursts in the window.

And the spread the hybrid planner adds to a forecast: all the recent variation
(`steady_spread`), or only what bursts added (`burst_spread`), and the overflow they
leave a pool (`expected_overflow`).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
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


def robust_line(values: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of the line through (i, values[i]) by repeated medians (Siegel):
    for each point the median of its slopes to the others, then the median of those; the
    intercept is the median of what is left. Unlike least squares (or one median over all
    pairs, Theil-Sen), a burst of a few points at the newest end does not tilt it."""
    n = len(values)
    if n < 2:
        return (values[0] if values else 0.0), 0.0
    slope = statistics.median(
        statistics.median((values[j] - values[i]) / (j - i) for j in range(n) if j != i) for i in range(n)
    )
    return statistics.median(v - slope * i for i, v in enumerate(values)), slope


@dataclass
class Trend:
    """A robust line through the last `window` steps' rates, extended `horizon_s` ahead.

    For sizing a pool: the line follows a ramp as soon as it has lasted a few steps (an
    EWMA lags it by about 1/alpha steps), while a burst in the window, over before an
    instance could start, neither lifts nor tilts it. With fewer than `min_trend_steps`
    steps the line is flat (too few to see a slope)."""

    step_s: float = 10.0
    window: int = 12
    min_trend_steps: int = 6
    rates: deque[float] = field(default_factory=deque)

    def update(self, count: int) -> None:
        self.rates.append(count / self.step_s)
        while len(self.rates) > self.window:
            self.rates.popleft()

    def fit(self) -> tuple[float, float]:
        """(level at the newest step, slope per step)."""
        values = list(self.rates)
        if len(values) < self.min_trend_steps:
            return (statistics.median(values) if values else 0.0), 0.0
        intercept, slope = robust_line(values)
        return intercept + slope * (len(values) - 1), slope

    @property
    def level(self) -> float | None:
        return self.fit()[0] if self.rates else None

    def forecast(self, horizon_s: float) -> float:
        # The newest step's rate is its middle's, half a step before now.
        level, slope = self.fit()
        return max(0.0, level + slope * (0.5 + horizon_s / self.step_s))

    @property
    def spread(self) -> float:
        """The root mean square of what the line does not explain (bursts, mostly)."""
        level, slope = self.fit()
        n = len(self.rates)
        errors = [r - (level - slope * (n - 1 - i)) for i, r in enumerate(self.rates)]
        return math.sqrt(sum(e * e for e in errors) / n) if n else 0.0


FORECASTERS = {"ewma": Ewma, "holt": Holt, "seasonal": Seasonal, "trend": Trend}


# -- the spread added to a forecast (the hybrid planner's two views, `scheduler.hybrid`)


def expected_overflow(level: float, spread: Sequence[float], capacity: float) -> float:
    """E[(X - capacity)+] for X the forecast level plus each of the recent steps' spread:
    bursts count as often and as high as they came, not as a symmetric spread."""
    if not spread:
        return max(0.0, level - capacity)
    return sum(max(0.0, level + e - capacity) for e in spread) / len(spread)


def steady_spread(rates: Sequence[float]) -> list[float]:
    """Each step's rate less the steps' mean: all the recent variation is spread."""
    mean = sum(rates) / len(rates) if rates else 0.0
    return [r - mean for r in rates]


def burst_spread(rates: Sequence[float], half: int = 4) -> list[float]:
    """Each step's rate less the median of the steps around it (`half` each side): what a
    burst added to it. A ramp, or a change that lasts, leaves next to nothing."""
    return [r - statistics.median(rates[max(0, i - half) : i + half + 1]) for i, r in enumerate(rates)]
