"""Sluice's rows from one run of the team's peers harness (`results/runs/<run_id>.json`).

Prints, per model: each target's confirmed rate and Sluice's ratio to the best peer,
the p50 at 100 req/s next to FastAPI's, and Sluice's adaptive policy against the best
fixed configuration at every rate both ran (p50, p99). Read-only: the harness stays a
measuring instrument outside the project.

    python bench/peers_table.py PATH/TO/results/runs/20261206-204329.json
"""

from __future__ import annotations

import json
import sys


def point(row: dict, config: str, rate: float) -> dict | None:
    for c in row["configs"]:
        if c["config"] == config:
            return next((p for p in c["points"] if p["rate"] == rate), None)
    return None


def p50_at(row: dict, rate: float) -> float | None:
    found = [p["p50_ms"] for c in row["configs"] for p in c["points"] if p["rate"] == rate and p["pass"]]
    return min(found) if found else None


def main(path: str) -> int:
    run = json.load(open(path))
    rows = run["results"]
    for model in sorted({r["model"] for r in rows}):
        here = {r["target"]: r for r in rows if r["model"] == model}
        sluice = here.pop("sluice", None)
        if sluice is None:
            continue
        best_peer = max(here.values(), key=lambda r: r["confirmed_rate"] or 0)
        ratio = (sluice["confirmed_rate"] or 0) / max(best_peer["confirmed_rate"] or 1, 1)
        print(f"\n{model} (SLO {sluice['slo_ms']} ms): Sluice confirms {sluice['confirmed_rate']} req/s "
              f"({sluice['best_config']}), best peer {best_peer['target']} {best_peer['confirmed_rate']}: {ratio:.2f}x")  # fmt: skip
        fastapi = here.get("fastapi-nobatch")
        if fastapi:
            print(f"  p50 at 100 req/s: Sluice {p50_at(sluice, 100)} ms (fastest config), FastAPI {p50_at(fastapi, 100)} ms")
        print("  rate | adaptive p50 / p99 | best fixed p50 / p99 (config)")
        rates = sorted({p["rate"] for c in sluice["configs"] for p in c["points"]})
        for rate in rates:
            adaptive = point(sluice, "adaptive-slo", rate)
            fixed = [(point(sluice, c["config"], rate), c["config"]) for c in sluice["configs"] if c["config"] != "adaptive-slo"]
            fixed = [(p, c) for p, c in fixed if p is not None and p["pass"]]
            best = min(fixed, key=lambda pc: pc[0]["p50_ms"]) if fixed else None
            a = f"{adaptive['p50_ms']:.1f} / {adaptive['p99_ms']:.1f}{'' if adaptive['pass'] else ' (fail)'}" if adaptive else "-"
            b = f"{best[0]['p50_ms']:.1f} / {best[0]['p99_ms']:.1f} ({best[1]})" if best else "-"
            print(f"  {rate:>5} | {a:>20} | {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
