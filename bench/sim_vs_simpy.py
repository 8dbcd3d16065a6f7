"""`sluice sim` against the same model in SimPy (bench/simpy_faas.py), whole processes, in one run.

A fixed (B, T) policy on FaaS with cold starts and a keep-alive, over Poisson arrivals
(2 million by default): each side is started as its own process, from interpreter
start to its JSON on stdout, so import time counts as much as simulation time. Sluice's side
runs as `python -m sim` and as `sluice sim`. The runs alternate (sim, sluice sim, SimPy, ...) so that whatever else shares the machine slows
both alike; the medians and their ratio are printed as one JSON object. Both must
agree on the batches, the cold starts, the bill and the p99 (else this fails): the
comparison is of the same model, not of two approximations.

    python bench/sim_vs_simpy.py [--rate 2000] [--duration 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "bench" / "profiles" / "demo_faas.json"


def timed(command: list[str]) -> tuple[float, dict]:
    """Wall seconds from process start to exit, and the JSON it printed."""
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - began, json.loads(done.stdout)


def commands(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    common = ["--profile", str(PROFILE), "--memory-mb", "2048", "--batch-size", str(args.batch_size),
              "--timeout-ms", str(args.timeout_ms), "--keep-alive-s", str(args.keep_alive_s),
              "--jitter", str(args.jitter), "--seed", "0", "--slo-ms", "100"]  # fmt: skip
    source = ["--arrivals", f"poisson:rate={args.rate:g}", "--duration", f"{args.duration:g}", "--json"]
    sim = [sys.executable, "-m", "sim", *source]
    sluice = [str(Path(sys.executable).with_name("sluice")), "sim", *source]  # the entry point a user runs
    simpy = [sys.executable, str(ROOT / "bench" / "simpy_faas.py"), "--rate", f"{args.rate:g}", "--duration", f"{args.duration:g}"]
    return sim + common, sluice + common, simpy + common


def agree(ours: dict, theirs: dict) -> None:
    """The same model: same requests, batches and cold starts; bill and p99 to float noise."""
    for key in ("requests", "batches", "cold_starts"):
        if ours[key] != theirs[key]:
            raise SystemExit(f"sim and SimPy disagree on {key}: {ours[key]} vs {theirs[key]}")
    for a, b, what in ((ours["cost_usd"], theirs["cost_usd"], "cost"), (ours["latency_ms"]["p99"], theirs["latency_ms"]["p99"], "p99")):
        if not math.isclose(a, b, rel_tol=1e-9):
            raise SystemExit(f"sim and SimPy disagree on {what}: {a} vs {b}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--duration", type=float, default=1000.0, help="seconds of arrivals (2000/s x 1000 s: 2 million)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout-ms", type=float, default=10.0)
    parser.add_argument("--keep-alive-s", type=float, default=60.0)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sim_cmd, sluice_cmd, simpy_cmd = commands(args)
    sim_s, sluice_s, simpy_s = [], [], []
    for _ in range(args.repeats):
        seconds, ours = timed(sim_cmd)
        sim_s.append(seconds)
        seconds, via_sluice = timed(sluice_cmd)
        sluice_s.append(seconds)
        seconds, theirs = timed(simpy_cmd)
        simpy_s.append(seconds)
        agree(ours, theirs)
        agree(via_sluice, theirs)
    import simpy  # only for its version: the runs above imported it in their own process

    sim_median, sluice_median, simpy_median = (statistics.median(s) for s in (sim_s, sluice_s, simpy_s))
    print(json.dumps({
        "workload": {"arrivals": f"poisson:rate={args.rate:g}", "duration_s": args.duration, "requests": ours["requests"],
                     "batch_size": args.batch_size, "timeout_ms": args.timeout_ms, "keep_alive_s": args.keep_alive_s,
                     "jitter": args.jitter, "batches": ours["batches"], "cold_starts": ours["cold_starts"]},
        "sim_s": [round(s, 3) for s in sim_s], "sluice_sim_s": [round(s, 3) for s in sluice_s],
        "simpy_s": [round(s, 3) for s in simpy_s],
        "sim_median_s": round(sim_median, 3), "sluice_sim_median_s": round(sluice_median, 3),
        "simpy_median_s": round(simpy_median, 3),
        "speedup": round(simpy_median / sim_median, 2), "speedup_sluice_sim": round(simpy_median / sluice_median, 2),
        "sim_command": " ".join(sim_cmd[1:]), "simpy_command": " ".join(simpy_cmd[1:]),
        "python": platform.python_version(), "simpy": simpy.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
