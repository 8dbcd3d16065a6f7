"""The tuning report: the latency model against simulation, the tuner's and the simulator's
speed, and adaptive vs fixed vs BATCH-style vs no batching on the Azure LLM traces.

a. Model vs simulation: predicted p95/p99 of fixed (B, T) policies against simulating sampled
   arrivals (and, for the trace-fitted MAPs, the real trace and its gaps shuffled), warm FaaS.
b. Tuner solve time: `tune` and `tune_coarse_to_fine`, median of runs, ms per configuration.
c. Simulator speed: bench/sim_speed.py's measurement (fast path, fixed and adaptive; event path),
   and bench/sim_vs_simpy.py's: a 2-million-request run as whole processes against SimPy.
d. The Azure traces at 1024 MB FaaS under two SLOs: cost per million requests and attainment.

    python bench/tuning_report.py [--quick] [--json] [--profile FILE]

Markdown on stdout (progress on stderr); with --json, one JSON object on stdout instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from batching import FixedPolicy, NoBatchingPolicy  # noqa: E402  (run as a script from anywhere)
from batching.adaptive import AdaptivePolicy  # noqa: E402
from batching.allocator import retain_freed_memory  # noqa: E402
from batching.arrivals import MAP  # noqa: E402
from batching.counting import CountingProcess  # noqa: E402
from batching.arrival_fits import fit_arrivals  # noqa: E402
from batching.fitting import fit_map2  # noqa: E402  (BATCH's way fits a MAP(2))
from batching.latency import WindowTables, wait_distribution  # noqa: E402
from batching.sweep import _COUNTING  # noqa: E402
from batching.tuner import tune, tune_coarse_to_fine  # noqa: E402
from sim import ServiceProfile, read_trace, simulate  # noqa: E402
from sim.tune import targets_from_profile  # noqa: E402

TRACES = REPO.parent / "shared" / "data" / "traces"
PROFILE = REPO / "bench" / "profiles" / "demo_faas.json"
MEMORY = 1024
PERCENTILES = (0.95, 0.99)
GRID_B, GRID_T = (4, 16, 64), (0.005, 0.05, 0.2)
MODEL_GRIDS = (256, 128, 1024)  # wait-grid points over [0, T]: WindowTables' default, the tuner's, a fine one
SLOS = ((0.3, 0.95), (0.5, 0.99))  # (SLO seconds, percentile)
SCALED_MEMORY = (512, 1024, 1536, 2048, 3072, 4096, 6144, 10240)
BATCH_FIT_S = 600.0  # BATCH's way: fit on the first 10 minutes, tune once
BURSTY = MAP.mmpp2((2000.0, 50.0), (5.0, 10.0))  # SCV 15, lag-1 ACF 0.39
NOTE_A = ("Note: negcorr-map2 alternates phases at every arrival; with B = 4 (even) and T = 200 ms nearly every "
          "batch fills, so the phase in which batches open changes only at a timeout (~1 in 1e5 batches): a "
          "simulation keeps the phase it starts in, the model weighs both by their long-run shares (99.7% phase 0). "
          "Started in phase 0 the simulation matches a 4096-point model within 0.3% (96.0/111.8 ms vs 96.1/112.1); "
          "started in phase 1 it gives 107/126 ms. The tuner's 128-point grid spans [0, T]: it is too coarse when "
          "batches fill in a few ms and T is far longer (grid-sensitivity rows).")
ALTERNATING = MAP([[-1500.0, 0.0], [0.0, -100.0]], [[0.0, 1500.0], [100.0, 0.0]])  # lag-1 ACF -0.30


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_trace(name: str) -> np.ndarray:
    return read_trace(TRACES / f"azure_llm_2023_{name}.csv")


def warm_profile(doc: dict) -> ServiceProfile:
    """The profile without cold starts: what the latency model predicts."""
    warm = json.loads(json.dumps(doc))
    warm["faas"]["cold_start_ms"] = 0
    return ServiceProfile.from_dict(warm)


def scaled_profile(doc: dict) -> ServiceProfile:
    """8 memory sizes: the 1024 MB curve's base and per-item times scaled by 1024 / M."""
    curve = doc["faas"]["memory_mb"]["1024"]
    scaled = json.loads(json.dumps(doc))
    scaled["faas"]["memory_mb"] = {str(m): {k: v * 1024 / m for k, v in curve.items()} for m in SCALED_MEMORY}
    return ServiceProfile.from_dict(scaled)


