"""Each model's arrivals per second, written to a file per UTC day: the gateway's own record.

The hybrid planner is at its best given yesterday's traffic (`prior_trace`: a record read
from the time of day the gateway starts); without one it learns the traffic's level and
shape from the run, and pays for the lesson (issue 15). A model with `traffic_log` set has
its arrivals, admitted or refused, counted into wall-clock seconds and appended to
`<traffic_log>/<model>/YYYY-MM-DD.csv` (`sim.counts`) every `flush_s` and at stop; days older
than `keep_days` are removed. After a restart, its planner reads that log as its prior, and
`sluice sim --trace` replays any day of it.

The counts are taken by polling the runner's arrival counter once a second, as the replicas'
shared rate is (`gateway.replicas.cluster`): a request is logged in the second it was polled
in, at most a second late. Each replica logs what it received. Replicas that share one
directory (a shared volume) write the cluster's arrivals: a second logged by several is read as
their sum, which is what the planner of a pool they share plans for; replicas with pools of
their own each want their own directory (their planner plans for their share).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sim.counts import HEADER, day_file, row

from .loop import BackgroundLoop

log = logging.getLogger("sluice.gateway")


@dataclass
class _Logged:
    directory: Path
    arrivals: Callable[[], int]  # admitted + refused so far
    counted: int
    seconds: dict[int, int] = field(default_factory=dict)  # wall second -> arrivals, not yet written
    next_second: int = 0  # the first second not yet written


class TrafficLog(BackgroundLoop):
    """Counts each watched model's arrivals per wall-clock second and appends them to its
    day's file. `tick` and `take` run on the event loop; only the writing is in a thread."""

    def __init__(self, *, flush_s: float = 60.0, keep_days: int = 8, poll_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.flush_s, self.keep_days, self.poll_s, self.clock = flush_s, keep_days, poll_s, clock
        self.models: dict[str, _Logged] = {}

    def watch(self, key: str, directory: Path, arrivals: Callable[[], int]) -> None:
        """Log `key`'s arrivals from this second on."""
        self.models[key] = _Logged(directory, arrivals, arrivals(), next_second=int(self.clock()))

    async def forget(self, key: str) -> None:
        """Write what `key` has not written yet, and stop logging it."""
        logged = self.models.get(key)
        if logged is None:
            return
        self.tick(self.clock())
        rows = self.take(self.clock() + 1.0, only=key)
        del self.models[key]
        await self._write(rows)

    def tick(self, wall: float) -> None:
        """Count what arrived since the last tick into the second `wall` falls in."""
        second = int(wall)
        for logged in self.models.values():
            total = logged.arrivals()
            if total > logged.counted:
                logged.seconds[second] = logged.seconds.get(second, 0) + total - logged.counted
                logged.counted = total

    def take(self, wall: float, only: str | None = None) -> dict[Path, list[str]]:
        """The rows of every second before `wall` not yet written (seconds without arrivals
        too, so that a gap in the file means the gateway was not counting), by day file."""
        until = int(wall)
        rows: dict[Path, list[str]] = {}
        for key, logged in self.models.items():
            if only is not None and key != only:
                continue
            for second in range(logged.next_second, until):
                stamp = datetime.fromtimestamp(second, timezone.utc)
                rows.setdefault(day_file(logged.directory, stamp.date()), []).append(row(stamp, logged.seconds.pop(second, 0)))
            logged.next_second = max(logged.next_second, until)
        return rows

    def oldest(self) -> date:
        """The first day kept."""
        return datetime.fromtimestamp(self.clock(), timezone.utc).date() - timedelta(days=self.keep_days)

    async def _run(self) -> None:
        written = self.clock()
        while True:
            await asyncio.sleep(self.poll_s)
            now = self.clock()
            self.tick(now)
            if now - written >= self.flush_s:
                written = now
                await self._write(self.take(now))

    async def stop(self) -> None:
        """Stop counting, and write every second counted, the current one too."""
        await super().stop()
        self.tick(self.clock())
        await self._write(self.take(self.clock() + 1.0))

    async def _write(self, rows: dict[Path, list[str]]) -> None:
        """Append in a thread. A log that cannot be written (a full disk, a read-only directory)
        is said and dropped: it must not stop the gateway, or its stop."""
        try:
            await asyncio.to_thread(_append, rows, self.oldest())
        except OSError:
            log.exception("traffic log not written", extra={"files": sorted(str(p) for p in rows)})


def _append(rows: dict[Path, list[str]], oldest: date) -> None:
    """Append each day file's rows (a new file begins with the header), then remove the days
    before `oldest` from those directories."""
    for path, lines in rows.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        data = ((HEADER + "\n" if not path.exists() else "") + "".join(line + "\n" for line in lines)).encode()
        # One write to a file opened for appending: replicas that share the directory (a shared
        # volume) append whole flushes, never each other's halves of a line.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    for directory in {path.parent for path in rows}:
        for old in directory.glob("*.csv"):
            try:
                day = date.fromisoformat(old.stem)
            except ValueError:
                continue  # not a day file of ours
            if day < oldest:
                old.unlink(missing_ok=True)
