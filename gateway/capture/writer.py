"""Sampled request capture for one model version: the sampling, the bounded queue and
the thread that writes.

The request's path pays only for the sampling decision and, for a sampled request, a
copy of its tensors into a bounded queue (`offer`, called by the gateway's middleware
once the answer is ready: it alone knows every request's final status and latency,
refusals and deadline misses included, and the answer as it was sent). Encoding and
writing happen on this capture's own thread. When the queue is full (the destination
cannot keep up, or stalls) a record is dropped and counted, never waited for:
`sluice_capture_dropped_total{reason="full"}`; a write or upload that fails counts its
records as `error`; records still queued when the gateway stops and the destination
does not finish within `flush_timeout_s` count as `stopped`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import threading
import time
from collections import deque

import numpy as np

from .records import record_line
from .settings import CaptureConfig
from .sinks import Sink, open_sink

log = logging.getLogger("sluice.capture")

_TAKE = 256  # records encoded and written at a time
_RECORD_OVERHEAD = 512  # bytes a record holds beside its tensors, for the queue's bound
# This process's name in file and object names: one file per replica (and model version).
REPLICA = re.sub(r"[^\w.-]", "_", f"{socket.gethostname()}-{os.getpid()}")


def _owned(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of views (a request's slice of its batch's outputs, a binary body's
    buffer), so that a queued record holds its own bytes and no more."""
    return {name: a.copy() if a.base is not None else a for name, a in tensors.items()}


class Capture:
    def __init__(self, config: CaptureConfig, model: str, version: str, batchable: bool, metrics,
                 replica: str = REPLICA) -> None:  # fmt: skip
        self.config, self.model, self.version, self.batchable, self.replica = config, model, version, batchable, replica
        self.fraction, self.errors = config.fraction, config.errors
        self.keep_inputs = config.keep in ("inputs", "both")
        self.keep_outputs = config.keep in ("outputs", "both")
        self._limit = int(config.queue_mb * 2**20)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[tuple] = deque()
        self._queued_bytes = 0
        self._in_hand = 0
        self._closed = self._abandoned = False
        self._sink: Sink | None = None
        self._thread: threading.Thread | None = None
        self._last_failure_log = 0.0
        at = (model, version)
        self._dropped = {r: metrics.capture_dropped.labels(*at, r) for r in ("full", "error", "stopped")}
        self._records = metrics.capture_records.labels(*at)
        self._bytes = metrics.capture_bytes.labels(*at)
        metrics.capture_queue_bytes.labels(*at).set_function(lambda: self._queued_bytes)

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Check the destination (S3: the bucket answers) and get its writer ready; a
        destination that does not exist stops the model's start, naming the setting."""
        c = self.config
        try:
            self._sink = await asyncio.to_thread(open_sink, c.destination, self.model, self.version, self.replica,
                                                 int(c.max_file_mb * 2**20), c.max_file_age_s, self)  # fmt: skip
        except ValueError as exc:
            raise RuntimeError(f"model {self.model!r}: [capture] destination {c.destination!r}: {exc}") from None

    def start(self) -> None:
        assert self._sink is not None, "open() first"
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.model}-{self.version}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Take no more records; let the thread write what is queued (at most
        `flush_timeout_s`), close the file or upload the last object."""
        with self._lock:
            self._closed = True
            self._ready.notify()
        if self._thread is None:
            return
        await asyncio.to_thread(self._thread.join, self.config.flush_timeout_s)
        if self._thread.is_alive():
            with self._lock:
                self._abandoned = True
                lost = len(self._queue) + self._in_hand
                self._queue.clear()
                self._queued_bytes = 0
            self._dropped["stopped"].inc(lost)
            log.warning("capture destination did not finish in time: records dropped",
                        extra={"model": self.model, "version": self.version, "records": lost,
                               "destination": self.config.destination})  # fmt: skip

    # -- the request's path -----------------------------------------------------------------

    def offer(self, request_id: str, status: int, latency_s: float, inputs: dict[str, np.ndarray] | None,
              outputs: dict[str, np.ndarray] | None, error_body: bytes | None = None) -> None:  # fmt: skip
        """One answered request; captured if sampled (or an error, with `errors` on).
        Never blocks: a record that does not fit the queue is dropped and counted."""
        if not (random.random() < self.fraction or (self.errors and status >= 400)):
            return
        inputs = _owned(inputs) if inputs and self.keep_inputs else None
        outputs = _owned(outputs) if outputs and self.keep_outputs and status < 400 else None
        size = _RECORD_OVERHEAD + sum(a.nbytes for t in (inputs, outputs) if t for a in t.values())
        rows = None
        if self.batchable and (inputs or outputs):
            rows = int(next(iter((inputs or outputs).values())).shape[0])
        meta = {"request_id": request_id, "model": self.model, "version": self.version, "timestamp": time.time(),
                "latency_ms": round(latency_s * 1e3, 3), "status": status, "replica": self.replica, "rows": rows}  # fmt: skip
        with self._lock:
            if self._closed:
                reason = "stopped"
            elif self._queued_bytes + size > self._limit:
                reason = "full"
            else:
                self._queue.append((meta, inputs, outputs, error_body if status >= 400 else None, size))
                self._queued_bytes += size
                self._ready.notify()
                return
        self._dropped[reason].inc()

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        sink = self._sink
        assert sink is not None
        tick_s = min(1.0, self.config.max_file_age_s / 4)
        while True:
            batch, closing = self._take(tick_s)
            if batch:
                lines = []
                for meta, inputs, outputs, error_body, _ in batch:
                    try:
                        lines.append(record_line(meta, inputs, outputs, error_body))
                    except Exception as exc:  # a tensor the format cannot hold
                        self.failed(1, exc)
                if lines:
                    sink.write(lines, time.monotonic())
            with self._lock:
                self._in_hand = 0
                finished = closing or self._abandoned  # abandoned: stop() gave up waiting and counted the rest
            try:
                if finished:
                    sink.close()
                else:
                    sink.tick(time.monotonic())
            except Exception:
                log.exception("capture destination failed", extra={"model": self.model, "version": self.version})
            if finished:
                return

    def _take(self, wait_s: float) -> tuple[list[tuple], bool]:
        with self._lock:
            if not self._queue and not self._closed:
                self._ready.wait(wait_s)
            batch = [self._queue.popleft() for _ in range(min(_TAKE, len(self._queue)))]
            self._queued_bytes -= sum(item[-1] for item in batch)
            self._in_hand = len(batch)
            return batch, self._closed and not self._queue

    # -- what the sink reports (on the writer thread) ---------------------------------------

    def written(self, records: int, nbytes: int) -> None:
        if self._abandoned:  # already counted as dropped at stop
            return
        self._records.inc(records)
        self._bytes.inc(nbytes)

    def failed(self, records: int, error: BaseException) -> None:
        if self._abandoned:
            return
        self._dropped["error"].inc(records)
        now = time.monotonic()
        if now - self._last_failure_log >= 10.0:  # one line per 10 s, not one per record
            self._last_failure_log = now
            log.warning("capture write failed: records dropped", extra={"model": self.model, "version": self.version,
                        "records": records, "error": str(error), "destination": self.config.destination})  # fmt: skip

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes
