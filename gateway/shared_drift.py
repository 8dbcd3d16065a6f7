"""Drift scores of the cluster, not of one replica: sketches merged through the state store.

With a shared state store (`[state] url`), a version's drift windows are wall-clock slots of
`window_s` (`DriftWatch.share`), the same on every replica. When a slot ends, each replica
that served in it publishes its sketches of it (`drift:<version key>:<slot>:<replica>`);
a few syncs later, every such replica reads the sketches of all live replicas for that
slot, merges them (KLL sketches merge with the same error bound), and scores the merge:
every replica reports the same cluster score, within the sketches' error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import TYPE_CHECKING

from .drift import TensorSketch
from .drift_watch import MIN_WINDOW_ROWS
from .loop import BackgroundLoop
from .replicas import StateUnavailable

if TYPE_CHECKING:
    from .app import Gateway
    from .served import ServedModel

log = logging.getLogger("sluice.drift")


def encode(window: dict[str, TensorSketch]) -> str:
    doc = {}
    for name, tensor in window.items():
        blobs = {f: (b if isinstance(b, list) else base64.b64encode(b).decode()) for f, b in tensor.to_bytes().items()}
        doc[name] = {"kind": tensor.kind, "rows": tensor.rows, "sketches": blobs}
    return json.dumps(doc)


def decode(raw: str) -> dict[str, TensorSketch]:
    window = {}
    for name, entry in json.loads(raw).items():
        blobs = {f: (b if f == "__classes__" else base64.b64decode(b)) for f, b in entry["sketches"].items()}
        window[name] = TensorSketch.from_bytes(entry["kind"], blobs, entry["rows"])
    return window


def merged(windows: list[dict[str, TensorSketch]]) -> dict[str, TensorSketch]:
    out: dict[str, TensorSketch] = {}
    for window in windows:
        for name, tensor in window.items():
            into = out.setdefault(name, TensorSketch(tensor.kind))
            into.merge(tensor)
    return out


class SharedDrift(BackgroundLoop):
    def __init__(self, gateway: Gateway, sync_s: float) -> None:
        self.gateway, self.sync_s = gateway, sync_s
        self._due: list[tuple[float, ServedModel, int]] = []  # (wall time to score at, version, slot)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            try:
                await self.sync(time.time())
            except StateUnavailable:
                continue

    async def sync(self, wall: float) -> None:
        store, replica = self.gateway.cluster.store, self.gateway.cluster.replica
        for served in list(self.gateway.served()):
            watch = served.drift
            if watch is None or not watch.shared:
                continue
            keep_s = 10 * watch.config.window_s
            for slot, window in watch.take_finished(wall):
                await store.publish(f"drift:{served.key}:{slot}:{replica}", encode(window), keep_s, wall)
                # the others finish the slot within a batch and a sync of its end
                self._due.append(((slot + 1) * watch.config.window_s + 3 * self.sync_s + 1.0, served, slot))
        due, self._due = [d for d in self._due if d[0] <= wall], [d for d in self._due if d[0] > wall]
        for _, served, slot in due:
            if served.retired or served.drift is None:
                continue
            replicas = set(await store.demands(served.key, wall)) | {replica}
            windows = []
            for r in sorted(replicas):
                raw = await store.read(f"drift:{served.key}:{slot}:{r}", wall)
                if raw is not None:
                    windows.append(decode(raw))
            window = merged(windows)
            if max((t.rows for t in window.values()), default=0) >= MIN_WINDOW_ROWS:
                served.drift.close(time.monotonic(), window, replicas=len(windows))
