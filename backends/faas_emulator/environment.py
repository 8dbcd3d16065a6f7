"""One execution environment: a runtime process that runs one invocation at a time.

The process is the unit AWS reuses between invocations: its start, the handler's
import and the model load are the cold start; everything after is warm. It runs in
a session of its own so that stopping it also stops anything the handler started.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import REGION, FunctionConfig

RUNTIME = Path(__file__).with_name("runtime.py")
_LENGTH = struct.Struct(">I")
_STOP_GRACE_S = 2.0


class EnvironmentFailure(Exception):
    """The environment is lost (it exited or timed out); the invocation gets this error."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class Timeout(EnvironmentFailure):
    pass


@dataclass(slots=True)
class Reply:
    """What the runtime answered: the result (or error) JSON, its log, and how long it took."""

    ok: bool
    body: bytes
    log: str
    duration_ms: float


def _frames(header: dict[str, Any], body: bytes) -> bytes:
    head = json.dumps(header).encode()
    return _LENGTH.pack(len(head)) + head + _LENGTH.pack(len(body)) + body


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"signal: {signal.Signals(-code).name.removeprefix('SIG').lower()}"
        except ValueError:
            return f"signal: {-code}"
    return f"exit status {code}"


class Environment:
    def __init__(self, config: FunctionConfig, index: int) -> None:
        self.config, self.index = config, index
        self.process: asyncio.subprocess.Process | None = None
        self.last_used = time.monotonic()
        self.invocations = 0
        self._peak_mb = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def _environ(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update({
            "SLUICE_MODEL_PATH": os.path.abspath(c.model_path),
            "AWS_LAMBDA_FUNCTION_NAME": c.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(c.memory_mb), "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{c.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{c.name}-{self.index}",
            "LAMBDA_TASK_ROOT": os.path.dirname(os.path.abspath(c.handler_path)),
            "SLUICE_CPU_SHARE": f"{c.cpu_share:.6f}",
            # Threads for the share of CPU the memory buys (at least one; no more than the host has).
            "SLUICE_THREADS": str(max(1, min(os.cpu_count() or 1, int(c.cpu_share)))),
        })  # fmt: skip
        env.update(dict(c.environment))
        return env

    async def start(self) -> Reply:
        """Start the process and wait for the runtime's init answer (a cold start)."""
        started = time.perf_counter()
        # -P: the runtime's own directory must not shadow the handler's imports.
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-P", str(RUNTIME), os.path.abspath(self.config.handler_path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=self._environ(),
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise EnvironmentFailure("Runtime.Unknown", f"could not start an execution environment: {exc}") from None
        try:
            header, body = await asyncio.wait_for(self._read_message(), self.config.init_timeout_s)
        except asyncio.TimeoutError:
            await self.kill()
            limit = self.config.init_timeout_s
            raise Timeout("Sandbox.Timedout", f"Init phase timed out after {limit:.2f} seconds") from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            raise await self._exited() from None
        self._read_peak()
        return Reply(bool(header.get("ok")), body, str(header.get("log", "")), (time.perf_counter() - started) * 1000)

    async def invoke(self, header: dict[str, Any], payload: bytes) -> Reply:
        """Run one invocation; the environment is killed if it overruns the function's timeout."""
        assert self.process is not None and self.process.stdin is not None
        self.invocations += 1
        started = time.perf_counter()
        try:
            self.process.stdin.write(_frames(header, payload))
            reply_head, body = await asyncio.wait_for(self._send_and_read(), self.config.timeout_s)
        except asyncio.TimeoutError:
            self._read_peak()
            await self.kill()
            raise Timeout("Sandbox.Timedout", f"Task timed out after {self.config.timeout_s:.2f} seconds") from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            raise await self._exited() from None
        duration_ms = (time.perf_counter() - started) * 1000
        self.last_used = time.monotonic()
        self._read_peak()
        return Reply(bool(reply_head.get("ok")), body, str(reply_head.get("log", "")), duration_ms)

    async def _send_and_read(self) -> tuple[dict[str, Any], bytes]:
        assert self.process is not None and self.process.stdin is not None
        await self.process.stdin.drain()
        return await self._read_message()

    async def _read_message(self) -> tuple[dict[str, Any], bytes]:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        frames = []
        for _ in range(2):
            (size,) = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))
            frames.append(await stdout.readexactly(size))
        return json.loads(frames[0]), frames[1]

    async def _exited(self) -> EnvironmentFailure:
        """The runtime broke the stream: make sure it is gone, and say how it ended."""
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), _STOP_GRACE_S)
        except asyncio.TimeoutError:
            await self.kill()
            code = self.process.returncode
        return EnvironmentFailure("Runtime.ExitError", f"Runtime exited with error: {_exit_reason(code)}")

    def _read_peak(self) -> None:
        """Peak resident memory so far (VmHWM), for the REPORT line's Max Memory Used."""
        if not self.alive:
            return
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self._peak_mb = max(self._peak_mb, math.ceil(int(line.split()[1]) / 1024))
                        return
        except OSError:
            pass

    @property
    def peak_memory_mb(self) -> int:
        return self._peak_mb

    def kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        # Even after the runtime itself exited: what the handler started may still be in its group.
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)  # type: ignore[union-attr]
            except (ProcessLookupError, PermissionError):
                pass

    async def kill(self) -> None:
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """End of input asks the runtime to exit; SIGTERM, then SIGKILL, make sure it does."""
        if self.process is None:
            return
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), _STOP_GRACE_S)
        except asyncio.TimeoutError:
            await self.kill()
