"""The counting process of a MAP: how many arrivals by time t, and in which phase.

P(n, t)[i, j] = P(N(t) = n, phase(t) = j | phase(0) = i), for n = 0..K, computed by
uniformization (Jensen's method, as used for MAPs by Neuts and by Lucantoni):
with q >= max_i -D0[i, i], A0 = I + D0/q and A1 = D1/q,

    P(n, t) = sum_m Pois(m; q t) C(m, n),   C(0, 0) = I,
    C(m, n) = C(m-1, n) A0 + C(m-1, n-1) A1.

The C(m, n) do not depend on t, so they are computed once per arrival model and
shared by every (B, T) the tuner tries; each P(n, t) is then one weighted sum. The
time integral I(n, t) = int_0^t P(n, a) da comes from the same C(m, n), with the
Poisson tail P(Pois(q t) > m) / q as weights. All terms are non-negative, so the
sums are numerically stable.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .arrivals import MAP


class CountingProcess:
    """P(n, t) and I(n, t) for n = 0..max_count and 0 <= t <= max_time."""

    def __init__(self, arrivals: MAP, max_count: int, max_time: float, tolerance: float = 1e-12) -> None:
        if max_count < 0 or max_time < 0:
            raise ValueError("max_count and max_time must not be negative")
        self.arrivals, self.max_count, self.max_time = arrivals, max_count, max_time
        self.tolerance = tolerance
        d0, d1 = arrivals.D0, arrivals.D1
        order = arrivals.order
        self.q = q = float(max(-np.diag(d0).min(), 1e-12)) * 1.0001
        a0 = np.eye(order) + d0 / q
        a1 = d1 / q
        steps = int(stats.poisson.isf(tolerance, q * max_time)) + 2 if max_time > 0 else 1
        c = np.zeros((steps, max_count + 1, order, order))
        c[0, 0] = np.eye(order)
        for m in range(1, steps):
            c[m] = c[m - 1] @ a0
            c[m, 1:] += c[m - 1, :-1] @ a1
        self._c = c.reshape(steps, -1)
        self._m = np.arange(steps)

    def _steps(self, t: np.ndarray) -> int:
        """Uniformization steps that matter up to the largest t (the rest weigh < tolerance)."""
        if (t > self.max_time * (1 + 1e-9)).any():
            raise ValueError(f"t beyond max_time {self.max_time}")
        needed = int(stats.poisson.isf(self.tolerance, self.q * float(t.max()))) + 2 if t.max() > 0 else 1
        return min(needed, len(self._m))

    def _weigh(self, weights: np.ndarray, steps: int) -> np.ndarray:
        order = self.arrivals.order
        return (weights @ self._c[:steps]).reshape(len(weights), self.max_count + 1, order, order)

    def P(self, t: np.ndarray) -> np.ndarray:
        """Array of shape (len(t), max_count + 1, order, order)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        steps = self._steps(t)
        return self._weigh(stats.poisson.pmf(self._m[None, :steps], self.q * t[:, None]), steps)

    def I(self, t: np.ndarray) -> np.ndarray:  # noqa: E743 - the integral's usual name
        """int_0^t P(n, a) da, same shape as P(t)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        steps = self._steps(t)
        return self._weigh(stats.poisson.sf(self._m[None, :steps], self.q * t[:, None]) / self.q, steps)
