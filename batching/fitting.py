"""Fitting a MAP(2) to observed inter-arrival times.

Method (moment matching; facts from the literature, code written here):

1. The marginal: the first three moments of the gaps (scaled to mean 1) are
   matched with an order-2 phase-type distribution. Its density is
   w f_slow + (1 - w) f_fast, a combination of two exponential densities with
   means u_slow >= u_fast; these are found from r_k = E[X^k] / k! by Prony's
   method (r_{k+2} = s r_{k+1} - p r_k, u = roots of u^2 - s u + p). Telek and
   Heindl ("Matching moments for acyclic discrete and continuous phase-type
   distributions of second order", 2003) give where an acyclic PH(2) exists,
   in n2 = m2 / m1^2 and n3 = m3 / (m1 m2): n2 >= 3/2 (SCV >= 1/2); for
   SCV >= 1, n3 > 3/2 n2; for 1/2 <= SCV < 1,
   (9 n2 - 12 + 3 sqrt(2) (2 - n2)^1.5) / n2 <= n3 <= 6 (n2 - 1) / n2.
   A sample n3 outside that range is clipped into it; for SCV > 1 it is also
   kept where the fast phase's mean is >= 1/100 of the mean (near the lower
   bound the fast phase's rate grows without limit, and a stiff MAP is costly
   for the latency model's uniformisation) and the slow phase's weight stays
   above about 1e-8.
2. The correlation: a MAP(2) is determined by those three moments and gamma,
   the second eigenvalue of its embedded phase chain P, and its
   autocorrelations are rho_k = gamma^k (1 - 1/SCV) / 2 (Bodrog, Heindl,
   Horvath and Telek, "A Markovian canonical form of second-order
   matrix-exponential processes", 2008). Following their canonical form, the
   MAP is built as D0 = [[-l1, (1 - a) l1], [0, -l2]] with
   D1 = [[a l1, 0], [(1 - b) l2, b l2]] (gamma = ab >= 0) or
   D1 = [[0, a l1], [b l2, (1 - b) l2]] (gamma = -ab < 0), phase 1 being the
   slow or the fast one. Given gamma and the marginal, a solves a quadratic
   (gamma >= 0) or a linear equation (gamma < 0). The gamma that matches the
   sample's lag-1 autocorrelation is clipped to the range where a, b in [0, 1]
   exist (found by bisection; it is an interval containing 0) and to
   |gamma| <= 0.999, so that the fitted memory stays within what a sample can
   show. (The tests check that the exact moments of random MAP(2)s come back.)

Fallbacks and `FitResult.kind`: "poisson" for fewer than 20 gaps or no elapsed
time (all gaps zero); "erlang" (Erlang-2, the least variable MAP(2), SCV 1/2)
for SCV < 1/2; "renewal-h2" (SCV > 1) or "renewal-hypo" (SCV < 1) when the
sample's lag-1 autocorrelation is within noise of zero (|acf1| < 3 / sqrt(n))
or no correlation fits the marginal; "map2-clipped" when the correlation had
to be clipped (for SCV < 1 a MAP(2) allows |acf1| of a few hundredths at
most), "map2" otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .arrivals import MAP

MIN_GAPS = 20
_GAMMA_LIMIT = 0.999
_ACF_NOISE_Z = 3.0
_SCV_ONE = 1e-6
_ERLANG_SCV = 0.5 + 1e-6
_SLACK = 1e-9
_MIN_FAST_MEAN = 0.01
_MIN_MEAN_S = 1e-12  # a smaller mean gap means no time elapsed: rate 1e12/s, Poisson


@dataclass(frozen=True)
class FitResult:
    """A fitted arrival model, what it was asked to match and what it matches."""

    map: MAP
    # fit_map2: "map2", "map2-clipped", "renewal-h2", "renewal-hypo", "erlang" or "poisson";
    # batching.phase_fit: "hmap2" to "hmap4" (a hyperexponential marginal with a persistent phase)
    kind: str
    target: dict[str, float]  # of the sample: rate, scv, acf1
    achieved: dict[str, float]  # of the model: rate, scv, acf1
    # batching.arrival_fits: each candidate's held-out log-likelihood per gap, by candidate; else empty
    scores: dict[str, float] = field(default_factory=dict)


def describe(interarrivals: np.ndarray) -> dict[str, float]:
    """Rate (1/mean), SCV and lag-1 autocorrelation of a sample of gaps.

    Zero gaps are valid data (simultaneous arrivals). With no spread the SCV and
    acf1 are 0; with mean 0 the rate is infinite.
    """
    gaps = _checked(interarrivals)
    mean = float(gaps.mean())
    centred = gaps - mean
    # einsum, not a BLAS dot product: the latter may wait on BLAS threads for milliseconds on a busy machine
    variance = float(np.einsum("i,i->", centred, centred)) / len(gaps)
    covariance = float(np.einsum("i,i->", centred[:-1], centred[1:])) / len(gaps)
    scv = (math.sqrt(variance) / mean) ** 2 if mean > 0 else 0.0
    acf1 = covariance / variance if variance > 0 else 0.0
    return {"rate": 1.0 / mean if mean > 0 else math.inf, "scv": scv, "acf1": acf1}


def fit_map2(interarrivals: np.ndarray) -> FitResult:
    """The MAP(2) whose mean, SCV, third moment and lag-1 autocorrelation best match the gaps."""
    gaps = _checked(interarrivals)
    target = describe(gaps)
    mean = float(gaps.mean())
    if len(gaps) < MIN_GAPS or mean < _MIN_MEAN_S:
        return _result(MAP.poisson(1.0 / max(mean, _MIN_MEAN_S)), "poisson", target)
    unit = gaps / mean
    acf1 = target["acf1"]
    if abs(acf1) < _ACF_NOISE_Z / math.sqrt(len(gaps)):
        acf1 = 0.0
    result = map2_from_moments((1.0, float(np.mean(unit**2)), float(np.mean(unit**3))), acf1)
    return _result(result.map.scaled(1.0 / mean), result.kind, target)


def map2_from_moments(moments: tuple[float, float, float], acf1: float) -> FitResult:
    """The canonical MAP(2) with moments E[X], E[X^2], E[X^3] and lag-1 autocorrelation acf1.

    Moments or correlations that no MAP(2) has are clipped to the nearest that one does.
    """
    m1, m2, m3 = (float(m) for m in moments)
    if not m1 > 0 or not all(math.isfinite(m) for m in (m1, m2, m3, acf1)):
        raise ValueError(f"moments must be finite with a positive mean, got {moments}")
    scv = max(m2 / m1 / m1 - 1.0, 0.0)
    target = {"rate": 1.0 / m1, "scv": scv, "acf1": float(acf1)}
    if abs(scv - 1.0) <= _SCV_ONE:
        return _result(MAP.poisson(1.0 / m1), "poisson", target)
    if scv < _ERLANG_SCV:
        return _result(MAP([[-2.0, 2.0], [0.0, -2.0]], [[0.0, 0.0], [2.0, 0.0]]).scaled(1.0 / m1), "erlang", target)
    marginal = _marginal(scv, m3 / m1 / m1 / m1)
    factor = (scv - 1.0) / (2.0 * scv)  # rho_1 = gamma * factor
    wanted = float(np.clip(acf1 / factor, -_GAMMA_LIMIT, _GAMMA_LIMIT))
    low, high = _gamma_range(marginal)
    gamma = min(max(wanted, low), high)
    process = _verified(marginal, gamma) if abs(gamma) >= 1e-12 else None
    if process is None:
        gamma, process = 0.0, _verified(marginal, 0.0)
    if process is None:  # not seen in tests; rounding in some extreme corner
        return _result(MAP.poisson(1.0 / m1), "poisson", target)
    if gamma == 0.0:
        kind = "renewal-h2" if scv > 1.0 else "renewal-hypo"
    else:
        kind = "map2" if abs(gamma - acf1 / factor) <= 1e-9 * max(1.0, abs(gamma)) else "map2-clipped"
    return _result(process.scaled(1.0 / m1), kind, target)


# -- the marginal ------------------------------------------------------------------


@dataclass(frozen=True)
class _Marginal:
    """An order-2 PH density w f(u_slow) + (1 - w) f(u_fast), f(u) the exponential density of mean u; mean 1."""

    u_slow: float
    u_fast: float
    w_slow: float


def _marginal(scv: float, m3: float) -> _Marginal:
    """The PH(2) with mean 1, the given SCV and the third moment nearest m3 that it allows.

    For SCV > 1 the third moment is also kept where the fast phase's mean is at
    least 1/100 of the mean (just above the lower bound the fast phase tends to
    zero, which makes the MAP stiff) and the slow phase's weight is not below
    about 1e-8 (beyond that rounding takes over).
    """
    n2 = scv + 1.0
    r2 = n2 / 2.0
    if scv > 1.0:
        c = _MIN_FAST_MEAN
        u_slow = (r2 - c) / (1.0 - c)
        w_slow = (1.0 - c) / (u_slow - c)
        r3_low = w_slow * u_slow**3 + (1.0 - w_slow) * c**3
        r3_high = r2 + (r2 - 1.0) * (math.sqrt((r2 - 1.0) * 1e8) + 1.0)
        r3 = max(min(m3 / 6.0, r3_high), r3_low)
    else:
        n3_low = (9.0 * n2 - 12.0 + 3.0 * math.sqrt(2.0) * (2.0 - n2) ** 1.5) / n2
        n3_high = 6.0 * (n2 - 1.0) / n2
        margin = 1e-6 * (n3_high - n3_low)
        r3 = min(max(m3 / n2, n3_low + margin), n3_high - margin) * n2 / 6.0
    total = (r3 - r2) / (r2 - 1.0)  # u_slow + u_fast
    product = total - r2  # u_slow * u_fast
    root = math.sqrt(max(total * total - 4.0 * product, 0.0))
    u_slow = (total + root) / 2.0
    u_fast = product / u_slow
    w_slow = (1.0 - u_fast) / (u_slow - u_fast) if u_slow > u_fast else 1.0
    return _Marginal(u_slow, u_fast, w_slow)


# -- the canonical MAP(2) ------------------------------------------------------------


def _canonical(marginal: _Marginal, gamma: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(D0, D1) of a MAP(2) with this marginal and eigenvalue gamma, or None if there is none.

    Phase A may end with an arrival (probability a) or move to phase B; B always
    ends with one. Either phase may be the slow one, so both are tried.
    """
    u, w = marginal, marginal.w_slow
    for mean_a, mean_b, weight_a in ((u.u_slow, u.u_fast, w), (u.u_fast, u.u_slow, 1.0 - w)):
        rate_a, rate_b = 1.0 / mean_a, 1.0 / mean_b
        if rate_a == rate_b:
            continue
        k = rate_b / (rate_b - rate_a)  # the weight of f(mean_a) in the law of A then B
        for a in _solve_a(k, weight_a, gamma):
            b = abs(gamma) / a if a > 0 else 0.0
            if not (-_SLACK <= a <= 1 + _SLACK and -_SLACK <= b <= 1 + _SLACK):
                continue
            a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
            d0 = np.array([[-rate_a, (1 - a) * rate_a], [0.0, -rate_b]])
            if gamma >= 0:
                d1 = np.array([[a * rate_a, 0.0], [(1 - b) * rate_b, b * rate_b]])
            else:
                d1 = np.array([[0.0, a * rate_a], [b * rate_b, (1 - b) * rate_b]])
            return d0, d1
    return None


