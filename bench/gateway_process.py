"""A real `sluice serve` for the demos: started as its own process, its URL read from its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def start_gateway(serve_args: list[str], log: Path, token: str) -> tuple[subprocess.Popen, str]:
    """`sluice serve --port 0 SERVE_ARGS` with `token` as its admin token; (process, URL) once it serves."""
    env = {**os.environ, "SLUICE_ADMIN_TOKEN": token}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", "0", *serve_args, "--no-access-log"],
                               stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)  # fmt: skip
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        for line in log.read_text().splitlines():
            if '"serving"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(log.read_text()[-2000:])
