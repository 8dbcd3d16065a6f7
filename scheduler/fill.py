"""How full the policy's batches are at a rate, and what a request costs on the function then.

The batching policy closes a batch when it holds B requests or when its oldest has waited
the timeout T. At a rate where T gathers fewer than B, the batches are smaller than B,
and the function's fixed cost per invocation (its base time, the per-request fee) is
shared by fewer requests. The planner priced every request on the function at a full
batch of B: on a light model (a 3 ms base, 0.8 ms a row; B = 64, T about 100 ms) at 60-220
req/s, batches of 7-20 were priced as batches of 64, the function looked a third cheaper
than it billed, and hybrid sent 92% of the traffic there while one instance all along cost
25% less (issue 15's own scenario). The planning family never showed it: its batch sizes
are small enough to fill at its rates.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def batch_fill(rates: np.ndarray, batch_size: int, wait_s: float) -> np.ndarray:
    """The mean size of the batches closed at each rate (requests/s): the first request, and
    what arrives (Poisson) while it waits, at most `batch_size` in all:
    1 + E[min(N, B - 1)], N ~ Poisson(rate x T)."""
    mu = np.maximum(np.asarray(rates, float), 0.0) * max(wait_s, 0.0)
    most = max(1, batch_size) - 1
    p = np.exp(-mu)  # P(N = 0); underflows to 0 where N is surely past `most`, as it should
    below, mean = p.copy(), np.zeros_like(mu)
    for j in range(1, most):
        p = p * mu / j
        below += p
        mean += j * p
    return 1.0 + mean + most * np.clip(1.0 - below, 0.0, 1.0)


def function_price(rates: np.ndarray, batch_size: int, wait_s: float, bill: Callable[[int], float]) -> np.ndarray:
    """What one request costs on the function at each rate: the bill of a batch of the mean
    fill (`bill(b)`: one invocation of b requests; between whole sizes, the line between
    their bills) over the fill. The bill is nearly linear in the size, so the mean bill
    per request is the bill at the mean size over that size."""
    most = max(1, batch_size)
    sizes = np.arange(1, most + 1)
    bills = np.array([bill(int(b)) for b in sizes], dtype=float)
    fill = batch_fill(rates, most, wait_s)
    return np.interp(fill, sizes, bills) / fill