def _verified(marginal: _Marginal, gamma: float) -> MAP | None:
    """The canonical MAP(2), if it exists and its first three moments are the marginal's.

    The check guards the extreme corners (weights near 0, rates far apart) where
    rounding can make a nominal solution wrong.
    """
    matrices = _canonical(marginal, gamma)
    if matrices is None:
        return None
    process = MAP(*matrices)
    u, w = marginal, marginal.w_slow
    for k, factorial in ((1, 1.0), (2, 2.0), (3, 6.0)):
        expected = factorial * (w * u.u_slow**k + (1.0 - w) * u.u_fast**k)
        if not abs(process.moment(k) - expected) <= 1e-6 * expected:
            return None
    return process


def _solve_a(k: float, weight_a: float, gamma: float) -> list[float]:
    """The a in [|gamma|, 1] of the canonical form with phase-A weight `weight_a` and eigenvalue gamma.

    With pi_A the embedded stationary probability of phase A, the marginal's
    weight of f(mean_a) is pi_A (a + (1 - a) k). For gamma >= 0,
    pi_A = (a - gamma) / (a (1 - gamma)), a quadratic in a; for gamma < 0,
    pi_A = g / (a (1 + g)) with g = -gamma, linear in a.
    """
    if gamma >= 0:
        qa, qb, qc = k - 1.0, weight_a * (1.0 - gamma) - k - gamma * (k - 1.0), gamma * k
        if gamma == 0.0:
            return [-qb / qa]
        disc = qb * qb - 4.0 * qa * qc
        if disc < 0:
            return []
        big = (-qb - math.copysign(math.sqrt(disc), qb)) / (2 * qa)  # no cancellation
        roots = [big, qc / (qa * big)] if big != 0 else [0.0]
    else:
        g = -gamma
        denominator = weight_a * (1.0 + g) + g * (k - 1.0)
        roots = [g * k / denominator] if denominator != 0 else []
    return [a for a in roots if a >= abs(gamma) * (1 - 1e-12) - _SLACK]


