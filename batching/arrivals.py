"""Arrival processes: Markovian Arrival Processes (MAPs) and their standard quantities.

A MAP of order n is a pair of n x n matrices (D0, D1): D1 holds the rates of
transitions that bring an arrival, D0 those that do not (its diagonal makes each
row of D0 + D1 sum to zero). Poisson is the MAP of order 1 (D0 = [-r], D1 = [r]);
a 2-phase Markov-modulated Poisson process (MMPP(2)) is a MAP(2) with a diagonal D1.
MAPs capture what matters for batching: the rate, the burstiness (squared
coefficient of variation of the gaps, SCV) and the correlation between
successive gaps, and they keep the latency model exact and cheap.

Formulas (Neuts; Horvath and Telek's MAP moments): with M = (-D0)^-1,
P = M D1 (the phase chain embedded at arrivals) and pi its stationary vector,
  E[X^k] = k! pi M^k 1,   E[X_0 X_k] = pi M P^k M 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

_TOL = 1e-9


def _stationary(generator_or_stochastic: np.ndarray, stochastic: bool) -> np.ndarray:
    """The probability vector x with x A = 0 (generator) or x A = x (stochastic)."""
    a = generator_or_stochastic - np.eye(len(generator_or_stochastic)) if stochastic else generator_or_stochastic
    n = len(a)
    lhs = np.vstack([a.T, np.ones(n)])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    x, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    x = np.clip(x, 0.0, None)
    return x / x.sum()


@dataclass(frozen=True, eq=False)
class MAP:
    """A Markovian Arrival Process given by (D0, D1), rates per second."""

    D0: np.ndarray
    D1: np.ndarray

    def __post_init__(self) -> None:
        d0 = np.array(self.D0, dtype=float, ndmin=2)
        d1 = np.array(self.D1, dtype=float, ndmin=2)
        object.__setattr__(self, "D0", d0)
        object.__setattr__(self, "D1", d1)
        n = len(d0)
        if d0.shape != (n, n) or d1.shape != (n, n):
            raise ValueError(f"D0 and D1 must be square and of one size, got {d0.shape} and {d1.shape}")
        off = d0 - np.diag(np.diag(d0))
        if (off < -_TOL).any() or (d1 < -_TOL).any():
            raise ValueError("off-diagonal rates of D0 and all rates of D1 must be non-negative")
        if np.abs((d0 + d1).sum(axis=1)).max() > 1e-6 * max(1.0, np.abs(d0).max()):
            raise ValueError("each row of D0 + D1 must sum to zero")
        if d1.sum() <= 0:
            raise ValueError("D1 has no arrival rate")

    # -- constructors ---------------------------------------------------------

    @classmethod
    def poisson(cls, rate: float) -> MAP:
        if rate <= 0:
            raise ValueError("rate must be positive")
        return cls([[-rate]], [[rate]])

    @classmethod
    def mmpp2(cls, rates: tuple[float, float], switch: tuple[float, float]) -> MAP:
        """Phase i emits arrivals at rates[i] and leaves for the other phase at switch[i] per second."""
        (r1, r2), (s1, s2) = rates, switch
        if min(r1, r2, s1, s2) < 0 or r1 + r2 <= 0:
            raise ValueError("MMPP(2) rates must be non-negative, with some arrival rate")
        return cls([[-(r1 + s1), s1], [s2, -(r2 + s2)]], [[r1, 0.0], [0.0, r2]])

    # -- standard quantities --------------------------------------------------

    @property
    def order(self) -> int:
        return len(self.D0)

    @cached_property
    def M(self) -> np.ndarray:
        """(-D0)^-1: expected time spent in each phase before the next arrival."""
        return np.linalg.inv(-self.D0)

    @cached_property
    def P(self) -> np.ndarray:
        """The phase transition matrix embedded at arrivals."""
        return self.M @ self.D1

    @cached_property
    def theta(self) -> np.ndarray:
        """The time-stationary phase distribution."""
        return _stationary(self.D0 + self.D1, stochastic=False)

    @cached_property
    def pi(self) -> np.ndarray:
        """The phase distribution just after an arrival."""
        return _stationary(self.P, stochastic=True)

    @cached_property
    def rate(self) -> float:
        return float(self.theta @ self.D1.sum(axis=1))

    def moment(self, k: int) -> float:
        """E[X^k] of the stationary inter-arrival time X."""
        return float(np.prod(np.arange(1, k + 1)) * self.pi @ np.linalg.matrix_power(self.M, k) @ np.ones(self.order))

    @cached_property
    def mean(self) -> float:
        return self.moment(1)

    @cached_property
    def scv(self) -> float:
        """Squared coefficient of variation of inter-arrival times (1 for Poisson)."""
        return self.moment(2) / self.mean**2 - 1.0

    def acf(self, lag: int = 1) -> float:
        """Lag-k autocorrelation of successive inter-arrival times (0 for renewal processes)."""
        ones = np.ones(self.order)
        joint = self.pi @ self.M @ np.linalg.matrix_power(self.P, lag) @ self.M @ ones
        variance = self.moment(2) - self.mean**2
        return float((joint - self.mean**2) / variance) if variance > 0 else 0.0

    def scaled(self, factor: float) -> MAP:
        """The same process run `factor` times faster (rate x factor, same SCV and correlations)."""
        return MAP(self.D0 * factor, self.D1 * factor)

    def __repr__(self) -> str:
        return f"MAP(rate={self.rate:.6g}, scv={self.scv:.4g}, acf1={self.acf(1):.4g}, order={self.order})"