def sim_percentiles(times: np.ndarray, b: int, t: float, profile: ServiceProfile) -> list[float]:
    """Simulated p95/p99 in ms: the smallest latency with empirical CDF >= p (the model's definition)."""
    latency = simulate(times, FixedPolicy(b, t), profile, memory_mb=MEMORY).latency_s
    return [float(np.quantile(latency, p, method="inverted_cdf")) * 1e3 for p in PERCENTILES]


def error(predicted: float, actual: float) -> float:
    return round(100.0 * (predicted - actual) / actual, 2)


def markdown(headers: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


# -- a. model vs simulation ---------------------------------------------------------


def model_vs_sim(args: argparse.Namespace, doc: dict, fits: dict) -> dict:
    warm = warm_profile(doc)
    service = np.asarray(warm.faas_service_s(np.arange(1, 65), MEMORY))
    overhead = warm.faas.invoke_overhead_ms / 1e3
    workloads = [("poisson-20", MAP.poisson(20.0), None), ("poisson-200", MAP.poisson(200.0), None),
                 ("bursty-mmpp2", BURSTY, None), ("negcorr-map2", ALTERNATING, None)]  # fmt: skip
    workloads += [(f"azure-{name}-fit", fit.map, times) for name, (fit, times) in fits.items()]
    rows, described = [], []
    for name, process, real in workloads:
        log(f"a. model vs simulation: {name}")
        described.append({"workload": name, "rate": round(process.rate, 3), "scv": round(process.scv, 3), "acf1": round(process.acf(1), 3)})
        rng = np.random.default_rng(args.seed)
        sample = np.concatenate([[0.0], np.cumsum(process.sample(args.samples, rng))])
        if real is not None:  # the trace's own gaps in random order: a renewal process with its marginal
            gaps = np.diff(real)
            shuffled = np.concatenate([[0.0], np.cumsum(np.concatenate(
                [rng.permutation(gaps) for _ in range(math.ceil(args.samples / len(gaps)))]))])  # fmt: skip
        counting = CountingProcess(process, max(GRID_B) - 1, max(GRID_T))
        for t in GRID_T:
            tables = {grid: WindowTables(counting, t, grid) for grid in MODEL_GRIDS}
            for b in GRID_B:
                laws = {grid: wait_distribution(table, b) for grid, table in tables.items()}
                preds = {grid: [law.latency_percentile(p, service, overhead) * 1e3 for p in PERCENTILES] for grid, law in laws.items()}
                pred, simulated = preds[MODEL_GRIDS[0]], sim_percentiles(sample, b, t, warm)
                row = {"workload": name, "batch_size": b, "timeout_ms": t * 1e3, "mean_batch": round(laws[MODEL_GRIDS[0]].mean_batch_size, 3),
                       "model_p95": pred[0], "sim_p95": simulated[0], "err_p95": error(pred[0], simulated[0]),
                       "model_p99": pred[1], "sim_p99": simulated[1], "err_p99": error(pred[1], simulated[1])}  # fmt: skip
                for grid in MODEL_GRIDS[1:]:
                    row[f"err_p95_grid{grid}"], row[f"err_p99_grid{grid}"] = (error(x, y) for x, y in zip(preds[grid], simulated))
                if real is not None:
                    on_trace, on_shuffled = sim_percentiles(real, b, t, warm), sim_percentiles(shuffled, b, t, warm)
                    row.update(trace_p95=on_trace[0], trace_err_p95=error(pred[0], on_trace[0]),
                               trace_p99=on_trace[1], trace_err_p99=error(pred[1], on_trace[1]),
                               shuffled_err_p95=error(pred[0], on_shuffled[0]), shuffled_err_p99=error(pred[1], on_shuffled[1]))  # fmt: skip
                rows.append(row)
    worst = {"sampled": max(max(abs(r["err_p95"]), abs(r["err_p99"])) for r in rows)}
    for grid in MODEL_GRIDS[1:]:
        worst[f"sampled-grid{grid}"] = max(max(abs(r[f"err_p95_grid{grid}"]), abs(r[f"err_p99_grid{grid}"])) for r in rows)
    for name in fits:
        on = [r for r in rows if r["workload"] == f"azure-{name}-fit"]
        worst[f"trace-{name}"] = max(max(abs(r["trace_err_p95"]), abs(r["trace_err_p99"])) for r in on)
        worst[f"shuffled-{name}"] = max(max(abs(r["shuffled_err_p95"]), abs(r["shuffled_err_p99"])) for r in on)
    return {"samples": args.samples, "memory_mb": MEMORY, "grids": MODEL_GRIDS, "workloads": described, "rows": rows, "max_abs_error_pct": worst}


# -- b. tuner solve time ------------------------------------------------------------


def tuner_speed(args: argparse.Namespace, doc: dict, fits: dict) -> list[dict]:
    """Median wall and CPU time of `tune` (full: B 1..64, 30 timeouts, 256-point grid) and
    `tune_coarse_to_fine` (online: a 128-point grid, from the timeout chosen before the
    rate moved by 10%), on Poisson, bursty and negatively correlated MAPs and the
    Azure fits with 1, 3 and 8 memory sizes. "new fit": the counting process is built
    for the call (a re-tune after the fitted process changed); "same fit": it is
    reused (a re-tune on an unchanged fit)."""
    slo, percentile = SLOS[0]
    every = targets_from_profile(scaled_profile(doc))  # 8 sizes, 512-10240 MB
    target_sets = [("1 size (2048 MB)", [t for t in every if t.memory_mb == 2048]),
                   ("3 sizes (1024-4096 MB)", [t for t in every if t.memory_mb in (1024, 2048, 4096)]),
                   ("8 sizes (512-10240 MB)", every)]  # fmt: skip
    workloads = [("poisson-200", MAP.poisson(200.0)), ("bursty-mmpp2", BURSTY), ("negcorr-map2", ALTERNATING)]
    workloads += [(f"azure-{name}-fit", fit.map) for name, (fit, _) in fits.items()]
    rows = []
    for name, process in workloads:
        log(f"b. tuner solve time: {name}")
        for label, targets in target_sets:
            earlier = tune(MAP(process.D0 / 1.1, process.D1 / 1.1), targets, slo, percentile).choice
            hint = earlier.timeout_s if earlier is not None and earlier.batch_size > 1 else None
            for method in (tune, tune_coarse_to_fine):
                timed: dict[str, list[float]] = {"new_wall": [], "new_cpu": [], "same_wall": [], "same_cpu": []}
                extra = {"hint_s": hint} if method is tune_coarse_to_fine else {}
                for _ in range(max(args.repeats, 5)):
                    for reuse in ("new", "same"):
                        if reuse == "new":
                            _COUNTING.clear()
                        wall, cpu = time.perf_counter(), time.process_time()
                        result = method(process, targets, slo, percentile, **extra)
                        timed[f"{reuse}_wall"].append((time.perf_counter() - wall) * 1e3)
                        timed[f"{reuse}_cpu"].append((time.process_time() - cpu) * 1e3)
                chosen = result.choice
                rows.append({"workload": name, "targets": label, "method": method.__name__,
                             **{f"{k}_ms": round(statistics.median(v), 1) for k, v in timed.items()},
                             "configs": result.configs_evaluated,
                             "batch_size": chosen.batch_size if chosen else None,
                             "timeout_ms": round(chosen.timeout_s * 1e3, 3) if chosen else None,
                             "memory_mb": chosen.target.memory_mb if chosen else None,
                             "cost_per_million": round(chosen.cost_per_request * 1e6, 4) if chosen else None})  # fmt: skip
    return rows


# -- c. simulator speed -------------------------------------------------------------


def bench_module(name: str):  # noqa: ANN201 (a module)
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def sim_speed(args: argparse.Namespace) -> dict:
    log("c. simulator speed")
    module = bench_module("sim_speed")
    sizes, event_n = ([200_000], 20_000) if args.quick else ([1_000_000, 5_000_000], 200_000)
    arrivals = np.cumsum(np.random.default_rng(args.seed).exponential(1 / 2000.0, max(sizes)))
    adaptive_n = sizes[0]
    log("c. against SimPy, whole processes")
    duration = 100.0 if args.quick else 1000.0  # 2000/s: 200k or 2 million requests
    command = [sys.executable, str(REPO / "bench" / "sim_vs_simpy.py"), "--duration", f"{duration:g}", "--repeats", "1" if args.quick else "3"]
    against: dict = {"skipped": "simpy is not installed (pip install simpy)"}
    if importlib.util.find_spec("simpy") is not None:
        against = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    return {"workload": "poisson 2000/s, B=32, T=10 ms, FaaS 2048 MB, jitter 0.1 (bench/sim_speed.py)",
            "fast": [module.measure(arrivals[:n], "fast", 1 if args.quick else 3) for n in sizes],
            "adaptive_fast": module.measure(arrivals[:adaptive_n], "fast", 1, module.adaptive),
            "event": module.measure(arrivals[:event_n], "event", 1),
            "simpy": against}  # fmt: skip


# -- d. the Azure traces ------------------------------------------------------------


def sluice(*words: object) -> str:
    return " ".join([".venv/bin/sluice", *(str(w) for w in words)])


def traces_cost(args: argparse.Namespace, doc: dict, profile_path: str, fits: dict) -> list[dict]:
    profile = ServiceProfile.from_dict(doc)
    targets = targets_from_profile(profile, "faas", MEMORY)
    rows = []
    for name, (_, times) in fits.items():
        path = TRACES / f"azure_llm_2023_{name}.csv"
        if args.quick:
            times = times[times < 1200.0]
        for slo, p in SLOS:
            base = ("sim", "--trace", path, "--profile", profile_path, "--memory-mb", MEMORY,
                    "--slo-ms", f"{slo * 1e3:g}", "--percentile", f"{p * 100:g}")  # fmt: skip
            if args.quick:
                base += ("--duration", 1200)

            def run(policy, label: str, command: str, **extra) -> None:
                result = simulate(times, policy, profile, memory_mb=MEMORY, slo_s=slo)
                summary = result.summary()
                limits = policy.limits(times[-1])
                rows.append({"trace": name, "slo": f"p{p * 100:g} <= {slo * 1e3:g} ms", "policy": label,
                             "batch_size": limits.max_size, "timeout_ms": round(limits.max_wait * 1e3, 3),
                             "cost_per_million": round(summary["cost_per_million_usd"], 4),
                             "attainment": round(summary["slo_attainment"], 4),
                             "latency_ms": round(result.percentile_ms(p * 100), 1),
                             "meets": summary["slo_attainment"] >= p, "cold_starts": summary["cold_starts"],
                             "mean_batch": round(summary["mean_batch_size"], 2), "command": command, **extra})  # fmt: skip

            log(f"d. {name} p{p * 100:g} <= {slo * 1e3:g} ms: adaptive")
            adaptive = AdaptivePolicy(targets, slo, p)
            run(adaptive, "adaptive (B, T at the end)", sluice(*base, "--policy", "adaptive", "--json"))
            rows[-1]["retunes"] = adaptive.retunes
            fit = fit_map2(np.diff(times[times < BATCH_FIT_S]))
            result = tune(fit.map, targets, slo, p)
            chosen = result.choice or result.fallback
            t = math.floor(chosen.timeout_s * 1e6) / 1e6  # as `sluice tune` reports it
            tune_cmd = sluice("tune", "--trace", path, "--duration", f"{BATCH_FIT_S:g}", "--profile", profile_path,
                              "--memory-mb", MEMORY, "--slo-ms", f"{slo * 1e3:g}", "--percentile", f"{p * 100:g}", "--json")  # fmt: skip
            run(FixedPolicy(chosen.batch_size, t), "BATCH's way (tuned on first 10 min)",
                tune_cmd + " ; " + sluice(*base, "--batch-size", chosen.batch_size, "--timeout-ms", f"{t * 1e3:.3f}", "--json"),
                predicted_latency_ms=round(chosen.latency_s * 1e3, 1), feasible=result.choice is not None)  # fmt: skip
            log(f"d. {name}: best fixed with hindsight")
            final = adaptive.limits(times[-1])
            b, t, simulations = hindsight(times, profile, slo, p, [(chosen.batch_size, t), (final.max_size, final.max_wait)])
            run(FixedPolicy(b, t), f"best fixed, hindsight ({simulations} sims)",
                sluice(*base, "--batch-size", b, "--timeout-ms", f"{t * 1e3:.3f}", "--json"))  # fmt: skip
            run(NoBatchingPolicy(), "no batching", sluice(*base, "--policy", "none", "--json"))
    return rows


def hindsight(times: np.ndarray, profile: ServiceProfile, slo: float, p: float, extra: list) -> tuple[int, float, int]:
    """The cheapest fixed (B, T) attaining p on this very trace, by simulation: the `extra`
    candidates, a coarse grid, then a finer grid around the best so far."""
    step, best, count = slo / 15, None, 0

    def consider(candidates) -> None:
        nonlocal best, count
        for b, t in candidates:
            t = round(float(t), 6) if b > 1 else 0.0
            summary = simulate(times, FixedPolicy(b, t), profile, memory_mb=MEMORY, slo_s=slo).summary()
            count += 1
            if summary["slo_attainment"] >= p and (best is None or summary["cost_usd"] < best[0]):
                best = (summary["cost_usd"], b, t)

    consider(extra)
    consider([(b, t) for b in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) for t in (np.linspace(step, slo, 15) if b > 1 else [0.0])])
    if best is None:
        return 1, 0.0, count
    _, b, t = best
    fine_t = np.linspace(max(t - step, step / 10), min(t + step, slo), 17)
    consider([(size, t) for size in range(max(2, int(b / 1.5)), min(64, math.ceil(b * 1.5)) + 1) for t in fine_t])
    return best[1], best[2], count


