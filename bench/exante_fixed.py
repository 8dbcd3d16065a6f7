"""The fixed pool a scheduler could choose knowing the traffic's law, not its draw (`sim.exante`).

    python bench/exante_fixed.py                       # seeds 1-24, 20 min each, 8 other draws (a few seconds)
    python bench/exante_fixed.py --seeds 301:12 --duration 3600
    python bench/exante_fixed.py --light --seeds 501:12
    python bench/exante_fixed.py --runs family.json    # hybrid's simulated ratio beside (a scheduler_compare --json)

Per member: the count cheapest on average over other draws of its traffic, its cost on the
member over the member's own best count (both in hybrid's model of a pool), the same averaged
with each draw in turn as the run, and the cheapest plan knowing every arrival (`sim.clairvoyant`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sim.clairvoyant import member_plan  # noqa: E402
from sim.contest import Run, verdict  # noqa: E402
from sim.exante import ExAnte, exante  # noqa: E402
from sim.family import family, member  # noqa: E402


def _task(seed: int, kind: str, duration_s: float, light: bool, draws: int) -> tuple[ExAnte, float]:
    m = member(seed, kind, duration_s, light)
    return exante(m, draws), member_plan(m).ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1:24", help="first:count")
    parser.add_argument("--duration", type=float, default=1200.0)
    parser.add_argument("--light", action="store_true")
    parser.add_argument("--draws", type=int, default=8, help="other draws of each member's traffic")
    parser.add_argument("--runs", help="a scheduler_compare --json file: hybrid's simulated ratio beside")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    first, count = (int(x) for x in args.seeds.split(":"))
    members = family(range(first, first + count), args.duration, args.light)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        found = list(pool.map(_task, *zip(*[(m.seed, m.kind, args.duration, args.light, args.draws) for m in members])))
    hybrid: dict[str, float] = {}
    if args.runs:
        runs = [Run(**r) for r in json.loads(Path(args.runs).read_text())["runs"]]
        hybrid = {m.name: verdict([r for r in runs if r.member == m.name]).ratio for m in members}
    print(f"Seeds {first}-{first + count - 1}{' (light)' if args.light else ''}, {args.duration:.0f} s, {args.draws} other draws.\n")
    print("| member | best count | count knowing the law | its cost / best (member) | the same, typical draw | clairvoyant (model) | hybrid (simulated) |")
    print("|---|---|---|---|---|---|---|")
    for m, (e, bound) in zip(members, found):
        h = f"{hybrid[m.name]:.2f}x" if m.name in hybrid else "-"
        print(f"| {m.name} | {e.best} | {e.count} | {e.ratio:.3f} | {e.typical:.3f} | {bound:.2f} | {h} |")
    ratios, typical = [e.ratio for e, _ in found], [e.typical for e, _ in found]
    print(f"\nKnowing the law: on the member median {statistics.median(ratios):.3f}, worst {max(ratios):.3f}, above 1.005 on "
          f"{sum(r > 1.005 for r in ratios)} of {len(ratios)}; typical draw median {statistics.median(typical):.3f}, "
          f"worst {max(typical):.3f}, above 1.005 on {sum(r > 1.005 for r in typical)}.")  # fmt: skip


if __name__ == "__main__":
    main()
