"""`sluice sim`: arguments, JSON and table output, and clear exits on bad input, run in process
(`python -m sim` as a subprocess is in e2e/test_sim_cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from batching import FixedPolicy
from sim import cli, report

from support import TRACES, needs_traces


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice sim")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def run_json(capsys: pytest.CaptureFixture[str], *argv: str, **kwargs: Any) -> dict[str, Any]:
    assert cli.run(parse(*argv, "--json"), **kwargs) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json prints exactly one line: one JSON object"
    return json.loads(out)


@needs_traces
def test_json_report_on_the_azure_trace(capsys: pytest.CaptureFixture[str], profile_path: str) -> None:
    trace = str(TRACES / "azure_llm_2023_conv.csv")
    report_ = run_json(capsys, "--trace", trace, "--profile", profile_path, "--slo-ms", "200", "--percentile", "95",
                       "--batch-size", "8", "--timeout-ms", "50", "--memory-mb", "2048")  # fmt: skip
    assert report_["requests"] == report_["completed"] == 19366
    for key in ("latency_ms", "slo_attainment", "cost_usd", "cost_per_million_usd", "batches", "mean_batch_size", "cold_starts", "wall_s"):
        assert key in report_
    assert report_["percentile"] == 95.0
    assert report_["latency_ms_at_percentile"] == pytest.approx(report_["latency_ms"]["p95"])
    assert report_["meets_slo"] == (report_["latency_ms"]["p95"] <= 200)
    settings = report_["settings"]
    assert settings["batch_size"] == 8 and settings["timeout_ms"] == 50 and settings["memory_mb"] == 2048
    assert settings["path"] == "fast" and settings["trace"] == trace and settings["arrivals"] is None
    # --duration with a trace keeps only its first S seconds.
    first_minute = run_json(capsys, "--trace", trace, "--duration", "60", "--profile", profile_path, "--slo-ms", "200", "--memory-mb", "1024")
    assert 0 < first_minute["requests"] < 1000


def test_synthetic_arrivals_on_a_pool(capsys: pytest.CaptureFixture[str], profile_path: str) -> None:
    report_ = run_json(capsys, "--arrivals", "mmpp2:rates=20,200;switch=0.2,1", "--duration", "120", "--seed", "4",
                       "--profile", profile_path, "--slo-ms", "50", "--target", "pool", "--instances", "2")  # fmt: skip
    assert report_["settings"]["target"] == "pool" and report_["settings"]["path"] == "event"
    assert report_["cold_starts"] == 0
    assert report_["cost_usd"] == pytest.approx(2 * 0.085 / 3600 * 120, rel=0.05)


def test_human_table(capsys: pytest.CaptureFixture[str], profile_path: str) -> None:
    args = parse("--arrivals", "poisson:rate=100", "--duration", "30", "--profile", profile_path, "--slo-ms", "100",
                 "--policy", "none", "--memory-mb", "1024")  # fmt: skip
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "policy none;" in out and "faas 1024 MB" in out
    # About 3% of invocations start a new environment (900 ms), so the p99 misses the SLO.
    assert "p99 latency" in out and "vs SLO 100 ms: MISSED" in out
    assert "cold starts" in out and "fast path" in out


def test_a_comparison_says_which_meets_the_slo_and_which_of_those_is_cheapest(capsys: pytest.CaptureFixture[str], profile_path: str) -> None:
    argv = ("--arrivals", "poisson:rate=300", "--duration", "120", "--seed", "3", "--profile", profile_path, "--slo-ms", "100",
            "--memory-mb", "1024", "--batch-size", "16", "--timeout-ms", "20", "--compare", "faas-only,fixed:1,fixed:4")  # fmt: skip
    results = run_json(capsys, *argv)
    assert cli.run(parse(*argv)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| meets the SLO |" in lines[0]
    rows = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in lines[2:5]}
    assert rows == {name: "yes" if r["meets_slo"] else "no" for name, r in results.items()}
    meeting = [name for name, r in results.items() if r["meets_slo"]]
    assert meeting, "a useful case has at least one that meets it"
    best = min(meeting, key=lambda name: results[name]["cost_per_million_usd"])
    assert lines[-1] == f"Cheapest that meets the SLO (p99 <= 100 ms): {best}, ${results[best]['cost_per_million_usd']:.4f} per million"


def test_adaptive_policy_needs_a_factory(capsys: pytest.CaptureFixture[str], profile_path: str) -> None:
    argv = ("--arrivals", "poisson:rate=50", "--duration", "20", "--profile", profile_path, "--slo-ms", "100",
            "--memory-mb", "1024", "--policy", "adaptive")  # fmt: skip
    assert cli.run(parse(*argv)) == 2
    assert "--policy adaptive needs the SLO tuner" in capsys.readouterr().err
    seen = []

    def factory(args: argparse.Namespace, profile: Any) -> FixedPolicy:
        seen.append((args.slo_ms, profile.name))
        return FixedPolicy(4, 0.02)

    report_ = run_json(capsys, *argv, policy_factory=factory)
    assert seen == [(100.0, "demo")]
    assert report_["settings"]["policy"] == "adaptive" and report_["settings"]["batch_size"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--arrivals", "poisson:rate=5"), "--arrivals needs --duration"),
        (("--arrivals", "poisson:rate=-5", "--duration", "10"), "rate must be positive"),
        (("--arrivals", "gauss:rate=5", "--duration", "10"), "unknown arrival process"),
        (("--trace", "/nonexistent/trace.csv"), "No such file"),
        (("--arrivals", "poisson:rate=5", "--duration", "-3"), "--duration must be a positive"),
        (("--arrivals", "poisson:rate=5", "--duration", "10", "--percentile", "0"), "--percentile must be in"),
        (("--arrivals", "poisson:rate=5", "--duration", "10", "--memory-mb", "3008"), "no FaaS memory size 3008"),
        (("--arrivals", "poisson:rate=5", "--duration", "10", "--batch-size", "0"), "--batch-size must be at least 1"),
        (("--arrivals", "poisson:rate=5", "--duration", "10", "--target", "pool", "--batch-size", "128"), "max_batch_size 64"),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys: pytest.CaptureFixture[str], profile_path: str, argv: tuple[str, ...], message: str) -> None:
    args = parse(*argv, "--profile", profile_path, "--slo-ms", "100")
    assert cli.run(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("sluice sim: ") and message in captured.err
    assert captured.out == ""


def test_ambiguous_memory_and_bad_profile(capsys: pytest.CaptureFixture[str], profile_path: str, tmp_path: Path) -> None:
    assert cli.run(parse("--arrivals", "poisson:rate=5", "--duration", "10", "--profile", profile_path, "--slo-ms", "100")) == 2
    assert "choose one" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"faas": {"memory_mb": {"1024": {"base_ms": 1}}, "price_per_gb_s": 1e-5}}')
    assert cli.run(parse("--arrivals", "poisson:rate=5", "--duration", "10", "--profile", str(broken), "--slo-ms", "100")) == 2
    assert "per_item_ms is missing" in capsys.readouterr().err


def test_plot_without_matplotlib_exits_2(capsys: pytest.CaptureFixture[str], profile_path: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    out = tmp_path / "plot.png"
    args = parse("--arrivals", "poisson:rate=5", "--duration", "10", "--profile", profile_path, "--slo-ms", "100",
                 "--memory-mb", "1024", "--plot", str(out))  # fmt: skip
    assert cli.run(args) == 2
    assert "pip install matplotlib" in capsys.readouterr().err and not out.exists()


def test_plot_draws_an_image(capsys: pytest.CaptureFixture[str], profile_path: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    args = parse("--arrivals", "poisson:rate=50", "--duration", "20", "--profile", profile_path, "--slo-ms", "100",
                 "--memory-mb", "1024", "--plot", str(out))  # fmt: skip
    assert cli.run(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_line_only_on_a_terminal(capsys: pytest.CaptureFixture[str], profile_path: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    argv = ("--arrivals", "poisson:rate=50", "--duration", "20", "--profile", profile_path, "--slo-ms", "100",
            "--target", "pool", "--json")  # fmt: skip
    assert cli.run(parse(*argv)) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.run(parse(*argv)) == 0
    captured = capsys.readouterr()
    assert "\rsimulating...   0.0%" in captured.err and captured.err.endswith("\r\x1b[K")
    json.loads(captured.out)  # stdout stays one clean JSON object
