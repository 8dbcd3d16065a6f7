"""Prometheus metrics of the emulator, prefixed `sluice_faas_emulator_`, in a registry of its own.

They are what AWS bills and throttles by (invocations, billed duration, GB-seconds,
cold starts, throttles), so a local run can be costed as a real one would be.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

OUTCOMES = ("ok", "error", "throttled", "timeout")


class EmulatorMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "sluice_faas_emulator_"
        self.invocations = Counter(
            p + "invocations", "Invocations, by function and outcome (ok, error, throttled, timeout).",
            ["function", "outcome"], registry=r,
        )  # fmt: skip
        self.cold_starts = Counter(
            p + "cold_starts", "Execution environments started (each one a cold start).", ["function"], registry=r
        )
        self.throttles = Counter(
            p + "throttles", "Invocations refused with 429: the function's concurrency was in use.", ["function"],
            registry=r,
        )  # fmt: skip
        self.billed_ms = Counter(
            p + "billed_duration_ms", "Billed duration in ms (each invocation rounded up to 1 ms).", ["function"],
            registry=r,
        )  # fmt: skip
        self.gb_seconds = Counter(
            p + "billed_gb_seconds", "Billed compute: billed seconds times memory in GB.", ["function"], registry=r
        )
        self.environments = Gauge(
            p + "environments", "Execution environments, by state (busy, idle).", ["function", "state"], registry=r
        )

    def for_function(self, function: str) -> FunctionMetrics:
        return FunctionMetrics(self, function)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class FunctionMetrics:
    """One function's metric children, bound once so that an invocation does not look them up."""

    def __init__(self, metrics: EmulatorMetrics, function: str) -> None:
        self.function = function
        self.cold_starts = metrics.cold_starts.labels(function)
        self.throttles = metrics.throttles.labels(function)
        self.billed_ms = metrics.billed_ms.labels(function)
        self.gb_seconds = metrics.gb_seconds.labels(function)
        self._outcomes = {outcome: metrics.invocations.labels(function, outcome) for outcome in OUTCOMES}
        self._environments = metrics.environments

    def invoked(self, outcome: str) -> None:
        self._outcomes[outcome].inc()

    def watch_environments(self, busy: Callable[[], int], idle: Callable[[], int]) -> None:
        """The gauges read the pool when scraped, so they can never drift from it."""
        self._environments.labels(self.function, "busy").set_function(busy)
        self._environments.labels(self.function, "idle").set_function(idle)
