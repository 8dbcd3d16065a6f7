"""A backend that runs each batch as one AWS Lambda invocation, through boto3.

The batch contract is the handler's (`backends/lambda_function/handler.py`): an Open
Inference Protocol request in JSON whose tensors hold the whole batch, answered by
an Open Inference Protocol response. boto3 blocks, so invocations run in a thread
pool and the event loop never waits on them. boto3's own retries are off: a retry
here knows the batch's deadline, and a throttled batch may be better placed
elsewhere than retried blindly.

Failures, as the gateway sees them:
- the function raised (`FunctionError`): `BackendError`, for that batch's requests;
- throttled (`TooManyRequestsException`, 429): retried with jittered backoff while
  the deadline allows, then `FaasThrottled` (a `BackendUnavailable`: place it elsewhere);
- a payload over 6 MB: the batch is split in halves, each invoked on its own;
- the endpoint unreachable, or a timeout: `BackendUnavailable`.

Each invocation asks for the log tail, whose REPORT line says what was billed and
whether it was a cold start (`Init Duration`); `on_report` hears of each one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
import numpy as np
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .base import BackendError, BackendUnavailable
from .metadata import ModelMetadata
from .oip import ProtocolError, decode_response, encode_request

PAYLOAD_LIMIT = 6 * 1024 * 1024  # bytes, each way (AWS Lambda, synchronous invocation)
_REPORT = re.compile(
    r"REPORT RequestId:.*?\bDuration: (?P<duration>[\d.]+) ms.*?Billed Duration: (?P<billed>[\d.]+) ms"
    r".*?Memory Size: (?P<memory>\d+) MB(?P<rest>.*)"
)
_INIT = re.compile(r"Init Duration: (?P<init>[\d.]+) ms")
_THROTTLED = {"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"}
_UNAVAILABLE = {"ServiceException", "ResourceNotReadyException", "ResourceConflictException", "SnapStartNotReadyException"}


class InvocationObserver(Protocol):
    """Hears when each batch's invocation starts and ends (on time.monotonic()), and
    learns the cold start time: what `scheduler.keepwarm.KeepWarmPolicy` needs."""

    cold_start_s: float

    def started(self, now: float) -> None: ...

    def ended(self, now: float) -> None: ...


class FaasThrottled(BackendUnavailable):
    """The function kept refusing for lack of concurrency; `retry_after` suggests when to try again."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class InvocationReport:
    """What one invocation cost, from its REPORT log line (None fields: no log came back)."""

    function: str
    duration_s: float  # as the caller waited: request out to answer in
    report: Report | None  # None when no log tail came back
    throttles: int  # 429s before this invocation ran
    ok: bool
    ping: bool = False  # a keep-warm invocation, not a batch

    @property
    def billed_ms(self) -> float | None:
        return self.report.billed_ms if self.report else None

    @property
    def cold(self) -> bool:
        return bool(self.report and self.report.init_ms is not None)


@dataclass(frozen=True, slots=True)
class Report:
    """A Lambda REPORT log line: time inside the function, what was billed, and the
    init (cold start) time when there was one."""

    duration_ms: float
    billed_ms: float
    memory_mb: int
    init_ms: float | None


def parse_report(log_tail: str) -> Report | None:
    for line in reversed(log_tail.splitlines()):
        match = _REPORT.search(line)
        if match:
            init = _INIT.search(match["rest"])
            return Report(float(match["duration"]), float(match["billed"]), int(match["memory"]),
                          float(init["init"]) if init else None)  # fmt: skip
    return None


