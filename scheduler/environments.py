"""A function's execution environments: which are warm, and whether the next batch meets a cold one.

Pure bookkeeping of when each environment was last freed. The simulator keeps one as
the provider's truth; the dispatch core keeps one as its belief, fed by the batches it
sees finish, for the scheduler's view (how many environments are likely warm now).
"""

from __future__ import annotations

import heapq
import math

from .keepwarm import KeepWarmPolicy


class WarmEnvironments:
    """FaaS execution environments. A batch reuses an environment that has been idle for
    less than keep_alive_s, else starts a new one (a cold start). Of several idle ones it
    takes the one idle longest: every reuse then refreshes the environment closest to
    being reclaimed, which keeps as many warm as the traffic can.

    With a `KeepWarmPolicy`, the policy hears of every invocation and its pings run as
    short invocations (`ping_s` each) at the times it asks for; they are counted apart
    (`pings`, and `ping_cold_starts` for the pings that started an environment)."""

    def __init__(
        self, keep_alive_s: float, keep_warm: KeepWarmPolicy | None = None, ping_s: float = 0.001, cold_start_s: float = 0.0
    ) -> None:
        self.keep_alive_s = keep_alive_s
        self.keep_warm, self.ping_s, self.cold_start_s = keep_warm, ping_s, cold_start_s
        self.pings = self.ping_cold_starts = 0
        self._free_at: list[float] = []  # heap: when each live environment is (or was) free
        self._ends: list[float] = []  # heap: batch invocations' ends, not yet told to the policy

    def preload(self, count: int, at: float) -> None:
        """`count` environments already warm and idle at `at` (a gateway warms one at startup)."""
        for _ in range(count):
            heapq.heappush(self._free_at, at)

    def idle_count(self, now: float) -> int:
        """Environments warm and idle at `now`."""
        return sum(1 for t in self._free_at if t <= now and now - t < self.keep_alive_s)

    def acquire(self, now: float) -> bool:
        """Take an environment at `now`; True if it had to be started cold."""
        if self.keep_warm is not None:
            self.advance(now)
            self.keep_warm.started(now)
        return self._take(now)

    def _take(self, now: float) -> bool:
        free_at = self._free_at
        while free_at and now - free_at[0] >= self.keep_alive_s:
            heapq.heappop(free_at)  # idle too long: reclaimed by the provider
        if free_at and free_at[0] <= now:
            heapq.heappop(free_at)
            return False
        return True

    def run_all(self, starts: list[float], warm_s: list[float], cold_s: list[float]) -> list[bool]:
        """Invocations at `starts` (in time order), each busy `warm_s[k]` from its start, or
        `cold_s[k]` if it meets a cold environment: whether each did. The same as `acquire`
        then `release_at` for each in turn, in one loop (the simulator's fast path)."""
        if self.keep_warm is not None:
            colds = []
            for now, warm, cold_busy in zip(starts, warm_s, cold_s):
                cold = self.acquire(now)
                self.release_at(now + (cold_busy if cold else warm))
                colds.append(cold)
            return colds
        free_at, keep_alive = self._free_at, self.keep_alive_s
        push, pop, replace = heapq.heappush, heapq.heappop, heapq.heapreplace
        colds = [False] * len(starts)
        for k, now in enumerate(starts):
            while free_at and now - free_at[0] >= keep_alive:
                pop(free_at)  # idle too long: reclaimed by the provider
            if free_at and free_at[0] <= now:
                replace(free_at, now + warm_s[k])  # the one idle longest, busy again
            else:
                colds[k] = True
                push(free_at, now + cold_s[k])
        return colds

    def release_at(self, free_time: float) -> None:
        heapq.heappush(self._free_at, free_time)
        if self.keep_warm is not None:
            heapq.heappush(self._ends, free_time)

    def advance(self, until: float) -> None:
        """Tell the policy of the invocations that ended, and run its pings, in time order up to `until`."""
        policy = self.keep_warm
        if policy is None:
            return
        while True:
            end = self._ends[0] if self._ends else math.inf
            ping = policy.next_wakeup()
            ping = math.inf if ping is None else ping
            if min(end, ping) > until or min(end, ping) == math.inf:
                return
            if end <= ping:
                policy.ended(heapq.heappop(self._ends))
                continue
            count = policy.due(ping)
            if count == 0 and policy.next_wakeup() == ping:
                return  # nothing more will change before another invocation
            taken = [self._take(ping) for _ in range(count)]
            for cold in taken:  # a ping that starts an environment holds it through the cold start
                heapq.heappush(self._free_at, ping + self.ping_s + (self.cold_start_s if cold else 0.0))
            self.pings += count
            self.ping_cold_starts += sum(taken)
