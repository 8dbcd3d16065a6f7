"""The log-likelihood of a sequence of gaps under a MAP: the score that ranks arrival fits.

The density of gaps x_1..x_N, starting in phase distribution a, is
    a expm(D0 x_1) D1 expm(D0 x_2) D1 ... expm(D0 x_N) D1 1
(the forward recursion of a MAP; e.g. Buchholz, "An EM-algorithm for MAP fitting
from real traffic data", 2003). A loop over 10^4 gaps in Python, or scipy's expm
per gap, takes far longer than a re-tune may; here every factor is built at once
and the product is taken as a balanced tree of stacked matrix products (log2 N
vectorised steps). All factors are non-negative, so the products have no
cancellation; each level is rescaled by its largest entry and the scales are
summed as logarithms, so neither gaps of minutes nor fast phases underflow.

expm(D0 x): for a diagonal D0 it is exp(D0_ii x); for a D0 with real eigenvalues and
a well-conditioned eigenbasis, V diag(exp(lambda x)) V^-1. Otherwise it is computed by
uniformisation with scaling and squaring (Moler and Van Loan, "Nineteen dubious
ways", 2003): with q = max -D0_ii and B = D0 + q I >= 0, expm(D0 x) =
exp(-q x) expm(B x); expm(B x / 2^s) is a Taylor series of non-negative terms
(||B x / 2^s|| <= 1/2), and it is squared s times, each gap with its own s.
"""

from __future__ import annotations

import math

import numpy as np

from .arrivals import MAP

_TAYLOR_TERMS = 14  # ||B x / 2^s|| <= 1/2: the remainder is below 1e-19 of the sum


def log_likelihood(process: MAP, gaps: np.ndarray, start: np.ndarray | None = None) -> float:
    """log of the joint density of the gaps, the first starting in `start` (default: the stationary pi).

    -inf where the process cannot produce the sequence."""
    x = np.asarray(gaps, dtype=float).reshape(-1)
    if len(x) == 0:
        return 0.0
    factors, logs = _factors(process, x)
    alpha = process.pi if start is None else np.asarray(start, dtype=float)
    return _chain_log(alpha, factors, float(logs.sum()))


def mean_log_likelihood(process: MAP, gaps: np.ndarray) -> float:
    """log_likelihood per gap, of the gaps in seconds: a score comparable across samples of one size."""
    x = np.asarray(gaps, dtype=float).reshape(-1)
    return log_likelihood(process, x) / len(x) if len(x) else 0.0


def transition_densities(process: MAP, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """expm(D0 x_k) D1 for each gap, as (factors, logs): factor k times exp(logs[k]).

    Each factor is scaled so that its largest entry is 1 (or left zero)."""
    return _factors(process, np.asarray(gaps, dtype=float).reshape(-1))


def chain_log_likelihood(start: np.ndarray, factors: np.ndarray, log_scale: float = 0.0) -> float:
    """log(start F_1 F_2 ... F_N 1) + log_scale for non-negative n x n factors F_k."""
    return _chain_log(np.asarray(start, dtype=float), factors, log_scale)


def _factors(process: MAP, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d0, d1 = process.D0, process.D1
    off = d0 - np.diag(np.diag(d0))
    if not off.any():
        rates = -np.diag(d0)
        exponent = -np.outer(x, rates)  # (N, n): log of exp(D0_ii x)
        top = exponent.max(axis=1)
        scaled = np.exp(exponent - top[:, None])
        factors = scaled[:, :, None] * d1[None, :, :]
    else:
        expm, top = _expm_eigen(d0, x) or _expm_stack(d0, x)
        factors = np.maximum(expm @ d1, 0.0)
    peak = factors.reshape(len(factors), -1).max(axis=1)
    safe = np.where(peak > 0, peak, 1.0)
    logs = np.where(peak > 0, top + np.log(safe), -np.inf)
    return factors / safe[:, None, None], logs


def _expm_eigen(d0: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """expm(D0 x_k) = V diag(exp(lambda x_k)) V^-1 where D0 has real eigenvalues and a well-conditioned
    basis (the canonical MAP(2)s: triangular, distinct rates); None otherwise."""
    values, vectors = np.linalg.eig(d0)
    if np.iscomplexobj(values) or np.linalg.cond(vectors) > 1e6:
        return None
    inverse = np.linalg.inv(vectors)
    exponent = np.outer(x, values)
    top = exponent.max(axis=1)
    scaled = np.exp(exponent - top[:, None])
    return np.einsum("ij,kj,jl->kil", vectors, scaled, inverse), top


def _expm_stack(d0: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """expm(D0 x_k) for every k, as (matrices, logs): matrix k times exp(logs[k])."""
    n = len(d0)
    q = float(max(-np.diag(d0).min(), 0.0))
    b = d0 + q * np.eye(n)  # non-negative
    norm = float(np.abs(b).sum(axis=1).max())
    bx = norm * x
    squarings = np.where(bx > 0.5, np.ceil(np.log2(np.maximum(bx, 1e-300) / 0.5)), 0).astype(int)
    scaled = b[None, :, :] * (x / np.exp2(squarings))[:, None, None]
    total = np.broadcast_to(np.eye(n), scaled.shape).copy()
    term = total.copy()
    for k in range(1, _TAYLOR_TERMS + 1):
        term = term @ scaled / k
        total += term
    logs = np.zeros(len(x))
    for level in range(1, int(squarings.max(initial=0)) + 1):
        due = squarings >= level
        squared = total[due] @ total[due]
        peak = squared.max(axis=(1, 2))
        total[due] = squared / peak[:, None, None]
        logs[due] = 2.0 * logs[due] + np.log(peak)
    return total, logs - q * x


def _chain_log(alpha: np.ndarray, factors: np.ndarray, log_scale: float) -> float:
    if not math.isfinite(log_scale):
        return -math.inf
    mats = factors
    while len(mats) > 1:
        if len(mats) % 2:
            mats = np.concatenate([mats[:-2], (mats[-2] @ mats[-1])[None]])
            if len(mats) == 1:
                break
        mats = mats[0::2] @ mats[1::2]
        peak = mats.reshape(len(mats), -1).max(axis=1)
        if not (peak > 0).all():
            return -math.inf
        mats = mats / peak[:, None, None]
        log_scale += float(np.log(peak).sum())
    value = float(alpha @ mats[0] @ np.ones(len(alpha)))
    return math.log(value) + log_scale if value > 0 else -math.inf
