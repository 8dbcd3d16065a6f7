"""Hybrid against every baseline at its best, on a seeded family of workloads it was not tuned on.

    python bench/scheduler_compare.py --json family.json   # seeds 1-24, 20 min each (~17 min on 2 cores)
    python bench/scheduler_compare.py --reuse family.json  # hybrid again, the baselines' runs from that file
    python bench/scheduler_compare.py --holdout  # seeds 101-124: held out from tuning
    python bench/scheduler_compare.py --reuse family.json --hybrid clairvoyant  # the cheapest plan knowing every arrival
    python bench/scheduler_compare.py --reuse family.json --hybrid first-pool   # hybrid, its first pool the best fixed count
    python bench/scheduler_compare.py --reuse family.json --hybrid prior        # hybrid given a recorded draw of the same traffic
    python bench/scheduler_compare.py --quick    # 4 members of 5 min (about a minute)
    python bench/scheduler_compare.py --light --seeds 501:12 --json light.json  # light models, part-full batches

Each member (`sim.family`): diurnal traffic (periods 10-60 min, amplitudes up to 0.9), bursts
of 2x-10x lasting 5-120 s at random intervals (on a flat or a diurnal base), two-level MMPPs,
the Azure LLM code and conv traces time-scaled; instances that start in 10-180 s and are 2x-20x
cheaper per request than the function when fully used; FaaS at 512-3008 MB; p99 SLOs of
100 ms-2 s. Every baseline's knobs are swept on each member (`sim.contest`), and hybrid's cost
is set against the cheapest setting of any baseline that meets the SLO. Markdown on stdout: one
row per member, then the summary (worst, median, share at most 0.8x), the planner's decision
time, and the run's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scheduler import HybridScheduler, Prior, load_scheduler  # noqa: E402
from sim.clairvoyant import Clairvoyant, member_counts, member_plan  # noqa: E402
from sim.contest import FirstPool, Oracle, Run, Verdict, baselines, best_fixed, one_setting, run, verdict  # noqa: E402
from sim.family import family, member  # noqa: E402


def _task(seed: int, kind: str, duration_s: float, light: bool, index: int, hybrid: str, first: int) -> Run:
    """One run, rebuilt from plain values in a worker process (index -1: hybrid; `first`: the
    best fixed count, for --hybrid first-pool)."""
    m = member(seed, kind, duration_s, light)
    if index < 0:
        if hybrid == "first-pool":
            return run(m, "hybrid", hybrid, lambda: FirstPool(first))
        if hybrid == "oracle":
            return run(m, "hybrid", hybrid, lambda: Oracle(m.rates()))
        if hybrid == "prior":  # told another draw of the same traffic, at the same time (`scheduler.prior`)
            return run(m, "hybrid", hybrid, lambda: HybridScheduler(prior=Prior(member_counts(m, 1))))
        if hybrid == "clairvoyant":
            return run(m, "hybrid", hybrid, lambda: Clairvoyant(member_plan(m), m.startup_s))
        return run(m, "hybrid", hybrid, (lambda: load_scheduler(hybrid)) if hybrid != "hybrid" else HybridScheduler)
    name, setting, make = baselines(m)[index]
    return run(m, name, setting, make)


def _fmt_ratio(v: Verdict) -> str:
    r = v.ratio
    return "misses SLO" if r == float("inf") else "-" if v.best is None else f"{r:.2f}x"


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else "misses SLO" if ratio == float("inf") else f"{ratio:.2f}x"


def _row(v: Verdict, bound: float) -> str:
    h, b = v.hybrid, v.best
    best = f"{b.scheduler} ({b.setting}) ${b.cost_usd:.4f}" if b else "none meets"
    return (f"| {v.member} | {best} | ${h.cost_usd:.4f} | {_fmt_ratio(v)} | {h.attainment * 100:.2f}% | "
            f"{h.instance_hours:.2f} / {b.instance_hours if b else 0:.2f} | ${h.faas_usd:.4f} / ${b.faas_usd if b else 0:.4f} | "
            f"{h.faas_batch_share * 100:.0f}% / {b.faas_batch_share * 100 if b else 0:.0f}% | {h.cold_starts} | "
            f"{h.instances_started} / {b.instances_started if b else 0} | {'yes' if v.mixed else 'no'} | {bound:.2f} |")  # fmt: skip


def summarize(verdicts: list[Verdict]) -> dict:
    ratios = [v.ratio for v in verdicts if v.best is not None]
    mixed = [v.ratio for v in verdicts if v.best is not None and v.mixed]
    plans = [v.hybrid.plan_ms_max for v in verdicts]
    return {
        "members": len(verdicts), "compared": len(ratios),
        "worst": max(ratios, default=None), "median": statistics.median(ratios) if ratios else None,
        "share_at_most_0.8": sum(r <= 0.8 for r in ratios) / len(ratios) if ratios else None,
        "above_1": sum(r > 1.0 for r in ratios), "hybrid_misses_slo": sum(not v.hybrid.meets for v in verdicts),
        "mixed": len(mixed), "median_mixed": statistics.median(mixed) if mixed else None,
        "plan_ms_max": max(plans, default=0.0),
        "plan_ms_median": statistics.median(v.hybrid.plan_ms_median for v in verdicts) if verdicts else 0.0,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 members of 5 min")
    parser.add_argument("--holdout", action="store_true", help="seeds 101-124 instead of 1-24")
    parser.add_argument("--seeds", help="first:count (overrides the default seeds)")
    parser.add_argument("--duration", type=float, help="seconds per member (default 1200, 300 with --quick)")
    parser.add_argument("--hybrid", default="hybrid", help="the scheduler to set against the baselines: hybrid, "
                        "module:Class (sim.contest:StepHybrid, the planner before issue 15), oracle (told the future rates), or "
                        "clairvoyant (the cheapest plan knowing every arrival, sim/clairvoyant.py), or first-pool (hybrid with "
                        "the best fixed count in hindsight as its first pool; needs --reuse), or prior (hybrid given another draw of "
                        "the member's traffic as recorded traffic, scheduler/prior.py)")
    parser.add_argument("--light", action="store_true", help="light members: a model ten times lighter, batches that "
                        "the traffic fills only in part (sim.family)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", help="write every run to this file")
    parser.add_argument("--reuse", help="take the baselines' runs from this --json file (same seeds and duration)")
    args = parser.parse_args()
    first, count = (101 if args.holdout else 1), (4 if args.quick else 24)
    if args.seeds:
        first, count = (int(x) for x in args.seeds.split(":"))
    duration = args.duration or (300.0 if args.quick else 1200.0)
    members = family(range(first, first + count), duration, args.light)
    began = time.perf_counter()
    reused = [Run(**r) for r in json.loads(Path(args.reuse).read_text())["runs"] if r["scheduler"] != "hybrid"] if args.reuse else []
    have = {(r.member, r.scheduler, r.setting) for r in reused}
    if args.hybrid == "first-pool" and not args.reuse:
        parser.error("--hybrid first-pool takes the best fixed counts from --reuse")
    tasks = [(m.seed, m.kind, duration, args.light, i, args.hybrid, best_fixed(reused, m.name)) for m in members
             for i in range(-1, len(baselines(m))) if i < 0 or (m.name, *baselines(m)[i][:2]) not in have]  # fmt: skip
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = reused + list(pool.map(_task, *zip(*tasks), chunksize=1))
    wall = time.perf_counter() - began
    verdicts = [verdict([r for r in runs if r.member == m.name]) for m in members]
    print(f"Seeds {first}-{first + count - 1}{' (light)' if args.light else ''}, {duration:.0f} s each, hybrid = `{args.hybrid}`.\n")
    print("| member | cheapest baseline meeting the SLO | hybrid | hybrid / best | hybrid attainment | "
          "instance-h (hybrid / best) | FaaS $ (hybrid / best) | FaaS batches (hybrid / best) | hybrid cold starts | "
          "instances started (hybrid / best) | mixed | bound |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    bounds = [member_plan(m).ratio for m in members]
    for v, bound in zip(verdicts, bounds):
        print(_row(v, bound))
    s = summarize(verdicts)
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    print(f"\nWorst {fmt(s['worst'])}x, median {fmt(s['median'])}x, at most 0.8x on {s['share_at_most_0.8'] * 100:.0f}% "
          f"of {s['compared']} members; above 1.0x on {s['above_1']}; hybrid misses the SLO on {s['hybrid_misses_slo']}. "
          f"Where pool and function both carry traffic ({s['mixed']} members): median {fmt(s['median_mixed'])}x.")  # fmt: skip
    print(f"Bound (`sim.clairvoyant`: the cheapest count per 10 s knowing every arrival, over the best fixed count, "
          f"both in the planner's model): median {statistics.median(bounds):.2f}, at most 0.8 on {sum(b <= 0.8 for b in bounds)} "
          f"of {len(bounds)} members.")  # fmt: skip
    print(f"Planner decision time: median {s['plan_ms_median']:.2f} ms, worst {s['plan_ms_max']:.1f} ms per plan. "
          f"Wall time {wall:.0f} s ({len(tasks)} runs, {args.jobs} processes).")  # fmt: skip
    print("\nAgainst each baseline at one setting for every member (no tuning on a member's future; "
          "hybrid's cost over the baseline's where both met the SLO):\n")
    print("| baseline | setting | meets the SLO | hybrid / it, median | worst | hybrid costs no more |")
    print("|---|---|---|---|---|---|")
    for rule in one_setting(members, runs):
        print(f"| {rule.scheduler} | {rule.setting} | {rule.meets} of {rule.members} | {_times(rule.median)} | "
              f"{_times(rule.worst)} | {rule.hybrid_cheaper} of {rule.meets} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, "wall_s": wall, "runs": [r.as_dict() for r in runs]}, indent=1))


if __name__ == "__main__":
    main()
