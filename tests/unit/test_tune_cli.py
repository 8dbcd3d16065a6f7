"""`sluice tune`, run in process: clear exits on bad input, and --no-verify. The JSON it promises
and `sluice sim` with the tuned choice, in subprocesses, are in e2e/test_tune_cli.py; the
fixture files is in conftest.py.
"""

from __future__ import annotations

import json

import pytest

from gateway import cli as gateway_cli

from support import TUNE_SLO


def tune_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        gateway_cli.main(["tune", *argv])
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--trace", "/nonexistent/trace.csv", *TUNE_SLO), "No such file"),
        (("--trace", "{one}", *TUNE_SLO), "at least two arrivals"),
        (("--arrivals", "poisson:rate=5", *TUNE_SLO), "--arrivals needs --duration"),
        (("--arrivals", "poisson:rate=5", "--duration", "-1", *TUNE_SLO), "duration must be a positive"),
        (("--arrivals", "poisson:rate=5", "--duration", "10", "--slo-ms", "200", "--percentile", "100"), "--percentile"),
        (("--arrivals", "poisson:rate=5", "--duration", "10", *TUNE_SLO, "--memory-mb", "3008"), "no FaaS memory size 3008"),
    ],
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], files: dict[str, str], argv: tuple[str, ...], message: str) -> None:
    argv = tuple(a.format(**files) for a in argv)
    code, out, err = tune_in_process(capsys, *argv, "--profile", files["profile"], "--json")
    assert code == 2 and out == ""
    assert err.startswith("sluice tune: ") and message in err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("slo_ms", ["0", "nan"])
def test_a_non_positive_or_non_finite_slo_exits_2(capsys: pytest.CaptureFixture[str], files: dict[str, str], slo_ms: str) -> None:
    argv = ("--arrivals", "poisson:rate=5", "--duration", "10", "--profile", files["profile"], "--slo-ms", slo_ms, "--json")
    code, out, err = tune_in_process(capsys, *argv)
    assert code == 2 and out == "" and err.startswith("sluice tune: ")


def test_no_verify_skips_the_simulation(capsys: pytest.CaptureFixture[str], files: dict[str, str]) -> None:
    argv = ("--arrivals", "poisson:rate=50", "--duration", "60", "--profile", files["profile"], *TUNE_SLO, "--json", "--no-verify")
    code, out, _ = tune_in_process(capsys, *argv)
    assert code == 0 and json.loads(out)["verified"] is None


