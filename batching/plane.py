"""One timeout, every batch size and every target at once: the tuner's inner loop.

`wait_distribution` builds the wait law of one (B, T) and `WaitDistribution` judges it
on a target. The tuner needs only two numbers per (B, T, target): the share of
requests within the SLO and the cost per request. Both are linear in alpha_B (the
phase at a batch's opening, `batching.latency`), and everything else they are made
of is shared by every B of one T:

- the requests of a batch that timed out with b < B requests: their waits and
  its size do not depend on B (only on the batch having timed out with b), so per
  opening phase their share within a wait w is read once per (b, target) and
  summed over b < B by a prefix sum;
- the batch that fills at B: the opener's and the middle requests' waits, per
  opening phase, read once per (B, target);
- alpha_B itself: the stationary vector of a small matrix per B, solved for all B
  in one batched call.

So one timeout costs its `WindowTables` plus a few array operations over
(phases x targets x sizes), instead of a law and a judgement per (B, T). The
numbers are those of `wait_distribution` and `WaitDistribution.requests_within`
(the tests hold them equal), except that negative round-off in a density is
clipped per opening phase rather than after weighting by alpha (a difference of
the order of 1e-16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrivals import _stationary
from .latency import WindowTables, cumulative_integral


@dataclass(frozen=True)
class Plane:
    """Per target k and batch size B = 1..len: P(latency <= SLO) and the expected
    cost per request of (B, T) on target k; the mean batch size and the opening
    phase per B."""

    timeout_s: float
    attained: np.ndarray  # (targets, B)
    cost: np.ndarray  # (targets, B); inf where the target cannot run B
    mean_batch_size: np.ndarray  # (B,)
    alpha: np.ndarray  # (B, order)


def _cumulative(density: np.ndarray, du: float) -> np.ndarray:
    """Cumulative integral along axis 1 (the grid), from 0."""
    return cumulative_integral(density, du, axis=1)


def _opening_phases(tables: WindowTables, max_batch: int) -> np.ndarray:
    """alpha_B for B = 2..max_batch, (max_batch - 1, order): the stationary vector of
    "close (at T with fewer than B, or full at B), then the next arrival opens"."""
    arrivals = tables.counting.arrivals
    order = arrivals.order
    not_full = np.cumsum(tables.p_T[: max_batch - 1], axis=0)  # sum over n <= B-2 of P(n, T)
    closing = (not_full + tables.i_T[: max_batch - 1] @ arrivals.D1) @ arrivals.P  # (B-1, n, n)
    if order == 1:
        return np.ones((max_batch - 1, 1))
    # x (M - I) = 0 with x 1 = 1: one equation of the singular system replaced by the sum.
    system = np.swapaxes(closing - np.eye(order), 1, 2).copy()
    system[:, -1, :] = 1.0
    rhs = np.zeros((max_batch - 1, order))
    rhs[:, -1] = 1.0
    try:
        alpha = np.linalg.solve(system, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        alpha = np.full((max_batch - 1, order), np.nan)
    bad = ~np.isfinite(alpha).all(axis=1) | (alpha < -1e-9).any(axis=1)
    for j in np.flatnonzero(bad):  # a reducible chain (a phase never opens a batch): least squares
        alpha[j] = _stationary(closing[j], stochastic=True)
    alpha = np.clip(alpha, 0.0, None)
    return alpha / alpha.sum(axis=1, keepdims=True)


class _Reader:
    """Reads cumulative tables (phases, G+1, columns) at waits (targets, columns) by
    linear interpolation on the grid over [0, T]; a negative wait reads 0."""

    def __init__(self, waits: np.ndarray, timeout_s: float, grid: int) -> None:
        self.negative = waits < 0
        position = np.clip(np.nan_to_num(waits, nan=-1.0, neginf=-1.0, posinf=timeout_s) / timeout_s * grid, 0.0, grid)
        self.lower = np.minimum(position.astype(int), grid - 1)
        self.frac = position - self.lower

    def read(self, cumulative: np.ndarray, columns: np.ndarray, at: np.ndarray) -> np.ndarray:
        """(phases, targets, len(at)): table column `columns[j]` read at wait column `at[j]`."""
        lower, frac, negative = self.lower[:, at], self.frac[:, at], self.negative[:, at]
        low = cumulative[:, lower, columns[None, :]]
        high = cumulative[:, lower + 1, columns[None, :]]
        return np.where(negative[None], 0.0, low * (1 - frac)[None] + high * frac[None])


def judge_plane(
    tables: WindowTables, shift: np.ndarray, batch_cost: np.ndarray, slo_s: float,
    cold_probability: np.ndarray | None = None, cold_start_s: np.ndarray | None = None,
) -> Plane:  # fmt: skip
    """Every B = 1..shift.shape[1] on every target at one timeout. `shift[k, b-1]`:
    target k's answer time for a batch of b after it closes (service plus overhead;
    inf where it cannot run b); `batch_cost[k, b-1]` the cost of that batch. With a
    cold-start probability per target, a request meets its target's cold start with
    that probability (the tuner's mixture)."""
    max_batch = shift.shape[1]
    counting = tables.counting
    if max_batch - 1 > counting.max_count:
        raise ValueError(f"batch sizes up to {max_batch} need counts up to {max_batch - 1}")
    shared = _Shared(tables, max_batch)
    within, mean, alpha = shared.within(slo_s - shift)
    if cold_probability is not None and cold_start_s is not None and (cold_probability > 0).any():
        late, _, _ = shared.within(slo_s - shift - cold_start_s[:, None])
        p = cold_probability[:, None]
        within = (1 - p) * within + p * late
    attained = within / mean[None, :]
    cost = _cost(tables, batch_cost, alpha, mean, max_batch)
    cost = np.where(np.isfinite(shift), cost, np.inf)
    return Plane(tables.timeout_s, attained, cost, mean, alpha)


class _Shared:
    """What every set of waits reads at one timeout: alpha per B, the sizes of
    timed-out and full batches, and the cumulative wait tables per opening phase."""

    def __init__(self, tables: WindowTables, max_batch: int) -> None:
        arrivals = tables.counting.arrivals
        self.tables, self.max_batch, self.order = tables, max_batch, arrivals.order
        self.alpha = np.zeros((max_batch, self.order))
        self.alpha[0] = arrivals.pi
        self.mean = np.ones(max_batch)
        if max_batch == 1:
            return
        timeout, grid = tables.timeout_s, len(tables.u) - 1
        if timeout <= 0 or grid <= 0:
            raise ValueError("a plane needs a positive timeout and grid")
        du = timeout / grid
        ones = np.ones(self.order)
        self.alpha[1:] = self.opening = _opening_phases(tables, max_batch)  # row B-2 for B = 2..
        self.p_one = tables.p_T[: max_batch - 1] @ ones  # (B-1, n): row b-1, a batch timed out holding b
        self.fill_one = tables.i_T[: max_batch - 1] @ (arrivals.D1 @ ones)  # row B-2: it filled at B
        sizes = np.arange(1, max_batch + 1)
        sized = np.cumsum(sizes[:-1, None] * self.p_one, axis=0)  # sum over b < B of b P(timed out with b)
        self.mean[1:] = np.einsum("bi,bi->b", self.opening, sized + sizes[1:, None] * self.fill_one)
        # Timed out with b = 2..B-1 requests, the non-openers: cumulative per opening phase.
        self.timed_out = _cumulative(tables.timeout_dens[:, :, : max_batch - 2], du) if max_batch > 2 else None
        # Full at B = 2..: the opener (exact) and the middles (densities); the closer waits 0.
        full = np.moveaxis(tables.opener_cum[:, : max_batch - 1], 2, 0)  # (n, G+1, B-1): column B-2
        if max_batch > 2:
            full = full.copy()
            full[:, :, 1:] += _cumulative(tables.fill_dens[:, :, : max_batch - 2], du)
        self.full = full

    def within(self, waits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected requests per batch within `waits[k, b-1]` for every (target, B), the
        mean batch size per B, and alpha per B (B = 1 included: alpha is then moot)."""
        order, max_batch, tables = self.order, self.max_batch, self.tables
        targets = waits.shape[0]
        within = np.zeros((targets, max_batch))
        within[:, 0] = waits[:, 0] >= 0  # B = 1: every request alone, no wait
        if max_batch == 1:
            return within, self.mean, self.alpha
        timeout, grid = tables.timeout_s, len(tables.u) - 1
        reader = _Reader(waits, timeout, grid)
        sizes = np.arange(1, max_batch + 1)
        # Timed out with b = 2..B-1: the non-openers, then the openers of every timed-out
        # size (point masses at T), summed over b < B.
        per_b = np.zeros((order, targets, max_batch))  # column b-1: requests of a timed-out batch of b within
        if self.timed_out is not None:
            per_b[:, :, 1 : max_batch - 1] = reader.read(self.timed_out, np.arange(max_batch - 2), sizes[:-2])
        per_b[:, :, : max_batch - 1] += (waits[:, : max_batch - 1] >= timeout)[None] * self.p_one.T[:, None, :]
        below = np.concatenate([np.zeros((order, targets, 1)), np.cumsum(per_b[:, :, : max_batch - 1], axis=2)], axis=2)
        at_full = np.zeros((order, targets, max_batch))
        at_full[:, :, 1:] = reader.read(self.full, np.arange(max_batch - 1), sizes[:-1])
        at_full[:, :, 1:] += (waits[:, 1:] >= 0)[None] * self.fill_one.T[:, None, :]
        within[:, 1:] = np.einsum("itb,bi->tb", (below + at_full)[:, :, 1:], self.opening)
        return within, self.mean, self.alpha


def _cost(tables: WindowTables, batch_cost: np.ndarray, alpha: np.ndarray, mean: np.ndarray, max_batch: int) -> np.ndarray:
    """Expected cost per request of every (target, B): E[cost of a batch] / E[b]."""
    arrivals = tables.counting.arrivals
    ones = np.ones(arrivals.order)
    cost = np.empty(batch_cost.shape)
    cost[:, 0] = batch_cost[:, 0]
    if max_batch == 1:
        return cost
    p_one = tables.p_T[: max_batch - 1] @ ones  # (B-1, n)
    fill_one = tables.i_T[: max_batch - 1] @ (arrivals.D1 @ ones)
    finite = np.where(np.isfinite(batch_cost), batch_cost, 0.0)
    timed_out = np.cumsum(finite[:, : max_batch - 1, None] * p_one[None], axis=1)  # (targets, B-1, n): b < B
    filled = finite[:, 1:, None] * fill_one[None]  # (targets, B-1, n): full at B
    cost[:, 1:] = np.einsum("tbi,bi->tb", timed_out + filled, alpha[1:]) / mean[None, 1:]
    return np.where(np.isfinite(batch_cost), cost, np.inf)
