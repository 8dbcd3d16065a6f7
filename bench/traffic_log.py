"""What a traffic log costs to keep and to read (`gateway.traffic_log`, `sim.counts`).

    python bench/traffic_log.py [--days 8] [--rate 100]

Writes `--days` days of Poisson counts at `--rate` requests/s as the gateway logs them, then
reads them three times as a restarted gateway reads its prior (`sim.sources.read_prior`, up
to the start, from yesterday's time of day): a day file's size and each read's wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sim.counts import HEADER, day_file, row  # noqa: E402
from sim.sources import read_prior  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    first = datetime(2026, 12, 1, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as directory:
        logs = Path(directory)
        for day in range(args.days):
            begins = first + timedelta(days=day)
            rows = "".join(row(begins + timedelta(seconds=s), c) + "\n" for s, c in enumerate(rng.poisson(args.rate, 86400)))
            day_file(logs, begins.date()).write_text(HEADER + "\n" + rows)
        size = day_file(logs, first.date()).stat().st_size
        start = first + timedelta(days=args.days, hours=14)
        reads = []
        for _ in range(3):
            began = time.perf_counter()
            prior = read_prior(logs, 3600.0, start)
            reads.append(time.perf_counter() - began)
    assert prior is not None
    print(f"{args.days} days at {args.rate:g} req/s: a day file {size / 1e6:.2f} MB; read as the prior (from second "
          f"{prior.start_s:.0f} of {len(prior.counts)}): median {statistics.median(reads):.2f} s of {len(reads)} reads")


if __name__ == "__main__":
    main()
