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

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_TOL = 1e-9
_MAX_VISITS_PER_ROUND = 1 << 20  # bounds the memory of one round of simulation


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

    @classmethod
    def map2(cls, D0: np.ndarray, D1: np.ndarray) -> MAP:
        """A MAP(2) from its two matrices; the same as MAP(D0, D1), checked to be of order 2."""
        process = cls(D0, D1)
        if process.order != 2:
            raise ValueError(f"a MAP(2) needs 2 x 2 matrices, got order {process.order}")
        return process

    # -- simulation -------------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator, phase: int | None = None) -> np.ndarray:
        """n successive inter-arrival times in seconds, starting just after an arrival.

        The first gap starts in `phase`, or in a phase drawn from `pi` (then the
        gaps are a stationary sequence). See `_simulate_gaps` for the method.
        """
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        if phase is not None and not 0 <= phase < self.order:
            raise ValueError(f"phase must be in [0, {self.order}), got {phase}")
        if n == 0:
            return np.empty(0)
        if self.order == 1:
            return rng.exponential(1.0 / self.D1[0, 0], n)
        start = int(rng.choice(self.order, p=self.pi)) if phase is None else phase
        return _simulate_gaps(self, n, rng, start)

    def __repr__(self) -> str:
        return f"MAP(rate={self.rate:.6g}, scv={self.scv:.4g}, acf1={self.acf(1):.4g}, order={self.order})"


def gamma_renewal_sample(rate: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n inter-arrival times of a gamma renewal process: mean 1/rate, coefficient of variation cv.

    Shape 1/cv^2: cv = 1 is Poisson, cv < 1 smoother, cv > 1 burstier (but, unlike a
    MAP, with independent gaps). cv = 0 gives evenly spaced arrivals.
    """
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be positive and finite, got {rate}")
    if not cv >= 0 or not math.isfinite(cv):
        raise ValueError(f"cv must be non-negative and finite, got {cv}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if cv == 0:
        return np.full(n, 1.0 / rate)
    shape = 1.0 / cv**2
    return rng.gamma(shape, 1.0 / (rate * shape), n)


def _simulate_gaps(process: MAP, n: int, rng: np.random.Generator, start: int) -> np.ndarray:
    """Simulate the MAP's phase chain visit by visit, in bulk, until n arrivals.

    Each visit to phase i lasts Exp(-D0[i, i]) and ends with outcome (j, arrival?)
    drawn from row i of [D0 without its diagonal, D1] / -D0[i, i]. With one
    uniform per visit, outcome = F(phase, uniform) is computed for every phase at
    once, so the only sequential part is following the path through that table.
    That is done for chunks of L visits side by side, from every possible
    starting phase of each chunk (L steps, each vectorised over the chunks), and
    the chunks are then joined in a loop over chunks: about 2 sqrt(visits)
    Python steps in all. Time spent after the last arrival of a round is carried
    into the next round, which continues from the phase the chain is in.
    """
    order = process.order
    exit_rates = -np.diag(process.D0)
    if (exit_rates <= 0).any():
        raise ValueError("every phase needs a positive total event rate to be simulated")
    outcome_rates = np.hstack([process.D0 + np.diag(exit_rates), process.D1])
    cumulative = np.cumsum(outcome_rates / exit_rates[:, None], axis=1)
    for i, row in enumerate(outcome_rates):  # rounding must never send a uniform past the last possible outcome
        cumulative[i, np.flatnonzero(row > 0)[-1] :] = np.inf
    visits_per_arrival = float(process.theta @ exit_rates) / process.rate
    gaps: list[np.ndarray] = []
    found, carried_time, phase = 0, 0.0, start
    while found < n:
        visits = min(int((n - found) * visits_per_arrival * 1.05) + 64, _MAX_VISITS_PER_ROUND)
        uniforms = rng.random(visits)
        outcomes = np.stack([np.searchsorted(cumulative[i], uniforms, side="right") for i in range(order)], axis=1)
        phases = _follow_path(outcomes % order, phase)
        chosen = outcomes[np.arange(visits), phases]
        sojourns = rng.exponential(1.0, visits) / exit_rates[phases]
        arrivals = np.flatnonzero(chosen >= order)
        phase = int(chosen[-1] % order)
        if len(arrivals) == 0:
            carried_time += float(sojourns.sum())
            continue
        arrivals = arrivals[: n - found]
        starts = np.concatenate(([0], arrivals[:-1] + 1))
        round_gaps = np.add.reduceat(sojourns[: arrivals[-1] + 1], starts)
        round_gaps[0] += carried_time
        gaps.append(round_gaps)
        found += len(round_gaps)
        if found < n:
            carried_time = float(sojourns[arrivals[-1] + 1 :].sum())
    return np.concatenate(gaps)


def _follow_path(next_phase: np.ndarray, start: int) -> np.ndarray:
    """The phases visited by the chain phase[t + 1] = next_phase[t, phase[t]], from `start`."""
    visits, order = next_phase.shape
    chunk = max(16, math.isqrt(visits))
    chunks = -(-visits // chunk)
    table = np.zeros((chunks * chunk, order), dtype=np.intp)
    table[:visits] = next_phase
    table = table.reshape(chunks, chunk, order)
    paths = np.empty((chunks, chunk, order), dtype=np.intp)
    current = np.broadcast_to(np.arange(order), (chunks, order)).copy()
    for step in range(chunk):
        paths[:, step, :] = current
        current = np.take_along_axis(table[:, step, :], current, axis=1)
    entry = np.empty(chunks, dtype=np.intp)
    entry[0] = start
    for c in range(1, chunks):
        entry[c] = current[c - 1, entry[c - 1]]
    return paths[np.arange(chunks), :, entry].reshape(-1)[:visits]
