"""Keep an adaptive model's (B, T) tuned while the gateway serves.

Once a second the loop asks the policy whether a re-tune is due (cheap, on the
event loop), runs the solve in a separate, lower-priority process, and applies
the result back on the loop. New limits take effect with the next batch that opens.

Why a process and not a thread: the solve (the arrival fit and the tuner) is tens
of milliseconds of Python and numpy (hundreds before the tuner searched by whole
timeouts); in a thread it holds the GIL often enough to stall the event loop,
requests then reach the handler in bursts, the fitted traffic looks burstier than
it is, and the next solve gets slower (seen at 1500 req/s: p50 went to 327 ms).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from batching.adaptive import AdaptivePolicy
from batching.allocator import retain_freed_memory

from .loop import BackgroundLoop

log = logging.getLogger("sluice.tuner")


def _start_solver() -> None:
    """Serving first: the solver takes only what the gateway and workers leave. With
    SCHED_IDLE (Linux) a waking gateway or worker preempts it at once; a plain nice
    level still let solves delay batch timers by tens of milliseconds on 2 cores.
    The solver keeps the memory it frees for the next solve (`retain_freed_memory`)."""
    retain_freed_memory()
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


class RetuneLoop(BackgroundLoop):
    def __init__(
        self, model: str, policy: AdaptivePolicy, interval_s: float = 1.0, on_change: Callable[[], None] | None = None
    ) -> None:
        self.model, self.policy, self.interval_s = model, policy, interval_s
        self.on_change = on_change  # told when new limits are in force (the runner re-arms its timer)
        self._solver: ProcessPoolExecutor | None = None

    def start(self) -> None:
        self._solver = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_solver
        )
        super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._solver is not None:
            self._solver.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            gaps = self.policy.plan(now)
            if gaps is None:
                continue
            started = time.perf_counter()
            try:
                solved = await loop.run_in_executor(self._solver, self.policy.solve, gaps)
            except Exception:  # a failed solve keeps the current limits
                log.exception("re-tune failed", extra={"model": self.model})
                continue
            self.policy.apply(solved, time.monotonic())
            result, fit = solved.result, solved.fit
            if self.on_change is not None:
                self.on_change()
            choice = self.policy.choice
            log.info(
                "re-tuned",
                extra={
                    "model": self.model, "batch_size": choice.batch_size if choice else None,
                    "timeout_ms": round(choice.timeout_s * 1e3, 3) if choice else None,
                    "predicted_ms": round(choice.latency_s * 1e3, 3) if choice else None,
                    "feasible": result.choice is not None, "rate": round(fit.target["rate"], 3),
                    "scv": round(fit.target["scv"], 3), "fit": fit.kind,
                    "solve_ms": round((time.perf_counter() - started) * 1e3, 1),
                },
            )  # fmt: skip
