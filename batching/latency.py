"""The latency and cost of a batching policy (B, T) under MAP arrivals, computed exactly.

A batch opens at an arrival (phase distribution alpha just after it) and closes
when it holds B requests or when T has passed since it opened. Each request's
latency is its wait in the buffer, plus the service time s(b) of its batch of b,
plus a fixed invocation overhead, plus a cold start with some probability. The
model assumes a batch starts service when it closes (FaaS, or a free instance).

Where BATCH (Ali et al., SC'20) assumes waits spread uniformly over the batch
window, this model integrates the MAP counting process (`batching.counting`)
exactly, per batch size b, for every request position:

- the opener of a batch that times out waits T; the others wait u = T - a, and
  requests of a batch of size b arrive with density
      h_b(u) = sum_{n+m=b-2} alpha P(n, T-u) D1 P(m, u) 1;
- in a batch that fills, the closer waits 0, the opener waits for the B-1
  arrivals after it, density alpha P(B-2, u) D1 1, and the others
      k_B(u) = sum_{n+m=B-3} alpha I(n, T-u) D1 P(m, u) D1 1;
- alpha is the stationary vector of "close, then the next arrival opens".

Densities are tabulated on a uniform grid over [0, T] and integrated with the
trapezoid rule (error O(grid^-2)); point masses are kept exact. Everything is per
batch; dividing by E[b] turns batch counts into the share of requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .arrivals import _stationary
from .counting import CountingProcess

ServiceTime = Callable[[np.ndarray], np.ndarray]  # batch sizes -> seconds, vectorised


def _convolve_counts(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """out[g, s] = sum_{n+m=s} left[g, n, :] . right[g, m, :] over the count axis (by FFT).

    Round-off is ~1e-16 of the largest term; the callers clip the tiny negatives."""
    counts = left.shape[1]
    size = 2 * counts - 1
    spectrum = (np.fft.rfft(left, size, axis=1) * np.fft.rfft(right, size, axis=1)).sum(axis=2)
    return np.fft.irfft(spectrum, size, axis=1)


class WindowTables:
    """What every batch size shares for one timeout T: counting matrices on the
    wait grid and the per-phase convolutions, so each (B, T) costs little more."""

    def __init__(self, counting: CountingProcess, timeout_s: float, grid: int = 256) -> None:
        if timeout_s > counting.max_time * (1 + 1e-9):
            raise ValueError("timeout beyond the counting process's max_time")
        self.counting, self.timeout_s, self.grid = counting, timeout_s, grid
        arrivals = counting.arrivals
        d1, order = arrivals.D1, arrivals.order
        ones = np.ones(order)
        self.u = np.linspace(0.0, timeout_s, grid + 1)
        self.p_u = p_u = counting.P(self.u)  # (G+1, K+1, n, n)
        self.i_u = counting.I(self.u)
        p_rev = p_u[::-1]  # P(n, T - u)
        i_rev = self.i_u[::-1]  # I(n, T - u)
        self.p_T = p_u[-1]  # P(n, T)
        self.i_T = i_rev[0]  # I(n, T)
        z = p_u @ ones  # P(m, u) 1                (G+1, K+1, n)
        zd = p_u @ (d1 @ ones)  # P(m, u) D1 1     (G+1, K+1, n)
        # Per starting phase i: the densities are linear in alpha, so alpha enters last.
        self.timeout_dens = []  # [i][g, b-2]
        self.fill_dens = []  # [i][g, B-3]
        self.opener_dens = []  # [i][g, B-2]
        for i in range(order):
            self.timeout_dens.append(_convolve_counts(p_rev[:, :, i, :] @ d1, z))
            self.fill_dens.append(_convolve_counts(i_rev[:, :, i, :] @ d1, zd))
            self.opener_dens.append(zd[:, :, i])
        self._times_d1: tuple[np.ndarray, np.ndarray] | None = None

    def times_d1(self) -> tuple[np.ndarray, np.ndarray]:
        """P(n, u) D1 and I(n, u) D1 on the grid, computed once for whoever needs them
        (the capped law of every target)."""
        if self._times_d1 is None:
            d1 = self.counting.arrivals.D1
            self._times_d1 = (self.p_u @ d1, self.i_u @ d1)
        return self._times_d1


@dataclass(frozen=True)
class WaitDistribution:
    """Per batch: the batch-size law and, for each size b, the cumulative expected
    number of its requests that waited at most u (on the grid `u`), apart from its
    opener when the batch timed out: that one waited exactly `cap_s[b-1]` (T, or
    less under deadline-aware closing), a point mass kept out of the grid."""

    batch_size: int
    timeout_s: float
    u: np.ndarray  # (G+1,)
    size_pmf: np.ndarray  # P(batch has b requests), b = 1..B
    cumulative: np.ndarray  # (B, G+1): expected requests of a size-b batch with wait <= u, point masses apart
    at_cap: np.ndarray  # (B,): expected requests of a size-b batch that wait exactly cap_s[b-1]
    alpha: np.ndarray
    cap_s: np.ndarray | None = None  # (B,): None means T for every size

    def __post_init__(self) -> None:
        if self.cap_s is None:
            object.__setattr__(self, "cap_s", np.full(self.batch_size, self.timeout_s))

    @property
    def mean_batch_size(self) -> float:
        return float(np.arange(1, self.batch_size + 1) @ self.size_pmf)

    def requests_within(self, waits: np.ndarray) -> np.ndarray:
        """waits: (X, B), column b-1 a wait for batches of size b. Returns (X, B): the
        expected requests per batch of size b that waited at most that long."""
        w = np.asarray(waits, dtype=float)
        grid = len(self.u) - 1
        rows = np.arange(self.batch_size)[None, :]
        if grid > 0 and self.timeout_s > 0:
            position = np.clip(w / self.timeout_s * grid, 0.0, grid)
            lower = np.minimum(position.astype(int), grid - 1)
            frac = position - lower
            inside = self.cumulative[rows, lower] * (1 - frac) + self.cumulative[rows, lower + 1] * frac
        else:
            inside = np.broadcast_to(self.cumulative[:, 0][None, :], w.shape)
        points = np.where(w >= self.cap_s[None, :], self.at_cap[None, :], 0.0)  # type: ignore[index]
        return np.where(w < 0, 0.0, inside + points)

    def latency_cdf(self, x: np.ndarray, service: np.ndarray, overhead_s: float = 0.0,
                    cold_probability: float = 0.0, cold_start_s: float = 0.0) -> np.ndarray:  # fmt: skip
        """P(latency <= x) for a random request. `service[b-1]` is s(b) in seconds."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        shift = np.asarray(service, dtype=float)[: self.batch_size] + overhead_s
        mean = self.mean_batch_size

        def warm(values: np.ndarray) -> np.ndarray:
            return self.requests_within(values[:, None] - shift[None, :]).sum(axis=1) / mean

        result = warm(x)
        if cold_probability > 0:
            result = (1 - cold_probability) * result + cold_probability * warm(x - cold_start_s)
        return np.clip(result, 0.0, 1.0)

    def latency_percentile(self, percentile: float, service: np.ndarray, overhead_s: float = 0.0,
                           cold_probability: float = 0.0, cold_start_s: float = 0.0) -> float:  # fmt: skip
        """The smallest x with P(latency <= x) >= percentile (0 < percentile < 1), by bisection."""
        if not 0 < percentile < 1:
            raise ValueError("percentile must be in (0, 1)")
        shift = np.asarray(service, dtype=float)[: self.batch_size] + overhead_s
        low, high = float(shift.min()), float(self.timeout_s + shift.max() + cold_start_s) + 1e-12
        args = (service, overhead_s, cold_probability, cold_start_s)
        for _ in range(48):  # to well under a microsecond
            mid = 0.5 * (low + high)
            if self.latency_cdf(np.array([mid]), *args)[0] >= percentile:
                high = mid
            else:
                low = mid
            if high - low < 1e-7:
                break
        return high

    def cost_per_request(self, batch_cost: np.ndarray) -> float:
        """Expected cost per request; `batch_cost[b-1]` is the cost of one batch of b."""
        return float(self.size_pmf @ np.asarray(batch_cost, dtype=float)[: self.batch_size]) / self.mean_batch_size