def _split(inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rows = len(next(iter(inputs.values())))
    half = rows // 2
    return {k: v[:half] for k, v in inputs.items()}, {k: v[half:] for k, v in inputs.items()}


class LambdaBackend:
    """One function. `region`, `endpoint_url` and credentials follow boto3's usual
    chain (environment, config files, instance roles) unless given here."""

    def __init__(
        self,
        function: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        qualifier: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 2.0,
        max_concurrency: int = 32,
        throttle_retry_s: float = 2.0,
        on_report: Callable[[InvocationReport], None] | None = None,
        keep_warm: InvocationObserver | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.function, self.name = function, f"lambda:{function}"
        self.qualifier = qualifier
        self.throttle_retry_s = throttle_retry_s
        self.on_report = on_report
        self.keep_warm = keep_warm  # told when each batch's invocation starts and ends
        config = Config(
            connect_timeout=connect_timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1},
            max_pool_connections=max_concurrency, tcp_keepalive=True,
        )  # fmt: skip
        self.client = (session or boto3.session.Session()).client(
            "lambda", region_name=region, endpoint_url=endpoint_url, config=config
        )
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="lambda")

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch; `deadline` (time.monotonic()) bounds the retries after throttling."""
        payload, _ = encode_request(inputs, outputs)
        if len(payload) > PAYLOAD_LIMIT:
            rows = len(next(iter(inputs.values())))
            if rows < 2:
                raise BackendError(f"{self.name}: one request is {len(payload)} bytes, over the 6 MB invocation limit", 413)
            first, second = _split(inputs)
            parts = await asyncio.gather(self.infer(first, outputs, deadline), self.infer(second, outputs, deadline))
            return {name: np.concatenate([parts[0][name], parts[1][name]]) for name in parts[0]}
        body = await self._invoke_until_run(payload, deadline, batch=True)
        try:
            return decode_response(body)
        except (ProtocolError, ValueError) as exc:
            raise BackendError(f"{self.name} sent a bad response: {exc}") from exc

    async def metadata(self) -> ModelMetadata:
        """Asked of the function itself: the handler answers `{"sluice": "metadata"}`."""
        body = await self._invoke_until_run(json.dumps({"sluice": "metadata"}).encode(), time.monotonic() + 60.0)
        try:
            return ModelMetadata.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"{self.name} sent bad metadata: {exc}") from exc

    async def ping(self, count: int) -> None:
        """`count` keep-warm invocations at once (so that many environments stay warm);
        failures only lose the warmth."""
        payload = json.dumps({"sluice": "ping"}).encode()

        async def one() -> None:
            try:
                await self._invoke_until_run(payload, time.monotonic() + 1.0, ping=True)
            except BackendError:
                pass

        await asyncio.gather(*(one() for _ in range(count)))

    async def ready(self) -> bool:
        """A DryRun invocation: the function exists and may be invoked."""
        try:
            response = await self._call(InvocationType="DryRun")
        except (BackendError, BotoCoreError, ClientError):
            return False
        return response.get("StatusCode") == 204

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _invoke_until_run(self, payload: bytes, deadline: float | None, batch: bool = False, ping: bool = False) -> bytes:
        throttles, delay = 0, 0.02
        give_up = deadline if deadline is not None else time.monotonic() + self.throttle_retry_s
        while True:
            started = time.monotonic()
            watched = batch and self.keep_warm is not None
            if watched:
                self.keep_warm.started(started)  # type: ignore[union-attr]
            try:
                response = await self._call(InvocationType="RequestResponse", LogType="Tail", Payload=payload)
            except ClientError as exc:
                if watched:
                    self.keep_warm.ended(time.monotonic())  # type: ignore[union-attr]
                code = exc.response.get("Error", {}).get("Code", "")
                if code in _THROTTLED:
                    throttles += 1
                    wait = delay * (0.5 + random.random())
                    if time.monotonic() + wait >= give_up:
                        self._report(started, None, throttles, ok=False, ping=ping)
                        raise FaasThrottled(f"{self.name} throttled {throttles} times", retry_after=1.0) from exc
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, 1.0)
                    continue
                if code in _UNAVAILABLE or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                    raise BackendUnavailable(f"{self.name}: {code or 'error'}: {exc}") from exc
                raise BackendError(f"{self.name}: {code or 'error'}: {exc}") from exc
            except BaseException:
                if watched:
                    self.keep_warm.ended(time.monotonic())  # type: ignore[union-attr]
                raise
            if watched:
                self.keep_warm.ended(time.monotonic())  # type: ignore[union-attr]
            body = response["Payload"]
            if response.get("FunctionError"):
                self._report(started, response, throttles, ok=False, ping=ping)
                raise BackendError(f"{self.name} failed ({response['FunctionError']}): {_error_message(body)}")
            self._report(started, response, throttles, ok=True, ping=ping)
            return body

    async def _call(self, **kwargs: Any) -> dict[str, Any]:
        if self.qualifier:
            kwargs["Qualifier"] = self.qualifier
        loop = asyncio.get_running_loop()

        def invoke() -> dict[str, Any]:
            response = self.client.invoke(FunctionName=self.function, **kwargs)
            if "Payload" in response:  # a stream: read it here, off the event loop
                response["Payload"] = response["Payload"].read()
            return response

        try:
            return await loop.run_in_executor(self._executor, invoke)
        except BotoCoreError as exc:  # connection refused or lost, timeouts, a broken stream
            raise BackendUnavailable(f"{self.name}: {exc}") from exc
        except RuntimeError as exc:  # the executor was shut down: the gateway is stopping
            raise BackendUnavailable(f"{self.name}: {exc}") from exc

    def _report(self, started: float, response: dict[str, Any] | None, throttles: int, ok: bool, ping: bool) -> None:
        report = None
        if response is not None and response.get("LogResult"):
            report = parse_report(base64.b64decode(response["LogResult"]).decode("utf-8", "replace"))
        if report is not None and report.init_ms is not None and self.keep_warm is not None:
            self.keep_warm.cold_start_s = report.init_ms / 1000.0  # learn the cold start from the function itself
        if self.on_report is not None:
            self.on_report(InvocationReport(self.function, time.monotonic() - started, report, throttles, ok, ping))


def _error_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict):
        kind, message = doc.get("errorType"), doc.get("errorMessage")
        if message:
            return f"{kind}: {message}" if kind else str(message)
    return str(doc)[:200]
