"""How far ahead hybrid should read its recorded traffic (`scheduler.prior`, `prior_weight_s`).

    python bench/prior_reading.py --seeds 601:12 --duration 3600                 # 1200 against 3600 s (~15 min on 2 cores)
    python bench/prior_reading.py --seeds 301:12 --duration 3600 --weights 1200,1800,3600

Each member of the family (`sim.family`) is run with hybrid given another draw of its traffic
over the same span as its record (as `scheduler_compare.py --hybrid prior`), once per reading;
the bills are set against the first reading's, member by member. No baselines are run: this
compares readings with each other, not with the best baseline (`scheduler_compare.py` does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scheduler import HybridScheduler, Prior  # noqa: E402
from sim.clairvoyant import member_counts  # noqa: E402
from sim.contest import Run, run  # noqa: E402
from sim.family import family, member  # noqa: E402


def _task(seed: int, kind: str, duration_s: float, light: bool, weight_s: float) -> Run:
    m = member(seed, kind, duration_s, light)
    return run(m, "hybrid", f"prior {weight_s:g} s", lambda: HybridScheduler(prior=Prior(member_counts(m, 1), weight_s)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="601:12", help="first:count")
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--light", action="store_true")
    parser.add_argument("--weights", default="1200,3600", help="seconds of the record read ahead, the first the reference")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    first, count = (int(x) for x in args.seeds.split(":"))
    weights = [float(w) for w in args.weights.split(",")]
    members = family(range(first, first + count), args.duration, args.light)
    tasks = [(m.seed, m.kind, args.duration, args.light, w) for m in members for w in weights]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(_task, *zip(*tasks)))
    print(f"Seeds {first}-{first + count - 1}{' (light)' if args.light else ''}, {args.duration:.0f} s; "
          f"bills in $, each reading's change against {weights[0]:g} s.\n")
    print("| member | " + " | ".join(f"{w:g} s" for w in weights) + " | SLO met |")
    print("|---|" + "---|" * len(weights) + "---|")
    changes: dict[float, list[float]] = {w: [] for w in weights[1:]}
    for i, m in enumerate(members):
        row = runs[i * len(weights) : (i + 1) * len(weights)]
        cells = [f"{row[0].cost_usd:.5f}"]
        for w, r in zip(weights[1:], row[1:]):
            change = r.cost_usd / row[0].cost_usd - 1.0
            changes[w].append(change)
            cells.append(f"{r.cost_usd:.5f} ({change:+.1%})")
        met = all(r.meets for r in row)
        print(f"| {m.name} | " + " | ".join(cells) + f" | {'yes' if met else 'no'} |")
    for w, c in changes.items():
        print(f"\n{w:g} s against {weights[0]:g} s: mean {statistics.mean(c):+.2%}, lower on {sum(x < -0.001 for x in c)}, "
              f"higher on {sum(x > 0.001 for x in c)}, worst {max(c):+.1%}, best {min(c):+.1%}.")


if __name__ == "__main__":
    main()
