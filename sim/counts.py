"""Arrivals per second with their date-times: the traffic log's format (`gateway.traffic_log`).

A model with `traffic_log` set has the gateway write its arrivals, second by second, to
one CSV file per UTC day, `<traffic_log>/<model>/YYYY-MM-DD.csv`:

    time,count
    2026-12-08T14:00:00Z,37

A day at 100 requests/s is 86,400 short rows (about 2.5 MB), not 8.6 million arrival
times. `sluice sim --trace` and `prior_trace` read such a file, or a model's directory of
them (the days in order; a second no file holds counts as none: the gateway was down; a
second several rows hold, as the sum of theirs: replicas sharing a directory).
Served, the hybrid planner of a model with a traffic log and no `prior_trace` reads its
own log, from yesterday at the time of day it starts.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

HEADER = "time,count"


def model_directory(root: str | Path, key: str) -> Path:
    """Where a model's days are logged (its key: the name, or name@version)."""
    return Path(root) / key.replace("/", "_")


def day_file(directory: Path, day: date) -> Path:
    return directory / f"{day:%Y-%m-%d}.csv"


def row(second: datetime, count: int) -> str:
    """One second's row (without its newline): its UTC date-time and its arrivals."""
    return f"{second.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S}Z,{count}"


def is_counts(path: str | Path) -> bool:
    """Whether `path` is a traffic log: a file whose first line is the header, or a directory."""
    path = Path(path)
    if path.is_dir():
        return True
    with path.open() as file:
        return file.readline().strip() == HEADER


def read_counts(path: str | Path, before: datetime | None = None) -> tuple[np.ndarray, datetime | None]:
    """Arrivals in each second from the log's first second on, and that second's date-time
    (UTC); none and None when it holds no second. `before`: only the seconds before it (a
    log read at a gateway's start holds none after it; in `sluice sim`, none of the trace's)."""
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    stamps, counts = [], []
    for file in files:
        lines = file.read_text().splitlines()
        if not lines or lines[0].strip() != HEADER:
            raise ValueError(f"{file}: not a traffic log (its first line is not {HEADER!r})")
        rows = [line.split(",") for line in lines[1:] if line.strip() and line.strip() != HEADER]  # replicas
        # sharing a directory may both begin a new day's file
        try:
            stamps.append(np.array([r[0].strip().removesuffix("Z") for r in rows], dtype="datetime64[s]"))
            counts.append(np.array([int(r[1]) for r in rows], dtype=np.int64))
        except (ValueError, IndexError):
            raise ValueError(f"{file}: rows must be a date-time and a count of arrivals") from None
    every = np.concatenate(stamps) if stamps else np.array([], dtype="datetime64[s]")
    number = np.concatenate(counts) if counts else np.array([], dtype=np.int64)
    if before is not None:
        keep = every < np.datetime64(before.astimezone(timezone.utc).replace(tzinfo=None), "s")
        every, number = every[keep], number[keep]
    if len(every) == 0:
        return np.zeros(0), None
    if np.any(number < 0):
        raise ValueError(f"{path}: a count of arrivals is negative")
    seconds = (every - every.min()).astype(np.int64)
    first = every.min().astype(datetime).replace(tzinfo=timezone.utc)
    return np.bincount(seconds, weights=number).astype(float), first


def arrival_times(counts: np.ndarray) -> np.ndarray:
    """Each second's arrivals spread evenly over it, the first at its start: a trace the
    simulator replays."""
    counts = np.asarray(counts).astype(np.int64)
    seconds = np.repeat(np.arange(len(counts), dtype=float), counts)
    order = np.arange(len(seconds)) - np.repeat(np.cumsum(counts) - counts, counts)  # i within its second
    return seconds + order / np.repeat(np.maximum(counts, 1), counts)
