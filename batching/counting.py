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
from scipy import special, stats

from .arrivals import MAP
from .spectral import Spectrum


class CountingProcess:
    """P(n, t) and I(n, t) for n = 0..max_count and 0 <= t <= max_time."""

    def __init__(self, arrivals: MAP, max_count: int, max_time: float, tolerance: float = 1e-12, spectral: bool = True) -> None:
        """With `spectral` (the default), wait tables come from the z-domain
        (`batching.spectral`) where it is well-conditioned; without, always by stepping in time."""
        if max_count < 0 or max_time < 0:
            raise ValueError("max_count and max_time must not be negative")
        self.arrivals, self.max_count, self.max_time = arrivals, max_count, max_time
        self.tolerance = tolerance
        d0, d1 = arrivals.D0, arrivals.D1
        order = arrivals.order
        self.q = q = float(max(-np.diag(d0).min(), 1e-12)) * 1.0001
        a0 = np.eye(order) + d0 / q
        a1 = d1 / q
        self._a0, self._a1 = a0, a1
        self._all_steps = int(stats.poisson.isf(tolerance, q * max_time)) + 2 if max_time > 0 else 1
        self._c = np.zeros((0, (max_count + 1) * order * order))
        self._m = np.arange(0)
        self._log_factorial = np.zeros(0)
        self._spectrum: Spectrum | None | bool = False if spectral else None  # False: not yet decomposed

    def spectrum(self) -> Spectrum | None:
        """The z-domain decomposition for counts 0..max_count (`batching.spectral`),
        made on first use; None where it is ill-conditioned or not wanted (then step in time)."""
        if self._spectrum is False:
            self._spectrum = Spectrum.of(self.arrivals, self.max_count + 1)
        return self._spectrum  # type: ignore[return-value]

    def _extend(self, steps: int) -> None:
        """The C(m, n) for m < steps, built on first need (a grid of small steps needs few)."""
        have = len(self._m)
        if steps <= have:
            return
        order, counts = self.arrivals.order, self.max_count + 1
        c = np.zeros((steps, counts, order, order))
        c[:have] = self._c.reshape(have, counts, order, order)
        if have == 0:
            c[0, 0] = np.eye(order)
            have = 1
        for m in range(have, steps):
            c[m] = c[m - 1] @ self._a0
            c[m, 1:] += c[m - 1, :-1] @ self._a1
            _flushed(c[m])  # a stiff phase's A0 entry near 0 drives terms into subnormals
        self._c = c.reshape(steps, -1)
        self._m = np.arange(steps)
        self._log_factorial = special.gammaln(self._m + 1.0)

    def _steps(self, t: np.ndarray) -> int:
        """Uniformization steps that matter up to the largest t (the rest weigh < tolerance)."""
        if (t > self.max_time * (1 + 1e-9)).any():
            raise ValueError(f"t beyond max_time {self.max_time}")
        needed = int(stats.poisson.isf(self.tolerance, self.q * float(t.max()))) + 2 if t.max() > 0 else 1
        steps = min(needed, self._all_steps)
        self._extend(steps)
        return steps

    def _weigh(self, weights: np.ndarray, steps: int) -> np.ndarray:
        order = self.arrivals.order
        return (weights @ self._c[:steps]).reshape(len(weights), self.max_count + 1, order, order)

    def _poisson(self, t: np.ndarray, steps: int) -> np.ndarray:
        """Pois(m; q t) for m < steps, in log space (scipy.stats' pmf costs ten times more)."""
        m = self._m[:steps]
        x = self.q * t[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            log = m * np.log(x) - x - self._log_factorial[:steps]
        pmf = np.exp(np.where(log < -345.0, -np.inf, log))  # below 1e-150: 0, not a slow subnormal
        pmf[t == 0] = 0.0
        pmf[t == 0, 0] = 1.0
        return pmf

    def P(self, t: np.ndarray) -> np.ndarray:
        """Array of shape (len(t), max_count + 1, order, order)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        steps = self._steps(t)
        return self._weigh(self._poisson(t, steps), steps)

    def I(self, t: np.ndarray) -> np.ndarray:  # noqa: E743 - the integral's usual name
        """int_0^t P(n, a) da, same shape as P(t)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        steps = self._steps(t)
        # P(Pois(q t) > m): the terms above m summed from the top (all positive, so the
        # small tail keeps its relative precision); what lies beyond `steps` weighs < tolerance.
        pmf = self._poisson(t, steps)
        tail = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]
        survival = np.zeros_like(pmf)
        survival[:, :-1] = tail[:, 1:]
        return self._weigh(survival / self.q, steps)

    def on_grid(self, timeout_s: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
        """P(n, u) and I(n, u) at u = g timeout_s / grid, g = 0..grid, as P(u) and I(u)
        give them, by stepping: with X(u) = [P(0, u) .. P(K, u)], X(u + du) = X(u) E and
        I(u + du) = I(u) + X(u) F, where E and F are block upper-triangular Toeplitz
        matrices of P(n, du) and I(n, du). A grid costs `grid` products of an
        (order x (K+1) order) row by a square matrix, where weighing the
        uniformization terms at every point costs q T times more (q T is 600 for 2000
        arrivals a second over 300 ms). The wait tables use it where the z-domain
        (`batching.spectral`) is ill-conditioned."""
        if grid < 1 or not 0 < timeout_s <= self.max_time * (1 + 1e-9):
            raise ValueError("need grid >= 1 and 0 < timeout_s <= max_time")
        order, counts = self.arrivals.order, self.max_count + 1
        du = np.array([timeout_s / grid])
        size = counts * order
        lag = np.subtract.outer(np.arange(counts), np.arange(counts)).T  # lag[a, c] = c - a

        def toeplitz(blocks: np.ndarray) -> np.ndarray:  # (K+1, n, n) -> (size, size)
            full = np.where((lag >= 0)[:, :, None, None], blocks[np.clip(lag, 0, None)], 0.0)  # [a, c, i, j]
            return full.transpose(0, 2, 1, 3).reshape(size, size)

        step = np.concatenate([toeplitz(self.P(du)[0]), toeplitz(self.I(du)[0])], axis=1)  # [E | F]
        both = np.zeros((grid + 1, order, 2 * size))  # [X(u) | I(u)] per grid point
        both[0, :, :order] = np.eye(order)
        for g in range(grid):
            np.matmul(both[g, :, :size], step, out=both[g + 1])
            both[g + 1, :, size:] += both[g, :, size:]
        p, i = both[:, :, :size], both[:, :, size:]
        shape = (grid + 1, order, counts, order)
        return (np.ascontiguousarray(p.reshape(shape).transpose(0, 2, 1, 3)),
                np.ascontiguousarray(i.reshape(shape).transpose(0, 2, 1, 3)))  # fmt: skip


def _flushed(table: np.ndarray) -> np.ndarray:
    """Entries below 1e-150 set to 0, in place: they mean nothing next to the 1e-12
    tolerance, and their products downstream are subnormal numbers, on which the
    FFTs and products run ten times slower."""
    table[np.abs(table) < 1e-150] = 0.0
    return table