def wait_distribution(tables: WindowTables, batch_size: int) -> WaitDistribution:
    """The exact per-batch wait law of the policy (batch_size, tables.timeout_s)."""
    counting, arrivals = tables.counting, tables.counting.arrivals
    big_b, order = batch_size, arrivals.order
    if big_b < 1 or big_b - 1 > counting.max_count:
        raise ValueError(f"batch size must be in 1..{counting.max_count + 1}")
    d1, ones = arrivals.D1, np.ones(order)
    u, grid = tables.u, len(tables.u)
    if big_b == 1:  # every request is its own batch and waits nothing
        return WaitDistribution(1, tables.timeout_s, u, np.array([1.0]), np.ones((1, grid)), np.zeros(1), arrivals.pi)
    # The phase at each batch's opening: stationary over "close, then next arrival".
    not_full = tables.p_T[: big_b - 1].sum(axis=0)
    filled = tables.i_T[big_b - 2] @ d1
    alpha = _stationary((not_full + filled) @ arrivals.P, stochastic=True)

    size_pmf = np.empty(big_b)
    size_pmf[:-1] = alpha @ tables.p_T[: big_b - 1] @ ones
    size_pmf[-1] = alpha @ filled @ ones
    du = tables.timeout_s / (grid - 1)

    def integrate(density: np.ndarray) -> np.ndarray:
        """Cumulative trapezoid along the grid (axis 0), starting at 0."""
        density = np.clip(density, 0.0, None)
        steps = 0.5 * (density[1:] + density[:-1]) * du
        return np.concatenate([np.zeros((1,) + density.shape[1:]), np.cumsum(steps, axis=0)])

    cumulative = np.zeros((big_b, grid))
    if big_b > 2:  # batches that time out with b = 2..B-1 requests, all at once
        timed_out = sum(alpha[i] * tables.timeout_dens[i][:, : big_b - 2] for i in range(order))
        cumulative[1 : big_b - 1] = integrate(timed_out).T
    # b = 1 and the opener of every timed-out batch wait exactly T: a point mass,
    # kept apart so that interpolation never smears it over the last grid cell.
    at_cap = np.append(size_pmf[:-1], 0.0)
    # A batch that fills: the closer waits 0, the opener and the middle ones as derived.
    full = sum(alpha[i] * tables.opener_dens[i][:, big_b - 2] for i in range(order))
    if big_b >= 3:
        full = full + sum(alpha[i] * tables.fill_dens[i][:, big_b - 3] for i in range(order))
    cumulative[-1] = integrate(full) + size_pmf[-1]
    return WaitDistribution(big_b, tables.timeout_s, u, size_pmf, cumulative, at_cap, alpha)