def _gamma_range(marginal: _Marginal) -> tuple[float, float]:
    """The smallest and largest gamma in [-0.999, 0.999] with a canonical MAP(2) for this marginal."""

    def edge(sign: float) -> float:
        if _canonical(marginal, sign * _GAMMA_LIMIT) is not None:
            return sign * _GAMMA_LIMIT
        inside, outside = 0.0, _GAMMA_LIMIT
        for _ in range(48):
            middle = (inside + outside) / 2.0
            if _canonical(marginal, sign * middle) is None:
                outside = middle
            else:
                inside = middle
        return sign * inside

    return edge(-1.0), edge(1.0)


# -- helpers -----------------------------------------------------------------------


def _checked(interarrivals: np.ndarray) -> np.ndarray:
    gaps = np.asarray(interarrivals, dtype=float).reshape(-1)
    if len(gaps) == 0:
        raise ValueError("no inter-arrival times")
    if not np.isfinite(gaps).all() or (gaps < 0).any():
        raise ValueError("inter-arrival times must be finite and non-negative")
    return gaps


def _result(process: MAP, kind: str, target: dict[str, float]) -> FitResult:
    achieved = {"rate": process.rate, "scv": process.scv, "acf1": process.acf(1)}
    return FitResult(process, kind, target, achieved)
