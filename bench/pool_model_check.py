"""The planner's pool model against the simulator: each fixed pool's priced bill over its simulated one.

    python bench/scheduler_compare.py --json family.json          # the simulated runs (seeds 1-24)
    python bench/pool_model_check.py family.json:1:24 [more.json:101:12 ...] [light.json:501:12:light]

For every fixed-pool run in the files, the cost the model (`scheduler.PoolModel`, as hybrid's
planner and `sim.clairvoyant` price a pool: the instances, plus the function's bill for what they
turn away, second by second) gives that count over the member's arrivals, divided by the simulated
bill. Prints one line per member (count: ratio, * where the run missed the SLO), then the median,
the extremes, the mean |log| error, and on how many members the model's cheapest fixed count is the
simulation's.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sim.clairvoyant import member_plan  # noqa: E402
from sim.contest import ATTAINMENT  # noqa: E402
from sim.family import family  # noqa: E402


def main() -> None:
    ratios: list[float] = []
    agree = members = 0
    for spec in sys.argv[1:]:
        light = spec.endswith(":light")  # members drawn with --light
        path, first, count = spec.removesuffix(":light").rsplit(":", 2)
        runs = json.loads(Path(path).read_text())["runs"]
        for m in family(range(int(first), int(first) + int(count)), light=light):
            plan = member_plan(m)
            fixed = {int(r["setting"].split()[0]): r for r in runs if r["member"] == m.name and r["scheduler"] == "fixed"}
            meeting = [n for n, r in fixed.items() if r["attainment"] >= ATTAINMENT]
            cheapest = min(meeting, key=lambda n: fixed[n]["cost_usd"], default=None)
            line = []
            for n, r in sorted(fixed.items()):
                if n < len(plan.fixed):
                    ratios.append(plan.fixed[n] / r["cost_usd"])
                    line.append(f"{n}:{ratios[-1]:.2f}{'' if r['attainment'] >= ATTAINMENT else '*'}")
            members += 1
            agree += plan.best_fixed == cheapest
            print(f"{m.name:20s} model's cheapest {plan.best_fixed}, simulation's {cheapest}:  {' '.join(line)}")
    logs = [abs(math.log(r)) for r in ratios]
    print(f"\n{len(ratios)} fixed pools on {members} members: model / simulated bill median {statistics.median(ratios):.3f}, "
          f"from {min(ratios):.2f} to {max(ratios):.2f}, mean |log| {statistics.mean(logs):.4f}; "
          f"the model's cheapest count is the simulation's on {agree} of {members} members.")  # fmt: skip


if __name__ == "__main__":
    main()
