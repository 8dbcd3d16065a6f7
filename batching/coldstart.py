"""How often a batch meets a cold FaaS environment, from the arrival model rather than a replay.

Why: the tuner mixes a cold start into the latency of a share p of the requests; p
observed in one replay from cold mixes start-up with steady state and follows one
sample path. Here p follows from the MAP, the batch-closing law of (B, T), the time
each batch holds its environment, the provider's keep-alive and a concurrency limit.

The model (a birth-death approximation of the warm pool; the provider reuses the
environment idle longest, as `scheduler.environments.WarmEnvironments` does):
- Per MAP phase i, batches close at rate mu_i (arrivals of the phase as a Poisson
  stream of rate lambda_i batched by (B, T), rescaled to the exact mean batch size),
  and the environments in use form an infinite-server queue with offered load
  rho_i = mu_i E[busy | i] (Poisson in steady state; Takacs' M/G/inf result).
- Birth: with w warm environments, a closing batch finds all w busy with the
  probability of Erlang's loss formula B(w, rho_i) (insensitive to the service law);
  it then starts a new one: w -> w + 1, a cold start.
- Death: a released environment waits behind the idle ones; with J idle (itself
  included) it is reclaimed if fewer than J batches close within the keep-alive K
  after its release. The count of closings in K, from each starting phase, is the
  MMPP counting law (Neuts 1989; Lucantoni 1991), taken off its generating function
  by an FFT on a circle of radius r < 1 (Abate and Whitt 1992).
- The pool w is a birth-death chain with these phase-averaged rates; its stationary
  law gives the cold-start rate. Cold starts happen when the pool has shrunk in a
  lull (a low-rate phase, or gaps, longer than the keep-alive) or concurrency climbs
  past any level used before.
A run of horizon H from no warm environment adds its start-up: every batch closing
before the first environment comes free (the first cold start plus the busy time)
is cold. The cold start lengthens a batch's hold on its environment: the start-up
term includes it, the steady-state term does not (cold batches are rare there).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, pdtr

from .arrivals import MAP

_FLOOR = 1e-300


def phase_batching(arrivals: MAP, size_pmf: np.ndarray, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per phase: the batch closing rate mu_i and the batch-size law (phases, B).

    Each phase's arrivals are batched as Poisson at its own rate (exact for an MMPP
    whose phases outlast a batch); the rates are then scaled so that their
    stationary mean is the exact closing rate lambda / E[b] of `size_pmf`."""
    pmf = np.asarray(size_pmf, dtype=float)
    big_b = len(pmf)
    lam = arrivals.D1.sum(axis=1)
    mean_count = lam * timeout_s  # arrivals after the opener within T, Poisson per phase
    k = np.arange(big_b - 1)
    log_pois = k[None, :] * np.log(np.maximum(mean_count, _FLOOR))[:, None] - mean_count[:, None] - gammaln(k + 1)[None, :]
    laws = np.zeros((len(lam), big_b))
    laws[:, : big_b - 1] = np.exp(log_pois)
    laws[:, big_b - 1] = np.clip(1.0 - laws[:, : big_b - 1].sum(axis=1), 0.0, None)
    sizes = np.arange(1, big_b + 1)
    mu = lam / (laws @ sizes)
    exact = arrivals.rate / float(sizes @ pmf)
    mu *= exact / float(arrivals.theta @ mu)
    return mu, laws


