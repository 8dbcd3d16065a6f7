"""A circuit breaker per instance: stop sending batches to one that keeps failing.

Closed (normal) until `threshold` failures in a row; then open for a cooldown, during
which the instance takes no batch; then half-open: one trial batch at a time. A
success closes it; a failure opens it again for twice as long (up to
`max_cooldown_s`). Failures here are the instance's own (unreachable, timed out,
overloaded), not a request's bad content, which bisection pins on the request.
Pure: the caller passes `now`.
"""

from __future__ import annotations


class CircuitBreaker:
    def __init__(self, threshold: int = 3, cooldown_s: float = 1.0, max_cooldown_s: float = 30.0) -> None:
        self.threshold, self.base_cooldown_s, self.max_cooldown_s = threshold, cooldown_s, max_cooldown_s
        self.failures = 0  # in a row
        self.cooldown_s = cooldown_s
        self.open_until: float | None = None
        self.trips = 0

    def state(self, now: float) -> str:
        if self.open_until is None:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def allows(self, now: float, inflight: int) -> bool:
        """May a batch go to the instance now (it has `inflight` batches already)?"""
        state = self.state(now)
        return state == "closed" or (state == "half-open" and inflight == 0)

    def success(self) -> None:
        self.failures, self.open_until, self.cooldown_s = 0, None, self.base_cooldown_s

    def failure(self, now: float) -> bool:
        """Count a failure; True when it (re)opens the breaker."""
        self.failures += 1
        if self.state(now) == "half-open":  # the trial failed
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
        elif self.failures < self.threshold or self.open_until is not None:
            return False
        self.open_until = now + self.cooldown_s
        self.trips += 1
        return True
