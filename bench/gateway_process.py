"""A real `sluice serve` for the benches and demos: its own process (and session, so a bench
stops its workers with it), its URL read from its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_gateway(serve_args: list[str], log: Path, token: str | None = None,
                  timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """`sluice serve --port 0 SERVE_ARGS` (with `token` as its admin token); (process, URL)
    once it serves. Raises with the log's tail when it exits or does not serve in time."""
    env = {**os.environ, "SLUICE_ADMIN_TOKEN": token} if token else None
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", *serve_args, "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env, start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        for line in log.read_text().splitlines():
            if '"serving"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gateway did not start:\n{log.read_text()[-2000:]}")
