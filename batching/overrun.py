"""How much later than predicted batches are answered, so deadline-aware closing can allow for it.

The model predicts a batch's answer at its planned close plus s(b) (measured once)
plus a fixed overhead. Live, more happens: timers fire late, a worker idle for a
while runs slower than when it was measured, the host is shared. Closing at
"deadline - predicted" then lands a little past the deadline, and with many batches
closed that way the tail of the latency sits right on the SLO. The owner records,
per answered batch, the gap between the answer and the prediction; a high quantile
of the recent gaps, weighted by the requests each batch answered (a late big batch
makes more requests late than a late small one), is added to the predictions the
queue and the tuner use.
"""

from __future__ import annotations

import numpy as np


class OverrunTracker:
    """A high quantile of the last `window` overruns (seconds; negative means early),
    each weighted by the requests it delayed."""

    def __init__(self, quantile: float = 0.99, window: int = 512, minimum: int = 32, ceiling_s: float = 1.0) -> None:
        if not 0 < quantile < 1 or window < 1:
            raise ValueError("need 0 < quantile < 1 and a positive window")
        self.quantile, self.minimum, self.ceiling_s = quantile, minimum, ceiling_s
        # A ring of the last `window` (overrun, requests): its order does not matter to a quantile.
        self._values, self._weights = np.zeros(window), np.zeros(window)
        self._count = self._next = 0

    def __len__(self) -> int:
        return self._count

    def record(self, overrun_s: float, requests: int = 1) -> None:
        self._values[self._next], self._weights[self._next] = overrun_s, max(1, requests)
        self._next = (self._next + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def allowance(self) -> float:
        """The extra time to allow for: the quantile of recent overruns, never below 0 nor
        above `ceiling_s` (an overrun that large is an outage, not noise); 0 until
        `minimum` batches have been seen."""
        if self._count < self.minimum:
            return 0.0
        values, weights = self._values[: self._count], self._weights[: self._count]
        order = np.argsort(values)
        share = np.cumsum(weights[order]) / weights.sum()
        value = float(values[order][min(int(np.searchsorted(share, self.quantile)), len(values) - 1)])
        return min(max(value, 0.0), self.ceiling_s)
