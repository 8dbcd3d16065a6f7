"""Measure the load generator's own ceiling against a do-nothing server.

Any latency growth or shortfall here is a property of the client plus the
shared CPU, so it bounds what loadgen.py can tell us about a real server.
The server is always stopped on exit, including on Ctrl-C or an exception.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import run_load  # noqa: E402  (sibling module, importable without packaging)

SERVER = Path(__file__).resolve().parent / "trivial_server.py"


def free_port() -> int:
    """Let the kernel pick an unused loopback port (tiny race before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, timeout_s: float = 15.0) -> subprocess.Popen:
    """Start trivial_server.py and wait until GET /ok answers; never leak it on failure."""
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port)],
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"trivial_server.py exited early, code {proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/ok")
                ready = conn.getresponse().status == 200
                conn.close()
                if ready:
                    return proc
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("trivial_server.py did not become ready in time")
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU of a process from /proc (None where /proc is unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def sweep(server: subprocess.Popen, port: int, rates: list[float], procs_list: list[int],
          duration_s: float, drain_s: float, timeout_s: float, pause_s: float,
          verbose: bool) -> list[dict[str, Any]]:
    """Run every (procs, rate) point in turn; a pause lets sockets and CPU settle between."""
    results = []
    for procs in procs_list:
        for rate in rates:
            cpu0 = cpu_seconds(server.pid)
            r = run_load(f"http://127.0.0.1:{port}/echo", rate, duration_s, body=b'{"x":1}',
                         procs=procs, timeout_s=timeout_s, drain_s=drain_s)
            cpu1 = cpu_seconds(server.pid)
            r["server_cpu_us_per_req"] = (round((cpu1 - cpu0) * 1e6 / max(r["sent"], 1), 1)
                                          if cpu0 is not None and cpu1 is not None else None)
            results.append(r)
            if verbose:
                print(format_row(r), flush=True)
            time.sleep(pause_s)
    return results


HEADER = (f"{'procs':>5} {'target':>8} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'lag p99':>8} {'errors':>7} {'timeouts':>8} {'conns':>6} {'cli us/req':>10} "
          f"{'srv us/req':>10}")


def _ms(value: float | None) -> str:
    return f"{value:8.2f}" if value is not None else f"{'-':>8}"


def format_row(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    errors = sum(r["errors"].values())
    return (f"{r['procs']:>5} {r['rate_target']:>8.0f} {r['achieved_rps']:>9.1f} "
            f"{_ms(lat['p50'])} {_ms(lat['p99'])} {_ms(r['send_lag_ms']['p99'])} "
            f"{errors:>7} {r['timeouts']:>8} {r['peak_connections']:>6} "
            f"{r['client_cpu_us_per_req']:>10.1f} {r['server_cpu_us_per_req'] or '-':>10}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="1000,2000,4000,8000,12000",
                   help="comma-separated target rates, req/s")
    p.add_argument("--procs", default="1,2", help="comma-separated process counts to try")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    p.add_argument("--drain-s", type=float, default=5.0)
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--pause-s", type=float, default=1.0, help="idle time between points")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    procs_list = [int(x) for x in args.procs.split(",") if x.strip()]
    port = free_port()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind so `finally` runs
    server = start_server(port)
    try:
        if not args.json:
            print(f"trivial server on 127.0.0.1:{port}, {os.cpu_count()} CPUs, "
                  f"{args.duration:g} s per point\n{HEADER}", flush=True)
        results = sweep(server, port, rates, procs_list, args.duration, args.drain_s,
                        args.timeout_s, args.pause_s, verbose=not args.json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_server(server)
    if args.json:
        print(json.dumps({"cpu_count": os.cpu_count(), "duration_s": args.duration,
                          "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
