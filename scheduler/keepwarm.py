"""Keeping serverless environments warm for the batches that are coming.

A provider reclaims an execution environment once it has been idle for its
keep-alive (AWS does not publish it; minutes). The next batch after a longer gap
pays a cold start. After Shahrad et al. ("Serverless in the Wild", ATC'20), the
histogram of the function's idle times (from the end of its last invocation to the
start of the next) decides, each time it goes idle:

- if even short idle times (the 5th percentile, the "head") outlast the keep-alive,
  let the environment go, and warm it again a cold start's time before the head;
- otherwise, shortly before each keep-alive runs out, ping it (one short invocation)
  if the chance that the next batch comes within the keep-alive a ping buys, given
  the idle time so far (the hazard, read off the histogram), is worth the ping:
  at least `min_hazard`, the ratio of a ping's price to a cold start's. Past the
  longest idle time seen there is no evidence, and it stops.

Shahrad et al. keep warm up to the 99th percentile of idle times; weighing each
ping by the hazard also covers the rarer long gaps of very bursty traffic (the
Azure code trace), where a ping costs about a hundredth of the cold start it saves.

Pings run as many invocations at once as the last busy period needed, so that
many environments stay warm. The policy is pure: the owner tells it when batches
start and end and asks `due(now)` how many pings to send; it never reads a clock.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field


@dataclass
class IdleTimes:
    """The idle times seen, kept sorted (the most recent `limit`; older ones drop out first)."""

    limit: int = 4096
    _sorted: list[float] = field(default_factory=list)
    _order: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._sorted)

    def record(self, idle_s: float) -> None:
        if len(self._order) >= self.limit:
            old = self._order.pop(0)
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._order.append(idle_s)
        bisect.insort(self._sorted, idle_s)

    def above(self, low: float) -> int:
        """How many idle times exceed `low`."""
        return len(self._sorted) - bisect.bisect_right(self._sorted, low)

    def between(self, low: float, high: float) -> int:
        """How many idle times are in (low, high]."""
        return bisect.bisect_right(self._sorted, high) - bisect.bisect_right(self._sorted, low)

    def percentile(self, p: float) -> float:
        """The smallest recorded idle time with at least a share `p` of them at or below it."""
        if not self._sorted:
            raise ValueError("no idle times recorded")
        return self._sorted[max(0, math.ceil(p * len(self._sorted)) - 1)]


@dataclass
class KeepWarmPolicy:
    keep_alive_s: float  # how long the provider keeps an idle environment
    cold_start_s: float  # how long a cold start takes (from the profile)
    min_hazard: float = 0.01  # a ping's price over a cold start's (AWS bills init: about 1/70 at 1 GB)
    head: float = 0.05
    min_samples: int = 10  # fewer idle times than this: no opinion, leave it to the provider
    margin: float = 0.1  # check (and ping) when this share of the keep-alive is left
    max_warm_s: float = 3600.0  # never keep warm longer than this after a batch
    idle: IdleTimes = field(default_factory=IdleTimes)
    in_flight: int = 0
    pings: int = 0
    _idle_since: float | None = None
    _peak: int = 0
    _next_check: float | None = None

    def __post_init__(self) -> None:
        if not self.keep_alive_s > 0 or not self.cold_start_s >= 0 or not 0 < self.margin < 1:
            raise ValueError("need keep_alive_s > 0, cold_start_s >= 0 and 0 < margin < 1")

    def started(self, now: float) -> None:
        """A batch's invocation began."""
        if self.in_flight == 0:
            if self._idle_since is not None:
                self.idle.record(max(0.0, now - self._idle_since))
            self._next_check, self._peak = None, 0
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)

    def ended(self, now: float) -> None:
        """A batch's invocation finished; when the function goes idle, plan the first check."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0:
            self._idle_since = now
            self._next_check = None
            if len(self.idle) >= self.min_samples:
                head = self.idle.percentile(self.head)
                lead = self.cold_start_s + self.margin * self.keep_alive_s
                if head > self.keep_alive_s + lead:
                    self._next_check = now + head - lead  # let it go; warm it again in time
                else:
                    self._next_check = now + self._refresh

    @property
    def _refresh(self) -> float:
        return self.keep_alive_s * (1 - self.margin)

    def next_wakeup(self) -> float | None:
        """When `due` should next be asked; None when nothing is planned."""
        return self._next_check

    def due(self, now: float) -> int:
        """How many environments to ping at once now (0: none), and when to check next."""
        if self._next_check is None or now < self._next_check or self.in_flight or self._idle_since is None:
            return 0
        idle_so_far = now - self._idle_since
        survivors = self.idle.above(idle_so_far)
        if survivors == 0 or idle_so_far > self.max_warm_s:
            self._next_check = None  # longer than any idle time seen: no evidence to keep paying
            return 0
        self._next_check = now + self._refresh
        # A ping now keeps it warm until now + keep-alive; without it, it would be gone soon.
        hazard = self.idle.between(idle_so_far, idle_so_far + self.keep_alive_s) / survivors
        if hazard < self.min_hazard:
            return 0
        count = max(1, self._peak)
        self.pings += count
        return count
