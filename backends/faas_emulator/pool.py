"""The execution environments of one function: reuse, cold starts, keep-alive, concurrency, metering.

As on AWS, an invocation takes the most recently used idle environment (so the
others age out and are reclaimed), or starts a new one: a cold start. Concurrency
is the number of invocations in flight, cold starts included; one more is refused
at once rather than queued, which is what a synchronous Lambda invoke does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from . import aws
from .config import PAYLOAD_LIMIT_BYTES, FunctionConfig
from .environment import Environment, EnvironmentFailure, Reply, Timeout
from .metrics import FunctionMetrics

log = logging.getLogger("sluice.faas_emulator")


class Throttled(Exception):
    """Every slot of the function's concurrency is in use."""


class PoolStopped(Exception):
    """The emulator is shutting down and starts no more environments."""


@dataclass(slots=True)
class Invocation:
    """One finished invocation: what the caller gets back, and its log."""

    request_id: str
    payload: bytes
    function_error: str | None
    outcome: str
    cold: bool
    log: str


class FunctionPool:
    def __init__(self, config: FunctionConfig, metrics: FunctionMetrics) -> None:
        self.config, self.metrics = config, metrics
        self.in_flight = 0
        self._idle: list[Environment] = []  # least recently used first
        self._busy: set[Environment] = set()
        self._stopping_envs: set[asyncio.Task] = set()
        self._slot_freed = asyncio.Condition()
        self._started = 0
        self._stopped = False
        metrics.watch_environments(lambda: len(self._busy), lambda: len(self._idle))

    def pids(self) -> list[int]:
        """Processes of the environments that exist now, busy or idle."""
        return [env.pid for env in (*self._busy, *self._idle) if env.alive and env.pid is not None]

    async def invoke(
        self, payload: bytes, request_id: str, client_context: Any = None, *, wait: bool = False
    ) -> Invocation:
        """Run one invocation; raise Throttled if the function is at its concurrency, unless `wait`
        (an asynchronous invoke, which AWS queues instead of refusing)."""
        if self._stopped:
            raise PoolStopped(self.config.name)
        if self.in_flight >= self.config.max_concurrency:
            if not wait:
                self.metrics.throttles.inc()
                self.metrics.invoked("throttled")
                raise Throttled(self.config.name)
            async with self._slot_freed:
                await self._slot_freed.wait_for(lambda: self._stopped or self.in_flight < self.config.max_concurrency)
            if self._stopped:
                raise PoolStopped(self.config.name)
        self.in_flight += 1
        try:
            return await self._run(payload, request_id, client_context)
        finally:
            self.in_flight -= 1
            async with self._slot_freed:
                self._slot_freed.notify()

    async def _run(self, payload: bytes, request_id: str, client_context: Any) -> Invocation:
        self.reap()
        env = self._take_warm()
        cold = env is None
        init_ms: float | None = None
        init_log = ""
        if env is None:
            env = Environment(self.config, self._started)
            self._started += 1
            self._busy.add(env)
            self.metrics.cold_starts.inc()
            try:
                init = await env.start()
            except EnvironmentFailure as exc:
                self._discard(env)
                return self._platform_error(request_id, exc, cold, "", None, None)
            init_ms, init_log = init.duration_ms, init.log
            if not init.ok:  # the handler's import or model load raised: this environment is no use
                self._discard(env)
                reply = Reply(False, init.body, "", 0.0)
                return self._finish(request_id, reply, env.peak_memory_mb, cold, init_ms, init_log)
            log.info("function %s: environment pid %s started in %.2f ms", self.config.name, env.pid, init_ms)
        header = {
            "request_id": request_id, "client_context": client_context,
            "deadline_ms": int(time.time() * 1000 + self.config.timeout_s * 1000),
        }  # fmt: skip
        try:
            reply = await env.invoke(header, payload)
        except EnvironmentFailure as exc:
            self._discard(env)
            return self._platform_error(request_id, exc, cold, init_log, env, init_ms)
        self._busy.discard(env)
        if self._stopped or env.config is not self.config:  # stopping, or the function was reconfigured
            self._retire(env)
        else:
            self._idle.append(env)
        return self._finish(request_id, reply, env.peak_memory_mb, cold, init_ms, init_log)

    def _finish(
        self, request_id: str, reply: Reply, peak_mb: int, cold: bool, init_ms: float | None, init_log: str,
        status: str | None = None,
    ) -> Invocation:  # fmt: skip
        """Meter the invocation and write its log."""
        body, ok = reply.body, reply.ok
        if ok and len(body) > PAYLOAD_LIMIT_BYTES:
            body, ok = aws.response_too_large(len(body)), False
        billed_ms = max(1, math.ceil(reply.duration_ms)) if reply.duration_ms > 0 else 0
        self.metrics.billed_ms.inc(billed_ms)
        self.metrics.gb_seconds.inc(billed_ms / 1000 * self.config.memory_mb / 1024)
        outcome = "timeout" if status == "timeout" else "ok" if ok else "error"
        self.metrics.invoked(outcome)
        report = aws.Report(request_id, reply.duration_ms, billed_ms, self.config.memory_mb, peak_mb, init_ms, status)
        text = aws.invocation_log(report, init_log, reply.log)
        return Invocation(request_id, body, None if ok else "Unhandled", outcome, cold, text)

    def _platform_error(
        self, request_id: str, exc: EnvironmentFailure, cold: bool, init_log: str,
        env: Environment | None, init_ms: float | None,
    ) -> Invocation:  # fmt: skip
        """The environment was lost (a timeout, or a runtime that exited); `env` is None if in its init."""
        timed_out = isinstance(exc, Timeout)
        if timed_out:
            message = f"{aws.timestamp()} {request_id} {exc}"
            duration_ms = self.config.timeout_s * 1000 if env is not None else 0.0
        else:
            message = f"RequestId: {request_id} Error: {exc}"
            duration_ms = 0.0
        body = aws.function_error(exc.error_type, message)
        reply = Reply(False, body, message + "\n", duration_ms)
        peak_mb = env.peak_memory_mb if env else 0
        return self._finish(request_id, reply, peak_mb, cold, init_ms, init_log, "timeout" if timed_out else "error")

    def _take_warm(self) -> Environment | None:
        while self._idle:
            env = self._idle.pop()  # the most recently used
            if env.alive:
                self._busy.add(env)
                return env
            self._retire(env)  # it died while idle
        return None

    def _discard(self, env: Environment) -> None:
        self._busy.discard(env)
        self._retire(env)

    def _retire(self, env: Environment) -> None:
        if not env.alive:
            env.kill_group()  # already gone: only what it may have started is left to end
            return
        task = asyncio.create_task(env.stop())
        self._stopping_envs.add(task)
        task.add_done_callback(self._stopping_envs.discard)

    def reconfigure(self, config: FunctionConfig) -> None:
        """A configuration update (memory, environment, timeout): as on AWS, later invocations
        run in new environments; idle ones are retired now, busy ones when they finish."""
        self.config = config
        for env in self._idle:
            self._retire(env)
        self._idle.clear()

    def reap(self) -> None:
        """Reclaim environments idle for longer than the keep-alive, and any that died."""
        cutoff = time.monotonic() - self.config.keep_alive_s
        keep = []
        for env in self._idle:
            if env.alive and env.last_used >= cutoff:
                keep.append(env)
            else:
                log.info("function %s: environment pid %s reclaimed", self.config.name, env.pid)
                self._retire(env)
        self._idle = keep

    async def stop(self) -> None:
        """Stop every environment, busy ones included: nothing may outlive the emulator."""
        self._stopped = True
        async with self._slot_freed:
            self._slot_freed.notify_all()
        for env in (*self._idle, *self._busy):
            self._retire(env)
        self._idle.clear()
        while self._stopping_envs:
            await asyncio.gather(*list(self._stopping_envs), return_exceptions=True)
