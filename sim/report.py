"""Reports of a simulation: a short table for people, and an optional plot (needs matplotlib)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .results import SimResult

_PLOT_POINTS = 20_000  # enough to draw a curve; more only slows matplotlib down


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def format_table(report: dict[str, Any]) -> str:
    """The CLI's human-readable report (`report` is what `--json` prints)."""
    s = report["settings"]
    lat = report["latency_ms"]
    policy = s["policy"]
    if s["policy"] == "fixed":
        policy += f" B={s['batch_size']} T={s['timeout_ms']:g} ms"
    where = f"faas {s['memory_mb']} MB" if s["target"] == "faas" else f"pool of {s['instances']}"
    lines = [f"{report['requests']:,} requests from {s['source']}; policy {policy}; {where}"]
    if lat["p50"] is not None:
        lines.append("latency ms   " + "   ".join(f"{key} {lat[key]:.1f}" for key in ("p50", "p95", "p99", "max", "mean")))
    if report["slo_ms"] is not None and report["latency_ms_at_percentile"] is not None:
        verdict = "met" if report["meets_slo"] else "MISSED"
        lines.append(
            f"p{s['percentile']:g} latency  {report['latency_ms_at_percentile']:.1f} ms vs SLO {report['slo_ms']:g} ms: "
            f"{verdict} ({report['slo_attainment']:.2%} of requests within the SLO)"
        )
    per_million = report["cost_per_million_usd"]
    lines.append(f"cost         ${report['cost_usd']:.6g}" + (f" (${per_million:.6g} per million requests)" if per_million is not None else ""))
    mean_size = report["mean_batch_size"]
    lines.append(
        f"batches      {report['batches']:,}" + (f" (mean size {mean_size:.2f})" if mean_size else "")
        + f", cold starts {report['cold_starts']:,}"
        + (f", keep-warm pings {report['keep_warm_pings']:,}" if report.get("keep_warm_pings") else "")
    )
    lines.append(f"simulated in {report['wall_s']:.2f} s ({s['path']} path)")
    return "\n".join(lines)


def plot(result: SimResult, slo_s: float | None, percentile: float, path: str | Path) -> None:
    """Latency CDF with the SLO marked, and batch sizes over time, into one image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf_ax, size_ax) = plt.subplots(1, 2, figsize=(11, 4))
    latency_ms = np.sort(result.latency_s[np.isfinite(result.latency_s)]) * 1000.0
    if len(latency_ms):
        picks = np.unique(np.linspace(0, len(latency_ms) - 1, min(len(latency_ms), _PLOT_POINTS)).astype(int))
        cdf_ax.plot(latency_ms[picks], (picks + 1) / len(latency_ms), lw=1.5)
    if slo_s is not None:
        cdf_ax.axvline(slo_s * 1000.0, color="tab:red", ls="--", label=f"SLO {slo_s * 1000:g} ms")
    cdf_ax.axhline(percentile / 100.0, color="gray", ls=":", label=f"p{percentile:g}")
    cdf_ax.set(xlabel="latency (ms)", ylabel="fraction of requests", title="Latency CDF", ylim=(0, 1.01))
    if len(latency_ms):
        # Show the body and the percentile region; a few cold starts would squash it to one side.
        focus = max(float(np.percentile(latency_ms, 99.9)) * 1.1, (slo_s or 0.0) * 1250.0)
        cdf_ax.set_xlim(0, min(focus, latency_ms[-1] * 1.02))
    cdf_ax.legend(loc="lower right")

    if result.batches:
        step = max(1, result.batches // _PLOT_POINTS)
        size_ax.scatter(result.close_time[::step], result.size[::step], s=2, alpha=0.3)
        edges = np.linspace(result.close_time[0], result.close_time[-1] + 1e-9, 101)
        which = np.clip(np.searchsorted(edges, result.close_time, side="right") - 1, 0, 99)
        counts = np.bincount(which, minlength=100)
        means = np.bincount(which, weights=result.size, minlength=100) / np.maximum(counts, 1)
        centres = (edges[:-1] + edges[1:]) / 2
        size_ax.plot(centres[counts > 0], means[counts > 0], color="tab:orange", lw=1.5, label="mean")
        size_ax.legend(loc="upper right")
    size_ax.set(xlabel="time (s)", ylabel="batch size", title="Batch sizes over time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
