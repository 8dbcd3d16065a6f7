"""How late the gateway's event loop runs what is due, measured all the time.

A request that arrives while the loop is busy waits in the socket about that long
before its handler runs, and its answer waits about as long again to be written:
time the client measures and the runner's clock never sees. Admission takes it off
the SLO (`ModelRunner.submit`'s `edge_s`), so that the SLO holds where the client
measures it, not only between the handler's first and last line.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .loop import BackgroundLoop


class LoopLag(BackgroundLoop):
    """The lag is the 90th percentile of the last `window` samples, one every `period_s`
    (about the last second): a lag that persists (a saturated loop) counts, one stall
    (a collection, a slow callback) does not, since it is over before the next request."""

    def __init__(self, period_s: float = 0.01, window: int = 100) -> None:
        self.period_s = period_s
        self._samples: deque[float] = deque(maxlen=window)
        self.seconds = 0.0

    @property
    def edge_s(self) -> float:
        """What a request loses outside the runner's clock: waiting to be read, and its
        answer waiting to be written."""
        return 2.0 * self.seconds

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(self.period_s)
            self._samples.append(max(0.0, time.monotonic() - began - self.period_s))
            ordered = sorted(self._samples)
            self.seconds = ordered[int(0.9 * (len(ordered) - 1))]
