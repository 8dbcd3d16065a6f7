"""The traffic log: arrivals per second written per UTC day (`gateway.traffic_log`), read back
as a trace and as the hybrid planner's prior (`sim.counts`, `sim.sources.read_prior`)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from gateway.traffic_log import TrafficLog
from sim.counts import HEADER, arrival_times, day_file, model_directory, read_counts, row
from sim.sources import read_prior, read_stamped_trace, read_trace

NIGHT = datetime(2026, 12, 7, 23, 59, 55, tzinfo=timezone.utc)


def write_log(directory: Path, first: datetime, counts: list[int]) -> None:
    """A log as the gateway writes it, a file per UTC day."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, count in enumerate(counts):
        stamp = first + timedelta(seconds=k)
        path = day_file(directory, stamp.date())
        new = not path.exists()
        with path.open("a") as file:
            file.write((HEADER + "\n" if new else "") + row(stamp, count) + "\n")


def test_counts_are_written_per_second_into_each_days_file(tmp_path: Path) -> None:
    wall, arrived = [NIGHT.timestamp()], [0]
    log = TrafficLog(clock=lambda: wall[0])
    log.watch("m@2", model_directory(tmp_path, "m@2"), lambda: arrived[0])
    for k in range(10):  # 23:59:56 .. 00:00:05, k arrivals each second
        arrived[0] += k
        wall[0] += 1.0
        log.tick(wall[0] + 0.5)
    asyncio.run(log.forget("m@2"))
    directory = tmp_path / "m@2"
    assert sorted(p.name for p in directory.iterdir()) == ["2026-12-07.csv", "2026-12-08.csv"]
    lines = (directory / "2026-12-08.csv").read_text().splitlines()
    assert lines[0] == HEADER and lines[1] == "2026-12-08T00:00:00Z,4"  # from 23:59:55: none, none, then k in the k-th second
    counts, first = read_counts(directory)
    assert first == NIGHT and counts.tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert "m@2" not in log.models


def test_a_gap_reads_as_no_arrivals_and_days_in_order(tmp_path: Path) -> None:
    write_log(tmp_path, NIGHT + timedelta(days=1), [5, 5])  # written first, read after
    write_log(tmp_path, NIGHT, [1, 2])
    counts, first = read_counts(tmp_path)
    assert first == NIGHT and len(counts) == 86400 + 2
    assert counts[:2].tolist() == [1, 2] and counts[2:-2].sum() == 0 and counts[-2:].tolist() == [5, 5]
    counts, _ = read_counts(tmp_path, before=NIGHT + timedelta(seconds=1))
    assert counts.tolist() == [1]
    assert read_counts(tmp_path, before=NIGHT)[1] is None


def test_a_log_is_a_trace_of_its_arrivals(tmp_path: Path) -> None:
    write_log(tmp_path / "m", NIGHT, [0, 3, 0, 2])
    times, first = read_stamped_trace(tmp_path / "m")
    assert times.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 2.0, 2.5])
    assert first == NIGHT + timedelta(seconds=1)  # the first arrival, not the first second
    assert np.array_equal(read_trace(day_file(tmp_path / "m", NIGHT.date())), times)
    assert arrival_times(np.array([2, 0, 1])).tolist() == [0.0, 0.5, 2.0]


def test_a_log_read_at_start_is_yesterday_at_that_time_of_day(tmp_path: Path) -> None:
    """Yesterday 09:00-11:00 at 1 request/s and today 09:00 until the start at 10 requests/s:
    the prior is read from yesterday at the start's time of day, none of today's seconds."""
    yesterday = datetime(2026, 12, 6, 9, tzinfo=timezone.utc)
    write_log(tmp_path, yesterday, [1] * 7200)
    write_log(tmp_path, yesterday + timedelta(days=1), [10] * 7200)
    start = yesterday + timedelta(days=1, minutes=30)
    prior = read_prior(tmp_path, 3600.0, start)
    assert prior is not None and prior.start_s == 1800.0
    assert len(prior.counts) == 86400 + 1800 and prior.counts[1800:7200].tolist() == [1.0] * 5400
    assert read_prior(tmp_path, 3600.0, yesterday) is None  # nothing logged before it


def test_a_bad_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "2026-12-07.csv").write_text(HEADER + "\n2026-12-07T10:00:00Z,many\n")
    with pytest.raises(ValueError, match="a date-time and a count"):
        read_counts(tmp_path)
    (tmp_path / "2026-12-07.csv").write_text("time\n2026-12-07T10:00:00Z\n")
    with pytest.raises(ValueError, match="not a traffic log"):
        read_counts(tmp_path)


async def test_the_loop_counts_what_arrives_and_writes_it_at_stop(tmp_path: Path) -> None:
    """Live: polled every 50 ms, written every 200 ms and at stop; days past `keep_days` removed."""
    arrived = [0]
    three_days_ago = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=3)
    write_log(tmp_path / "m", three_days_ago, [1])
    stale = day_file(tmp_path / "m", three_days_ago.date())
    assert stale.exists()
    log = TrafficLog(flush_s=0.2, poll_s=0.05, keep_days=2)
    log.watch("m", tmp_path / "m", lambda: arrived[0])
    log.start()
    for _ in range(12):
        arrived[0] += 5
        await asyncio.sleep(0.05)
    await log.stop()
    assert not stale.exists()
    counts, _ = read_counts(tmp_path / "m")
    assert counts.sum() == 60


async def test_a_log_that_cannot_be_written_is_said_and_does_not_stop_the_stop(tmp_path: Path, caplog) -> None:
    (tmp_path / "m").write_text("a file where the model's directory should be")
    log = TrafficLog(poll_s=0.05)
    log.watch("m", tmp_path / "m", lambda: 3)
    log.start()
    await asyncio.sleep(0.1)
    with caplog.at_level("ERROR", logger="sluice.gateway"):
        await log.stop()
    assert any(r.getMessage() == "traffic log not written" for r in caplog.records)


def test_replicas_sharing_a_directory_log_the_clusters_arrivals(tmp_path: Path) -> None:
    """Two logs (two replicas) writing one model's directory: each second read as their sum,
    the header each may have begun the day's file with skipped."""
    wall = [NIGHT.timestamp() + 10.0]
    logs, counters = [], [[0], [0]]
    for counter in counters:
        log = TrafficLog(clock=lambda: wall[0])
        log.watch("m", tmp_path / "m", lambda counter=counter: counter[0])
        logs.append(log)
    for k in range(3):
        counters[0][0] += 2
        counters[1][0] += 5
        wall[0] += 1.0
        for log in logs:
            log.tick(wall[0])
    for log in logs:
        asyncio.run(log.forget("m"))
    path = day_file(tmp_path / "m", (NIGHT + timedelta(seconds=10)).date())
    path.write_text(path.read_text() + HEADER + "\n")  # as if the second replica found no file
    counts, first = read_counts(tmp_path / "m")
    assert first == NIGHT + timedelta(seconds=10) and counts.tolist() == [0, 7, 7, 7]
