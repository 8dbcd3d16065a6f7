"""`python -m sim` as a subprocess (the rest of `sluice sim` is tested in process in
unit/test_sim_cli.py; the fixture profile_path is in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import REPO


def test_python_dash_m_sim(profile_path: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "sim", "--arrivals", "gamma:rate=20,cv=3", "--duration", "30", "--profile", profile_path,
         "--slo-ms", "150", "--memory-mb", "1024", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""  # no progress line when stderr is not a terminal
    assert json.loads(completed.stdout)["settings"]["arrivals"] == "gamma:rate=20,cv=3"
