"""The wait law when deadline-aware closing caps how long a batch may stay open.

With a latency budget D (the SLO) and predicted answer times s(b), a batch holding b
requests is released once its opener has waited tau_b = min(T, D - s(b))
(`BatchLimits.closing_caps`), and an arrival that would make it late (one that comes
after tau_{b+1}) closes it without joining and opens the next batch. tau_b falls as
b grows. Per size b, in `batching.latency`'s notation, a batch of b closes:

- at tau_b (b < B), no further arrival by then: probability alpha P(b-1, tau_b) 1;
  the opener waits tau_b, the others u with density
      sum_{n+m=b-2} alpha P(n, tau_b - u) D1 P(m, u) 1,  0 <= u <= tau_b;
- at the (b+1)-th arrival, at u in [tau_{b+1}, tau_b) (b < B), which it leaves out:
  the opener waits u, density alpha P(b-1, u) D1 1, the others u with density
      sum_{n+m=b-2} alpha [I(n, tau_b - u) - I(n, max(tau_{b+1} - u, 0))] D1 P(m, u) D1 1;
- full (b = B), at its B-th arrival before tau_B: the closer waits 0, the opener u
  in [0, tau_B) with density alpha P(B-2, u) D1 1, the others as above with n+m = B-3.

The phase at the next opening follows a close at tau_b or at filling by one more
arrival (the P matrix of the MAP); after a close by an arrival left out, that
arrival is the next opening. Caps are rounded down to the wait grid for the densities
(at most one step, T/256 on the tuner's grid; the openers' point masses stay exact), so every term is read from `WindowTables`. The
pieces of size b depend on the caps up to b+1 only, so they are built once per
(T, caps) and shared by every B; alpha enters last, as in the uncapped case.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .arrivals import _stationary
from .latency import WaitDistribution, WindowTables, interval_integrals, wait_distribution


def _integrate(density: np.ndarray, lo: int, hi: int, du: float) -> np.ndarray:
    """Cumulative integral of a density supported on grid points lo..hi: zero before, flat after."""
    out = np.zeros_like(density)
    if hi > lo:
        part = density[lo : hi + 1]
        out[lo + 1 : hi + 1] = np.cumsum(interval_integrals(part[:-1], part[1:], du), axis=0)
        out[hi + 1 :] = out[hi]
    return out


class CappedTables:
    """Per batch size b, per opening phase: the pieces of the capped wait law for one
    timeout T and one set of caps (`caps[b-1]` for b = 1..len(caps))."""

    def __init__(self, tables: WindowTables, caps: Sequence[float]) -> None:
        self.tables = tables
        grid = len(tables.u) - 1
        self.du = tables.timeout_s / grid if grid else 0.0
        # The caps themselves (never rising with b) place the openers' point masses
        # exactly; the densities use them rounded down to the grid.
        self.cap_s = np.minimum.accumulate(np.clip(np.asarray(caps, dtype=float), 0.0, tables.timeout_s))
        steps = np.floor(self.cap_s / self.du + 1e-9).astype(int) if self.du else np.zeros(len(self.cap_s), int)
        self.k = np.minimum(steps, grid)
        counting = tables.counting
        if len(self.k) > counting.max_count + 1:
            raise ValueError(f"caps cover sizes up to {len(self.k)}; the counting process only {counting.max_count + 1}")
        arrivals = counting.arrivals
        self.order, self.jump = arrivals.order, arrivals.P
        self.p, self.i = tables.p_u, tables.i_u  # (G+1, K+1, n, n)
        self.pd1, self.id1 = tables.times_d1()
        ones = np.ones(self.order)
        self.z = self.p @ ones  # P(m, u) 1
        self.zd = self.pd1 @ ones  # P(m, u) D1 1
        # Per size b (index b-1), built as far as asked: the phase matrix of closing at
        # the cap; of closing at the cap or at an arrival left out; the cumulative waits
        # per opening phase of both; and prefix sums of the next opening's phase.
        sizes, cells, order = len(self.k), len(tables.u), self.order
        self._built = 0
        self._cap_matrix = np.zeros((sizes, order, order))
        self._closes = np.zeros((sizes, order, order))
        self._cum = np.zeros((sizes, cells, order))
        self._to_next = np.zeros((sizes, order, order))
        self._fill: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def is_binding(self, batch_size: int) -> bool:
        """Does any cap of a batch of up to batch_size fall short of T?"""
        return bool(self.cap_s[batch_size - 1] < self.tables.timeout_s)

    def _density(self) -> np.ndarray:
        return np.zeros((len(self.tables.u), self.order))

    def _extend(self, sizes: int) -> None:
        """Build the pieces of sizes b = 1..sizes that are not built yet."""
        for b in range(self._built + 1, sizes + 1):
            k = self.k[b - 1]
            density = self._density()
            if b >= 2:  # the non-openers of a batch closed at its cap
                left = self.pd1[k::-1, : b - 1]  # P(n, tau_b - u) D1, g = 0..k
                density[: k + 1] = np.einsum("gnij,gnj->gi", left, self.z[: k + 1, b - 2 :: -1], optimize=True)
            at_cap = self.p[k, b - 1]
            self._cap_matrix[b - 1] = at_cap
            self._cum[b - 1] = _integrate(density, 0, k, self.du)
            to_next = at_cap @ self.jump
            lo, hi = int(self.k[b]), int(k)  # the (b+1)-th arrival would be late in [lo, hi)
            if hi > lo:
                left_out, cum, _ = self.at_arrival(b + 1, lo, hi)
                self._cum[b - 1] += cum
                to_next = to_next + left_out
                at_cap = at_cap + left_out
            self._closes[b - 1] = at_cap
            self._to_next[b - 1] = to_next + (self._to_next[b - 2] if b >= 2 else 0.0)
        self._built = max(self._built, sizes)

    def at_arrival(self, c: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closing at the c-th arrival, which comes in grid window [lo, hi): the phase
        matrix just after that arrival, per opening phase the cumulative waits of the
        opener and the middles, and per opening phase the weight of the c-th itself."""
        matrix = self.id1[hi, c - 2] - self.id1[lo, c - 2]
        opener = self._density()
        opener[lo : hi + 1] = self.zd[lo : hi + 1, c - 2]
        cum = _integrate(opener, lo, hi, self.du)
        if c >= 3:
            g = np.arange(hi + 1)
            span = self.id1[hi - g, : c - 2] - self.id1[np.maximum(lo - g, 0), : c - 2]  # [I(n, hi-u) - I(n, lo-u)] D1
            middles = self._density()
            middles[: hi + 1] = np.einsum("gnij,gnj->gi", span, self.zd[: hi + 1, c - 3 :: -1], optimize=True)
            cum += _integrate(middles, 0, hi, self.du)
        return matrix, cum, matrix @ np.ones(self.order)

    def fill(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closing full, at the B-th arrival before tau_B."""
        if batch_size not in self._fill:
            self._fill[batch_size] = self.at_arrival(batch_size, 0, int(self.k[batch_size - 1]))
        return self._fill[batch_size]


def capped_wait_distribution(capped: CappedTables, batch_size: int) -> WaitDistribution:
    """The per-batch wait law of (batch_size, T) with deadline-aware closing at the caps."""
    tables, big_b = capped.tables, batch_size
    if big_b < 1 or big_b > len(capped.k):
        raise ValueError(f"batch size must be in 1..{len(capped.k)}")
    if big_b == 1 or not capped.is_binding(big_b):
        return wait_distribution(tables, big_b)
    capped._extend(big_b - 1)
    ones = np.ones(capped.order)
    filled, fill_cum, closer = capped.fill(big_b)
    alpha = _stationary(capped._to_next[big_b - 2] + filled @ capped.jump, stochastic=True)
    size_pmf = np.append(alpha @ capped._closes[: big_b - 1] @ ones, alpha @ filled @ ones)
    cumulative = np.concatenate([capped._cum[: big_b - 1] @ alpha, ((fill_cum + closer) @ alpha)[None, :]])
    at_cap = np.append(alpha @ capped._cap_matrix[: big_b - 1] @ ones, 0.0)
    return WaitDistribution(big_b, tables.timeout_s, tables.u, size_pmf, cumulative, at_cap, alpha, capped.cap_s[:big_b].copy())