def closings_within(arrivals: MAP, batch_mean: np.ndarray, window_s: float, counts: int) -> np.ndarray:
    """P(fewer than j batches close within `window_s` | phase at the start), j = 0..counts.

    Shape (phases, counts + 1). A batch closes about every E[b | phase] arrivals, so
    fewer than j closings ending in phase e is fewer than j E[b | e] arrivals (the
    gaps of a filling batch are Erlang, far more regular than Poisson). The MAP's
    counting law, jointly with the end phase, is the generating function
    exp(window (D0 + z D1)) sampled on a circle of radius r and inverted by FFT
    (Abate and Whitt 1992); r keeps the aliasing of counts past the FFT below 1e-8."""
    n = arrivals.order
    top = int(np.ceil(counts * float(batch_mean.max()))) + 2
    size = 1 << int(np.ceil(np.log2(2 * top)))
    radius = 1e-8 ** (1.0 / size)
    z = radius * np.exp(2j * np.pi * np.arange(size) / size)
    gen = window_s * (arrivals.D0[None, :, :] + z[:, None, None] * arrivals.D1[None, :, :])
    if n == 1:
        values = np.exp(gen[:, 0, 0])[:, None, None]
    else:  # batched eigendecomposition: the phase generators here are diagonalisable
        lam, vec = np.linalg.eig(gen)
        values = (vec * np.exp(lam)[:, None, :]) @ np.linalg.inv(vec)  # (size, start, end)
    coeffs = np.fft.fft(values, axis=0).real / size / radius ** np.arange(size)[:, None, None]
    below = np.concatenate([np.zeros((1, n, n)), np.cumsum(np.clip(coeffs[:top], 0.0, 1.0), axis=0)])  # P(N < k)
    k = np.arange(counts + 1)[:, None] * batch_mean[None, :]  # (J, end): arrivals threshold
    lower = np.minimum(np.floor(k).astype(int), top - 1)
    frac = k - lower
    ends = np.arange(n)[None, :]
    per_end = below[lower, :, ends] * (1 - frac)[..., None] + below[lower + 1, :, ends] * frac[..., None]  # (J, end, start)
    return np.clip(per_end.sum(axis=1).T, 0.0, 1.0)


def _erlang_b(levels: np.ndarray, rho: np.ndarray, scalar: bool = True) -> np.ndarray:
    """Erlang's loss probability B(w, rho) for each level w (last axis); rho (...,), or
    (..., W) per level with scalar=False."""
    r = np.maximum(rho, _FLOOR)[..., None] if scalar else np.maximum(rho, _FLOOR)
    log_pmf = levels * np.log(r) - r - gammaln(levels + 1)
    cdf = np.maximum(pdtr(levels, r), _FLOOR)
    return np.minimum(np.exp(log_pmf) / cdf, 1.0)


