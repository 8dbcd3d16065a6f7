"""One entry point for the arrival model: several candidate fits, the one that predicts held-back gaps best.

No single family fits all traffic: a MAP(2) by moments is exact for MAP(2) traffic and
cheap for the latency model, but real traces mix near-zero gaps, heavy tails and slow
drift that only more phases hold (`batching.phase_fit`). More phases also fit noise.
So each candidate is fitted to the first part of the gaps and scored by the
log-likelihood of the rest (a proper scoring rule; held-out validation rather than an
information criterion, since the candidates are fitted by different methods), and the
winner is refitted to all of them. Holding back the latest gaps also favours a model
that still holds after the traffic drifted.

A candidate with more phases must beat a smaller one by `MARGIN` nats per gap and by
`EVIDENCE` nats in all (a likelihood ratio of e^3, about 20): the latency model's cost
grows with the square of the order, and a smaller gain is within the noise of the
held-back sample. At most `MAX_HELD` gaps are held back (and `phase_fit` fits its
persistence to at most as many), so a fit costs about the same for any window above
that: tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .fitting import FitResult, _checked, fit_map2
from .likelihood import mean_log_likelihood
from .phase_fit import MIN_MEAN, fit_hyper_map

CANDIDATES = ("map2", "hmap2", "hmap3", "hmap4")
MIN_CHOICE_GAPS = 100  # fewer, and MAP(2) is fitted without a contest
HOLDOUT = 1.0 / 3.0  # the latest third of the gaps is held back
MAX_HELD = 5000  # ... or the latest MAX_HELD, if fewer
MARGIN = 0.002  # nats per held-back gap a larger model must gain
EVIDENCE = 3.0  # nats in all it must gain


def candidate_fit(name: str, min_mean: float = MIN_MEAN) -> Callable[[np.ndarray], FitResult]:
    """The fitting function of a candidate: "map2" (`fit_map2`) or "hmapK" (`fit_hyper_map` with K phases)."""
    if name == "map2":
        return fit_map2
    if name.startswith("hmap") and name[4:].isdigit() and int(name[4:]) >= 1:
        phases = int(name[4:])
        return lambda gaps: fit_hyper_map(gaps, phases, min_mean)
    raise ValueError(f"unknown arrival fit {name!r}; known: map2, hmap1, hmap2, ...")


def fit_arrivals(
    interarrivals: np.ndarray, candidates: Sequence[str] = CANDIDATES, min_mean: float = MIN_MEAN
) -> FitResult:
    """The candidate fit that best predicts the latest gaps, refitted to all of them.

    `scores` holds each candidate's held-out log-likelihood per gap (gaps in seconds);
    with fewer than MIN_CHOICE_GAPS gaps (or one candidate) the first candidate is
    fitted without a contest and `scores` is empty."""
    gaps = _checked(interarrivals)
    if not candidates:
        raise ValueError("no candidate fits")
    if len(gaps) < MIN_CHOICE_GAPS or len(candidates) == 1 or not gaps.mean() > 0:
        return candidate_fit(candidates[0], min_mean)(gaps)
    split = len(gaps) - min(max(1, int(len(gaps) * HOLDOUT)), MAX_HELD)
    train, held = gaps[:split], gaps[split:]
    scores: dict[str, float] = {}
    orders: dict[str, int] = {}
    for name in candidates:
        try:
            trained = candidate_fit(name, min_mean)(train)
        except ValueError:  # e.g. a training part with no elapsed time
            continue
        scores[name] = mean_log_likelihood(trained.map, held)
        orders[name] = trained.map.order
    if not scores:
        return candidate_fit(candidates[0], min_mean)(gaps)
    winner = choose(scores, orders, len(held))
    return replace(candidate_fit(winner, min_mean)(gaps), scores=scores)


def choose(scores: dict[str, float], orders: dict[str, int], held: int) -> str:
    """The candidate of fewest phases within max(MARGIN, EVIDENCE / held) of the best score per
    gap (ties: the first given)."""
    best = max(scores.values())
    good = [name for name, score in scores.items() if score >= best - max(MARGIN, EVIDENCE / held)]
    return min(good, key=lambda name: orders[name])
