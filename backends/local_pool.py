"""A pool of `sluice worker` processes on this machine.

Each worker is a real process with its own onnxruntime session. A supervisor task
per worker restarts it when it exits for any reason other than our own stop, so a
crashed worker costs a retry, not requests. The pool can grow and shrink while it
serves (`add_instance`, `remove_instance`): a `ScalablePool`, the provider a pool planner drives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from .http_v2 import HttpV2Backend
from .pool import Instance
from .wire import WireTransport

log = logging.getLogger("sluice.pool")

_READY_TIMEOUT_S = 120.0


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.instance: Instance | None = None
        self.retiring = False  # being removed: finish in-flight work, then stop; no restart


class LocalWorkerPool:
    def __init__(
        self,
        model_path: str,
        model: str,
        count: int,
        *,
        threads: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        if count < 1:
            raise ValueError("a local pool needs at least one worker")
        self.model_path, self.model, self.count = model_path, model, count
        self.threads, self.timeout_s = threads, timeout_s
        self.instances: list[Instance] = []
        self.startup_seconds: list[float] = []
        self._workers = [_Worker(i) for i in range(count)]
        self._listeners: list[Callable[[], None]] = []
        self._supervisors: list[asyncio.Task] = []
        self._stopping = False

    def on_capacity(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def start(self) -> None:
        if not os.path.isfile(self.model_path):
            raise RuntimeError(f"model {self.model!r}: no model file at {self.model_path}")
        await asyncio.gather(*(self._spawn(w) for w in self._workers))
        self._supervisors = [asyncio.create_task(self._supervise(w)) for w in self._workers]

    async def _spawn(self, worker: _Worker) -> None:
        started = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backends.worker",
            "--model", self.model_path, "--name", self.model, "--port", "0",
            "--threads", str(self.threads), "--parent-pid", str(os.getpid()),
            stdout=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            line = await asyncio.wait_for(worker.process.stdout.readline(), _READY_TIMEOUT_S)
            port = int(json.loads(line)["port"])
        except (asyncio.TimeoutError, ValueError, KeyError) as exc:
            if worker.process.returncode is None:
                worker.process.kill()
            code = await worker.process.wait()
            why = "no ready line in time" if isinstance(exc, asyncio.TimeoutError) else f"it exited with code {code}"
            raise RuntimeError(f"worker {worker.index} of model {self.model!r} did not start: {why} (see its log above)") from None
        backend = HttpV2Backend(
            WireTransport(f"http://127.0.0.1:{port}", self.timeout_s), self.model, binary=True,
            name=f"{self.model}/worker-{worker.index}",
        )  # fmt: skip
        if worker.instance is None:
            worker.instance = Instance(backend)
            self.instances.append(worker.instance)
        else:
            await worker.instance.backend.transport.close()
            worker.instance.backend = backend
        worker.instance.healthy = True
        self.startup_seconds.append(time.monotonic() - started)
        log.info("worker started", extra={"worker": backend.name, "pid": worker.process.pid, "port": port})

    async def add_instance(self) -> Instance:
        """Start one more worker (a real process: its start-up time is real too) and supervise it."""
        worker = _Worker(max((w.index for w in self._workers), default=-1) + 1)
        self._workers.append(worker)
        try:
            await self._spawn(worker)
        except BaseException:  # cancelled or failed: no process is left behind
            self._workers.remove(worker)
            if worker.process is not None and worker.process.returncode is None:
                worker.process.kill()
            if worker.instance is not None and worker.instance in self.instances:
                self.instances.remove(worker.instance)
            raise
        self._supervisors.append(asyncio.create_task(self._supervise(worker)))
        for callback in self._listeners:
            callback()
        assert worker.instance is not None
        return worker.instance

    async def remove_instance(self, instance: Instance, drain_timeout_s: float = 60.0) -> None:
        """Take a worker out: no new batches, wait for its batch in flight, then stop it."""
        worker = next((w for w in self._workers if w.instance is instance), None)
        if worker is None or worker.retiring:
            return
        worker.retiring = True
        instance.healthy = False
        give_up = time.monotonic() + drain_timeout_s
        while instance.inflight > 0 and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        if worker.process is not None and worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.process.wait(), 10.0)
            except asyncio.TimeoutError:
                worker.process.kill()
                await worker.process.wait()
        self._workers.remove(worker)
        self.instances.remove(instance)
        await instance.backend.transport.close()
        log.info("worker removed", extra={"worker": instance.name})

    async def _supervise(self, worker: _Worker) -> None:
        delay = 0.1
        while not self._stopping:
            code = await worker.process.wait()
            worker.instance.healthy = False
            if self._stopping or worker.retiring:
                return
            log.warning("worker exited; restarting", extra={"worker": worker.instance.name, "code": code})
            while not self._stopping and not worker.retiring:
                try:
                    await self._spawn(worker)
                    delay = 0.1
                    break
                except (RuntimeError, OSError):
                    log.exception("worker restart failed")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            for callback in self._listeners:
                callback()

    def report_failure(self, instance: Instance) -> None:
        """A worker that lost a batch is not trusted again: kill it; the supervisor restarts it."""
        instance.healthy = False
        for worker in self._workers:
            if worker.instance is instance and worker.process and worker.process.returncode is None:
                worker.process.kill()

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process and w.process.returncode is None]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._supervisors:
            task.cancel()
        procs = [w.process for w in self._workers if w.process and w.process.returncode is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 10.0)
        except asyncio.TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for instance in self.instances:
            await instance.backend.transport.close()
