"""Latency with cold starts mixed in per MAP phase, not as one flat share.

Why: cold starts gather where concurrency peaks, in the busy phase, where batches
fill fast and requests wait little. Mixing a flat share p into the average wait law
(`WaitDistribution.latency_cdf`) gives the cold requests the average wait, and
over-predicts the tail (by up to 16% at p99 under `sluice tune --verify`). Here the
requests of batches opened in phase j meet a cold start with that phase's
probability (`batching.coldstart.cold_by_phase`) and keep that phase's wait law.

The wait law opened in a fixed phase is `batching.latency.wait_distribution`'s with
alpha = e_j (every term there is linear in alpha); the batch is taken to close in
the phase it opened in (T is short beside a phase).
"""

from __future__ import annotations

import numpy as np

from .arrivals import MAP
from .coldstart import cold_by_phase
from .counting import CountingProcess
from .latency import WaitDistribution, WindowTables, cumulative_integral, smallest_reaching, wait_distribution


def phase_laws(tables: WindowTables, batch_size: int) -> tuple[WaitDistribution, list[WaitDistribution]]:
    """The stationary wait law of (batch_size, T) and, per opening phase j, the law of a
    batch opened in j (its `alpha` the unit vector)."""
    law = wait_distribution(tables, batch_size)
    order = tables.counting.arrivals.order
    if batch_size == 1:
        return law, [law] * order
    d1, ones = tables.counting.arrivals.D1, np.ones(order)
    du = tables.timeout_s / (len(tables.u) - 1)
    filled = tables.i_T[batch_size - 2] @ d1
    laws = []
    for j in range(order):
        pmf = np.empty(batch_size)
        pmf[:-1] = tables.p_T[: batch_size - 1, j, :] @ ones
        pmf[-1] = filled[j] @ ones
        cumulative = np.zeros((batch_size, len(tables.u)))
        if batch_size > 2:
            cumulative[1 : batch_size - 1] = cumulative_integral(tables.timeout_dens[j][:, : batch_size - 2], du).T
        cumulative[-1] = tables.opener_cum[:, batch_size - 2, j] + pmf[-1]
        if batch_size >= 3:
            cumulative[-1] += cumulative_integral(tables.fill_dens[j][:, batch_size - 3], du)
        at_cap = np.append(pmf[:-1], 0.0)
        alpha = np.eye(order)[j]
        laws.append(WaitDistribution(batch_size, tables.timeout_s, tables.u, pmf, cumulative, at_cap, alpha))
    return law, laws


def latency_cdf(law: WaitDistribution, laws: list[WaitDistribution], x: np.ndarray, service: np.ndarray,
                overhead_s: float, cold_by_phase: np.ndarray, cold_start_s: float) -> np.ndarray:  # fmt: skip
    """P(latency <= x) for a random request: per opening phase j (weight alpha_j), warm
    with 1 - p_j, cold (shifted by the cold start) with p_j, divided by E[b]."""
    x = np.atleast_1d(np.asarray(x, dtype=float))
    shift = np.asarray(service, dtype=float)[: law.batch_size] + overhead_s
    total = np.zeros(len(x))
    for j, phase_law in enumerate(laws):
        weight = float(law.alpha[j])
        if weight <= 0:
            continue
        warm = phase_law.requests_within(x[:, None] - shift[None, :]).sum(axis=1)
        p = float(cold_by_phase[j])
        if p > 0:
            cold = phase_law.requests_within(x[:, None] - cold_start_s - shift[None, :]).sum(axis=1)
            warm = (1 - p) * warm + p * cold
        total += weight * warm
    return np.clip(total / law.mean_batch_size, 0.0, 1.0)


def latency_percentile(law: WaitDistribution, laws: list[WaitDistribution], percentile: float, service: np.ndarray,
                       overhead_s: float, cold_by_phase: np.ndarray, cold_start_s: float) -> float:  # fmt: skip
    """The smallest x with P(latency <= x) >= percentile (`smallest_reaching`, as `WaitDistribution`)."""
    shift = np.asarray(service, dtype=float)[: law.batch_size] + overhead_s
    low, high = float(shift.min()), float(law.timeout_s + shift.max() + cold_start_s) + 1e-12

    def cdf(x: np.ndarray) -> np.ndarray:
        return latency_cdf(law, laws, x, service, overhead_s, cold_by_phase, cold_start_s)

    return smallest_reaching(cdf, percentile, low, high)


def predict(arrivals: MAP, batch_size: int, timeout_s: float, service_s: np.ndarray, overhead_s: float,
            cold_start_s: float, keep_alive_s: float, horizon_s: float | None, percentile: float,
            concurrency: int | None = None, grid: int = 128) -> tuple[float, float]:  # fmt: skip
    """(per-request cold probability, latency at `percentile`) of the fixed policy
    (batch_size, timeout_s) on one FaaS target, cold starts modelled per phase over a
    run of horizon_s from no warm environment (None: stationary)."""
    service = np.asarray(service_s, dtype=float)[:batch_size]
    timeout = max(float(timeout_s), 1e-9)
    tables = WindowTables(CountingProcess(arrivals, max(batch_size - 1, 1), timeout), timeout, grid)
    law, laws = phase_laws(tables, batch_size)
    per_phase, share, sizes = cold_by_phase(arrivals, law.size_pmf, service + overhead_s, keep_alive_s, timeout,
                                            concurrency, horizon_s, cold_start_s)  # fmt: skip
    cold = float(per_phase[0] @ (share * sizes) / float(share @ sizes))
    # the phase a batch opens in (alpha) weighs the per-phase probability, as it weighs the waits
    latency = latency_percentile(law, laws, percentile, service, overhead_s, per_phase[0], cold_start_s)
    return cold, latency