def _cold_aware_loss(levels: np.ndarray, rho: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """B(w, rho + extra * B): a batch that starts cold holds its environment cold_start_s
    longer, so at a pool level where most batches start cold (regrowth after a lull)
    the offered load is mu (hold + cold start); a mean-field fixed point, a few rounds."""
    loss = _erlang_b(levels, rho)
    for _ in range(4):
        loss = _erlang_b(levels, rho[..., None] + extra[..., None] * loss, scalar=False)
    return loss


def _truncated_poisson(levels: int, rho: np.ndarray) -> np.ndarray:
    """(..., W, W): row w is Poisson(rho) on 0..w-1 renormalised (row 0 empty)."""
    r = np.maximum(rho, _FLOOR)[..., None]
    k = np.arange(levels)
    pmf = np.exp(k * np.log(r) - r - gammaln(k + 1))  # (..., W)
    mask = k[None, :] < k[:, None]  # (W, W): n < w
    rows = np.where(mask, pmf[..., None, :], 0.0)
    total = rows.sum(axis=-1, keepdims=True)
    return np.divide(rows, total, out=np.zeros_like(rows), where=total > 0)


def pool_steps(arrivals: MAP, mu: np.ndarray, batch_mean: np.ndarray, busy: np.ndarray, keep_alive_s: float, levels: int,
               cold_start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per closing batch, at pool w = 0..levels-1: the chance it starts a new environment
    (split by the phase it closes in: (targets, phases, W)) and the chance its
    environment is then reclaimed before it is used again ((targets, W), at the pool
    it left). The closing's phase is drawn from the closing-stationary law."""
    share = arrivals.theta * mu / float(arrivals.theta @ mu)
    rho = mu[None, :] * busy  # (targets, phases)
    w = np.arange(levels, dtype=float)
    up = share[None, :, None] * _cold_aware_loss(w, rho, mu[None, :] * cold_start_s)
    fewer = closings_within(arrivals, batch_mean, keep_alive_s, levels)  # (phases, W+1)
    # A release at pool w with n others busy has J = w - n idle (itself included):
    # reclaimed when fewer than J batches close within K after it.
    idx = np.clip(w[:, None] - np.arange(levels)[None, :], 0, levels).astype(int)  # (W, W): J = w - n
    reclaim = fewer[:, idx]  # (phases, W, W)
    others = _truncated_poisson(levels, rho)  # (targets, phases, W, W)
    down = np.einsum("p,tpwn,pwn->tw", share, others, reclaim)
    return up, down


def cold_probability(
    arrivals: MAP,
    size_pmf: np.ndarray,
    busy_s: np.ndarray,
    keep_alive_s: float,
    timeout_s: float,
    concurrency: int | None = None,
    horizon_s: float | None = None,
    cold_start_s: float = 0.0,
    per_request: bool = True,
) -> np.ndarray:
    """The probability that a request (or, per_request=False, a batch) meets a cold start.

    busy_s: (B,) or (targets, B): how long a warm batch of b holds its environment
    (invocation overhead plus service). Returns one value per target (a 0-d array for
    1-d busy_s). Stationary when horizon_s is None; else the share over a run of
    horizon_s seconds that starts with no warm environment (cold_start_s then
    lengthens the start-up's holds). `concurrency` caps the pool: a batch that finds
    every allowed environment busy waits for one instead of starting another."""
    busy = np.atleast_2d(np.asarray(busy_s, dtype=float))
    pmf = np.asarray(size_pmf, dtype=float)
    mu, laws = phase_batching(arrivals, pmf, timeout_s)
    hold = busy[:, : len(pmf)] @ laws.T  # (targets, phases)
    rho = mu[None, :] * hold
    top = float(rho.max())
    levels = int(min(top + 8.0 * np.sqrt(top) + 16.0, 4096))
    if concurrency is not None:
        levels = min(levels, int(concurrency) + 1)
    up, down = pool_steps(arrivals, mu, laws @ np.arange(1, len(pmf) + 1), hold, keep_alive_s, levels, cold_start_s)
    if concurrency is not None and levels == concurrency + 1:
        up[:, :, -1] = 0.0  # at the cap a batch waits for an environment: none is started
    pi = _pool_law(up.sum(axis=1), down)
    sizes = np.arange(1, len(pmf) + 1)
    batch_rate = arrivals.rate / float(sizes @ pmf)
    weight = laws @ sizes if per_request else np.ones(len(mu))  # (phases,)
    scale = arrivals.rate if per_request else batch_rate
    rate = np.einsum("tw,tpw,p->t", pi, up, weight) / float(arrivals.theta @ (mu * weight) / (arrivals.theta @ mu))
    if horizon_s is not None:
        rate = rate + _start_up(arrivals, mu, hold, cold_start_s, horizon_s, weight, scale)
    rate = np.clip(rate, 0.0, 1.0)
    return rate[0] if np.ndim(busy_s) == 1 else rate


def _pool_law(up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Stationary law of the pool seen by closing batches: per closing, a birth with
    chance up(w), then this batch's environment reclaimed before its next use with
    chance down(w + birth). A birth-death chain: pi(w+1)/pi(w) = P(w -> w+1)/P(w+1 -> w)."""
    rise = up[:, :-1] * (1.0 - down[:, 1:])
    fall = (1.0 - up[:, 1:]) * down[:, 1:]
    ratio = rise / np.maximum(fall, _FLOOR)
    log_pi = np.concatenate([np.zeros((len(up), 1)), np.cumsum(np.log(np.maximum(ratio, _FLOOR)), axis=1)], axis=1)
    pi = np.exp(log_pi - log_pi.max(axis=1, keepdims=True))
    return pi / pi.sum(axis=1, keepdims=True)


def _start_up(arrivals: MAP, mu: np.ndarray, hold: np.ndarray, cold_start_s: float, horizon_s: float,
              weight: np.ndarray, scale: float) -> np.ndarray:  # fmt: skip
    """The start-up's extra cold share over a run of horizon_s from no warm environment:
    every batch that closes before the first environment is free again is cold (the
    first closing plus its cold, lengthened hold), from the arrival-stationary phase."""
    first = hold @ arrivals.theta + cold_start_s  # (targets,)
    mean_weight = float(arrivals.theta @ (mu * weight)) / float(arrivals.theta @ mu)
    closings = 1.0 + first * float(arrivals.theta @ mu)
    return np.minimum(closings * mean_weight / (scale * horizon_s), 1.0)