# -- output -------------------------------------------------------------------------


def report_markdown(doc: dict, out: dict) -> str:
    parts = [f"# Tuning report\n\nProfile: `{out['profile_path']}`: {json.dumps(doc)}\n\nSLOs: "
             + ", ".join(f"p{p * 100:g} <= {s * 1e3:g} ms" for s, p in SLOS) + f". Reproduce: `{out['command']}`"]  # fmt: skip
    if "model_vs_sim" in out:
        a = out["model_vs_sim"]
        parts.append(f"## a. Model vs simulation (warm FaaS {MEMORY} MB, {a['samples']} sampled arrivals; error = (model - sim) / sim, %)")
        parts.append(markdown(["workload", "rate", "scv", "acf1"], [list(w.values()) for w in a["workloads"]]))
        parts.append(f"Model on a {MODEL_GRIDS[0]}-point wait grid; sim = smallest latency with empirical CDF >= p.")
        cols = ["workload", "batch_size", "timeout_ms", "mean_batch", "model_p95", "sim_p95", "err_p95", "model_p99", "sim_p99", "err_p99"]
        parts.append(markdown(cols, [[r[c] for c in cols] for r in a["rows"]]))
        parts.append("Grid sensitivity (rows with some |error| > 2%): error % with the model's wait grid at 256 / 128 (the tuner's) / 1024 points")
        cols = ["workload", "batch_size", "timeout_ms"] + [f"err_{q}{g}" for q in ("p95", "p99") for g in ("", "_grid128", "_grid1024")]
        worse = [r for r in a["rows"] if max(abs(r[c]) for c in cols[3:]) > 2]
        parts.append(markdown(cols, [[r[c] for c in cols] for r in worse]))
        parts.append(NOTE_A)
        parts.append("Against the real trace ('trace'), and the trace's gaps shuffled (renewal, same marginal):")
        cols2 = ["workload", "batch_size", "timeout_ms", "model_p95", "trace_p95", "trace_err_p95", "shuffled_err_p95",
                 "model_p99", "trace_p99", "trace_err_p99", "shuffled_err_p99"]  # fmt: skip
        parts.append(markdown(cols2, [[r[c] for c in cols2] for r in a["rows"] if "trace_p95" in r]))
        parts.append("Max |error| %: " + ", ".join(f"{k} {v:.2f}" for k, v in a["max_abs_error_pct"].items()))
    if "tuner" in out:
        parts.append(f"## b. Tuner solve time (p{SLOS[0][1] * 100:g} <= {SLOS[0][0] * 1e3:g} ms; B 1..64, 30 timeouts; median ms, "
                     "wall and CPU, counting process new or reused)")
        cols = ["workload", "targets", "method", "new_wall_ms", "new_cpu_ms", "same_wall_ms", "same_cpu_ms", "configs", "batch_size",
                "timeout_ms", "memory_mb", "cost_per_million"]  # fmt: skip
        parts.append(markdown(cols, [[r[c] for c in cols] for r in out["tuner"]]))
    if "sim_speed" in out:
        c = out["sim_speed"]
        parts.append(f"## c. Simulator speed ({c['workload']})")
        rows = [["fast", f["requests"], f["simulate_s"], f["requests_per_s"]] for f in c["fast"]]
        rows.append(["fast, adaptive", c["adaptive_fast"]["requests"], c["adaptive_fast"]["simulate_s"], c["adaptive_fast"]["requests_per_s"]])
        rows.append(["event", c["event"]["requests"], c["event"]["simulate_s"], c["event"]["requests_per_s"]])
        parts.append(markdown(["path", "requests", "simulate_s", "requests_per_s"], rows))
        v = c["simpy"]
        if "skipped" in v:
            parts.append(f"Against SimPy: skipped, {v['skipped']}.")
        else:
            parts.append(f"Against SimPy (bench/sim_vs_simpy.py, {v['workload']['requests']} requests, whole processes, median of "
                         f"{len(v['sim_s'])}): `python -m sim` {v['sim_median_s']} s, `sluice sim` {v['sluice_sim_median_s']} s, "
                         f"SimPy {v['simpy_median_s']} s: {v['speedup']}x ({v['speedup_sluice_sim']}x).")
    if "traces" in out:
        parts.append(f"## d. Azure traces, FaaS {MEMORY} MB with cold starts (USD per million requests)")
        cols = ["trace", "slo", "policy", "batch_size", "timeout_ms", "mean_batch", "cost_per_million", "attainment", "latency_ms", "meets", "cold_starts"]
        parts.append(markdown(cols, [[r[c] for c in cols] for r in out["traces"]]))
        parts.append("Commands to reproduce each row (from the repository root):\n\n```\n" + "\n".join(r["command"] for r in out["traces"]) + "\n```")
    parts.append("Wall time per section (s): " + ", ".join(f"{k} {v:.1f}" for k, v in out["wall_s"].items()))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats, first 20 min of the traces")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of markdown")
    parser.add_argument("--profile", default=str(PROFILE.relative_to(REPO)), help="service profile (JSON)")
    parser.add_argument("--samples", type=int, help="sampled arrivals per workload in a. (default 200000; quick 50000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("model_vs_sim", "tuner", "sim_speed", "traces"), help="run one section")
    parser.add_argument("--system-allocator", action="store_true",
                        help="leave glibc's memory thresholds alone (the solver process raises them: batching.allocator)")
    args = parser.parse_args()
    if not args.system_allocator:
        retain_freed_memory()
    args.samples = args.samples or (50_000 if args.quick else 200_000)
    args.repeats = 1 if args.quick else 3
    profile_path = args.profile if Path(args.profile).is_file() else str(REPO / args.profile)
    doc = json.loads(Path(profile_path).read_text())
    fits = {}
    for name in ("code", "conv"):
        times = load_trace(name)
        fits[name] = (fit_arrivals(np.diff(times)), times)
    command = "python bench/tuning_report.py" + (" --quick" if args.quick else "") + (" --json" if args.json else "")
    out: dict = {"profile_path": args.profile, "profile": doc, "command": command,
                 "slos": [{"slo_ms": s * 1e3, "percentile": p * 100} for s, p in SLOS],
                 "fits": {n: {"kind": f.kind, **{k: round(v, 4) for k, v in f.target.items()},
                              "held_out_loglik_per_gap": {k: round(v, 4) for k, v in f.scores.items()}} for n, (f, _) in fits.items()},
                 "wall_s": {}}  # fmt: skip
    for key, section in (("model_vs_sim", lambda: model_vs_sim(args, doc, fits)), ("tuner", lambda: tuner_speed(args, doc, fits)),
                         ("sim_speed", lambda: sim_speed(args)), ("traces", lambda: traces_cost(args, doc, args.profile, fits))):  # fmt: skip
        if args.only and key != args.only:
            continue
        began = time.perf_counter()
        out[key] = section()
        out["wall_s"][key] = round(time.perf_counter() - began, 1)
    print(json.dumps(out) if args.json else report_markdown(doc, out))


if __name__ == "__main__":
    main()
