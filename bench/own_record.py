"""What hybrid's own last day is worth as its record (`HybridScheduler(own_record_s=...)`).

    python bench/own_record.py --seeds 1:24 --days 3      # about 20 min on 2 cores

A gateway with a traffic log plans, after a day, from its own last day (`renew_prior`). Here a
"day" is a member's span (`--duration`, 20 minutes by default) and the run is `--days` of them,
each another draw of the member's traffic (`Member.arrivals(draw)`: the same curve, other
arrivals, bursts and phases), one after the other: the same law at the same time of each day.
Hybrid runs with its own last day as its record and without; the first day is the same for
both (no record yet), so the bills are compared on the days after it. No baselines are run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from batching import FixedPolicy  # noqa: E402
from scheduler import HybridScheduler  # noqa: E402
from sim.family import Member, family, member  # noqa: E402
from sim.scheduled import simulate_scheduled  # noqa: E402


def days_of(m: Member, days: int) -> np.ndarray:
    return np.concatenate([m.arrivals(day) + day * m.duration_s for day in range(days)])


def _bill(seed: int, kind: str, duration_s: float, days: int, own: bool) -> tuple[float, float]:
    """(cost in $, SLO attainment) of hybrid on `days` days of the member's traffic."""
    m = member(seed, kind, duration_s)
    scheduler = HybridScheduler(own_record_s=duration_s if own else None)
    result = simulate_scheduled(days_of(m, days), FixedPolicy(m.batch_size, m.timeout_s), m.profile(), scheduler,
                                slo_s=m.slo_s, memory_mb=m.memory_mb, instance_min_billed_s=m.min_billed_s).summary()  # fmt: skip
    return result["cost_usd"], result["slo_attainment"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1:24", help="first:count")
    parser.add_argument("--duration", type=float, default=1200.0, help="a day's seconds")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    first, count = (int(x) for x in args.seeds.split(":"))
    members = family(range(first, first + count), args.duration)
    tasks = [(m.seed, m.kind, args.duration, days, own) for m in members for days, own in ((1, False), (args.days, False), (args.days, True))]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        bills = list(pool.map(_bill, *zip(*tasks)))
    print(f"Seeds {first}-{first + count - 1}, days of {args.duration:.0f} s, {args.days} days; "
          f"bills in $ over days 2-{args.days} (the whole run less the first day's).\n")
    print("| member | without | own last day | change | SLO met (p99) |")
    print("|---|---|---|---|---|")
    changes = []
    for i, m in enumerate(members):
        (day1, _), (none, met_none), (own, met_own) = bills[3 * i : 3 * i + 3]
        change = (own - day1) / (none - day1) - 1.0
        changes.append(change)
        met = "yes" if min(met_none, met_own) >= 0.99 else f"no ({met_none:.4f} / {met_own:.4f})"
        print(f"| {m.name} | {none - day1:.5f} | {own - day1:.5f} | {change:+.1%} | {met} |")
    print(f"\nOwn last day against none: mean {statistics.mean(changes):+.2%}, median {statistics.median(changes):+.2%}, "
          f"lower on {sum(c < -0.001 for c in changes)}, higher on {sum(c > 0.001 for c in changes)}, "
          f"worst {max(changes):+.1%}, best {min(changes):+.1%}.")  # fmt: skip


if __name__ == "__main__":
    main()
