"""Tuning with the cold starts the model predicts: a fixed point of the tuner and `batching.coldstart`.

The tuner mixes each target's cold start into a share p of its requests, one p per
target (`Target.cold_probability`). That share depends on the configuration: how
batches close under the arrival model, how long each holds its environment, the
provider's keep-alive and the concurrency (`batching.coldstart.cold_probability`).
So: tune, model p for the choice on every target, tune again with it, until the
choice holds (one or two more rounds; the model costs about a millisecond a round).

p is the chosen configuration's, applied to every configuration of the target:
exact where it matters (the choice), an approximation for the configurations beside
it. Cold starts only add latency, so a p that rises makes the tuner pick smaller
batches or shorter timeouts; the rounds stop when the choice is one already tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .arrivals import MAP
from .coldstart import cold_probability
from .counting import CountingProcess
from .latency import WindowTables, wait_distribution
from .tuner import Target, TuneResult

ROUNDS = 3


@dataclass(frozen=True)
class Warmth:
    """What the provider does with idle function environments, as the model needs it."""

    keep_alive_s: float
    concurrency: int | None = None
    horizon_s: float | None = None  # a run of this long from no warm environment; None: a long-running service


def modelled_cold(arrivals: MAP, targets: Sequence[Target], batch_size: int, timeout_s: float, warmth: Warmth) -> list[float]:
    """Per target, the probability that a request of (batch_size, timeout_s) meets a cold
    start (0 where the target has no cold start or cannot run the batch)."""
    timeout = max(timeout_s, 1e-9)
    law = wait_distribution(WindowTables(CountingProcess(arrivals, max(batch_size - 1, 1), timeout), timeout, 64), batch_size)
    return [
        float(cold_probability(arrivals, law.size_pmf, np.asarray(t.service_s[:batch_size]) + t.overhead_s,
                               warmth.keep_alive_s, timeout, warmth.concurrency, warmth.horizon_s, t.cold_start_s))
        if t.cold_start_s > 0 and len(t.service_s) >= batch_size else 0.0
        for t in targets
    ]  # fmt: skip


def tune_with_cold_starts(
    search: Callable[[list[Target]], TuneResult], arrivals: MAP, targets: Sequence[Target], warmth: Warmth,
    start: Sequence[float] | None = None,
) -> tuple[TuneResult, list[float]]:  # fmt: skip
    """`search(targets)` (a tuner call) with each target's cold probability the model's
    for the choice; `start` (the last solve's probabilities) saves a round when the
    traffic moved little. Returns the result and the probabilities it was tuned with.
    A target's own `cold_probability` is a floor."""
    base = list(targets)

    def with_cold(p: Sequence[float]) -> list[Target]:
        return [replace(t, cold_probability=max(t.cold_probability, q)) for t, q in zip(base, p)]

    if not any(t.cold_start_s > 0 for t in base):
        return search(base), [0.0] * len(base)
    cold = list(start) if start is not None and len(start) == len(base) else [0.0] * len(base)
    result = search(with_cold(cold))
    tried = set()
    for _ in range(ROUNDS):
        chosen = result.choice or result.fallback
        if chosen is None:
            break
        key = (chosen.batch_size, chosen.timeout_s, chosen.target.name)
        if key in tried:
            break
        tried.add(key)
        modelled = modelled_cold(arrivals, base, chosen.batch_size, chosen.timeout_s, warmth)
        if np.allclose(modelled, cold, rtol=0.05, atol=1e-4):
            break
        cold = modelled
        result = search(with_cold(cold))
    return result, cold
