"""MAPs of 3 or 4 phases for traffic whose gaps a MAP(2) cannot hold.

Real traces mix scales a 2-phase marginal cannot: the Azure code trace has 17% of
its gaps under 1 ms, a third under 5 ms, and idle gaps of minutes. A MAP(2) fitted
by moments matches mean, SCV and third moment but puts a few percent of its gaps
where the trace puts a third, and batches form more slowly than they really do.

Method (fitting the marginal and the correlation separately, as in Horvath,
Buchholz and Telek, "A MAP fitting approach with independent approximation of the
inter-arrival time distribution and the lag correlation", QEST 2005):

1. The marginal: a hyperexponential of k phases, sum_i w_i Exp(mean m_i), fitted
   by maximum likelihood with EM (the classic mixture EM; for heavy-tailed
   traffic, Khayari, Sadre and Haverkort, "Fitting world-wide web request traces
   with the EM-algorithm", Performance Evaluation 2003). EM runs on a histogram
   of the gaps in fine logarithmic bins (EM for grouped data: McLachlan and
   Jones, Biometrics 1988), so each iteration costs the same for 10^2 gaps or
   10^6. Phase means are kept >= `min_mean` of the mean gap: near-zero gaps
   would otherwise pull a phase towards an unbounded rate, and the latency
   model's cost grows with the fastest rate times the timeout (the same bound
   as fitting.py's fast phase).
2. The correlation: the phase of each gap is kept with probability c and
   otherwise drawn afresh from w, so D0 = -diag(1/m), D1 = diag(1/m) P with
   P = c I + (1 - c) 1 w. w stays the stationary law of P, so the marginal is
   exactly the fitted one, and rho_k = c^k (SCV - 1) / (2 SCV): bursts of
   short gaps (c > 0) or alternation (c < 0). c maximises the sequence's
   likelihood (`batching.likelihood`), which sees clustering of short gaps that
   the lag-1 autocorrelation, dominated by the idle gaps, hides.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from .arrivals import MAP
from .fitting import FitResult, _checked, _result, describe
from .likelihood import chain_log_likelihood

MIN_MEAN = 0.01  # of the mean gap: the fastest phase's mean (fitting.py's _MIN_FAST_MEAN)
_BINS_PER_DECADE = 40  # bins 6% wide: responsibilities barely change across one
_EM_ITERATIONS = 300
_EM_TOLERANCE = 1e-7  # stop when the log-likelihood per gap gains less
_MIN_WEIGHT = 1e-6  # a phase with less weight is dropped
PERSISTENCE_GAPS = 5000  # c is fitted to the latest gaps only: one parameter needs no more
_PERSISTENCE_DECADES = 3.0  # c <= 1 - 10^-3: memory of about a thousand gaps at most


def fit_hyper_map(interarrivals: np.ndarray, phases: int, min_mean: float = MIN_MEAN) -> FitResult:
    """A MAP with a `phases`-phase hyperexponential marginal and one persistence, fitted by likelihood.

    kind is f"hmap{k}" with k the phases kept (phases of negligible weight are dropped)."""
    gaps = _checked(interarrivals)
    target = describe(gaps)
    mean = float(gaps.mean())
    if mean <= 0 or len(gaps) < 2:
        raise ValueError("need at least two gaps and some elapsed time")
    unit = gaps / mean
    weights, means = fit_hyperexponential(unit, phases, min_mean)
    persistence = fit_persistence(weights, means, unit)
    process = hyper_map(weights, means, persistence).scaled(1.0 / mean)
    return _result(process, f"hmap{len(weights)}", target)


def hyper_map(weights: np.ndarray, means: np.ndarray, persistence: float) -> MAP:
    """D0 = -diag(1/m), D1 = diag(1/m) (c I + (1 - c) 1 w): marginal sum_i w_i Exp(m_i), phase kept w.p. c."""
    w, rates = np.asarray(weights, dtype=float), 1.0 / np.asarray(means, dtype=float)
    chain = _chain(w, persistence)
    return MAP(-np.diag(rates), rates[:, None] * chain)


def fit_hyperexponential(unit_gaps: np.ndarray, phases: int, min_mean: float = MIN_MEAN) -> tuple[np.ndarray, np.ndarray]:
    """(weights, means) of the k-phase hyperexponential of largest likelihood, means >= min_mean.

    The means are rescaled at the end so that the mixture's mean is the sample's exactly."""
    if phases < 1:
        raise ValueError("need at least one phase")
    x, counts = _histogram(unit_gaps, min_mean)
    total = counts.sum()
    sample_mean = float((x * counts).sum() / total)
    # Start from means spread over the log-quantiles, the upper tail given its own phase.
    levels = (np.arange(phases) + 0.5) / phases
    levels[-1] = max(levels[-1], 1.0 - 0.5 / phases**2)
    cumulative = np.cumsum(counts) / total
    means = np.maximum(x[np.minimum(np.searchsorted(cumulative, levels), len(x) - 1)], min_mean)
    means = np.maximum(means * np.linspace(1.0, 1.5, phases), min_mean)  # never two alike
    weights = np.full(phases, 1.0 / phases)
    previous = -math.inf
    for _ in range(_EM_ITERATIONS):
        log_density = (np.log(np.maximum(weights, 1e-300)) - np.log(means))[:, None] - x[None, :] / means[:, None]
        top = log_density.max(axis=0)
        norm = top + np.log(np.exp(log_density - top[None, :]).sum(axis=0))
        likelihood = float((counts * norm).sum()) / total
        responsibility = np.exp(log_density - norm[None, :]) * counts[None, :]
        mass = responsibility.sum(axis=1)
        weights = mass / total
        alive = mass > 0
        means = np.where(alive, (responsibility @ x) / np.where(alive, mass, 1.0), means)
        means = np.maximum(means, min_mean)
        if likelihood - previous < _EM_TOLERANCE:
            break
        previous = likelihood
    keep = weights >= _MIN_WEIGHT
    weights, means = _merged(weights[keep] / weights[keep].sum(), means[keep])
    means = means * sample_mean / float(weights @ means)
    order = np.argsort(means)
    return weights[order], means[order]


def fit_persistence(weights: np.ndarray, means: np.ndarray, unit_gaps: np.ndarray) -> float:
    """The c of largest likelihood of the latest gaps (at most PERSISTENCE_GAPS), from the least P allows to 0.999.

    One parameter needs no more gaps than that, and each likelihood costs time in
    proportion to them. Searched (Brent) on s, with c = 1 - 10^-s for s in [0, 3]
    and c = s * (the least c) for s in [-1, 0]: equal steps in s are equal steps in
    the log of the memory 1 / (1 - c)."""
    if len(weights) == 1:
        return 0.0
    w = np.asarray(weights, dtype=float)
    rates = 1.0 / np.asarray(means, dtype=float)
    latest = np.asarray(unit_gaps, dtype=float)[-PERSISTENCE_GAPS:]
    exponent = np.log(rates)[None, :] - np.outer(latest, rates)  # log f_i(x_k)
    top = exponent.max(axis=1)
    density = np.exp(exponent - top[:, None])  # (N, k), largest 1 per gap
    log_scale = float(top.sum())
    lowest = float(max(-w / (1.0 - w)))

    def persistence(s: float) -> float:
        return -s * lowest if s < 0 else 1.0 - 10.0**-s

    def negative(s: float) -> float:
        return -chain_log_likelihood(w, density[:, :, None] * _chain(w, persistence(s))[None, :, :], log_scale)

    found = optimize.minimize_scalar(negative, bounds=(-1.0, _PERSISTENCE_DECADES), method="bounded", options={"xatol": 0.02})
    return persistence(float(found.x)) if found.fun <= negative(0.0) else 0.0


def _merged(weights: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phases of (nearly) one mean made one: two phases held at min_mean are one phase twice over."""
    order = np.argsort(means)
    weights, means = weights[order], means[order]
    kept_w, kept_m = [weights[0]], [means[0]]
    for w, m in zip(weights[1:], means[1:]):
        if m <= kept_m[-1] * (1 + 1e-6):
            kept_m[-1] = (kept_w[-1] * kept_m[-1] + w * m) / (kept_w[-1] + w)
            kept_w[-1] += w
        else:
            kept_w.append(w)
            kept_m.append(m)
    return np.array(kept_w), np.array(kept_m)


def _chain(weights: np.ndarray, persistence: float) -> np.ndarray:
    n = len(weights)
    chain = persistence * np.eye(n) + (1.0 - persistence) * np.outer(np.ones(n), weights)
    return np.maximum(chain, 0.0)


def _histogram(unit_gaps: np.ndarray, min_mean: float) -> tuple[np.ndarray, np.ndarray]:
    """(representative gap, count) per non-empty logarithmic bin; gaps below min_mean / 100 share the first."""
    lowest = min_mean / 100.0
    clipped = np.maximum(unit_gaps, lowest)
    decades = math.log10(max(float(clipped.max()), lowest * 10) / lowest)
    edges = lowest * np.logspace(0.0, decades, int(decades * _BINS_PER_DECADE) + 2)
    index = np.clip(np.searchsorted(edges, clipped, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(index, minlength=len(edges) - 1).astype(float)
    sums = np.bincount(index, weights=unit_gaps, minlength=len(edges) - 1)
    full = counts > 0
    return sums[full] / counts[full], counts[full]
