"""How closely `sluice sim --config FILE` predicts `sluice serve --config FILE`, on one bursty trace.

    python bench/fidelity.py [--duration 150] [--seed 0] [--slo-ms N] [--out DIR]

Everything runs on 127.0.0.1 and stops by itself (about 3 minutes a configuration):
1. `sluice faas-emulator` with the demo model as function `demo`, and `sluice profile --config`
   on deploy/sluice-fidelity.toml (a copy with the demo model's path and the emulator's port
   filled in): the local worker and the function;
2. a bursty arrival trace (a base rate, bursts of 4-8x lasting 5-20 s every 20-40 s, seeded);
3. a fresh emulator and `sluice serve --config`; the trace replayed open loop (each request
   sent at its offset whatever the earlier ones did): each request's status, its latency
   (client side, from its write to the socket to the whole answer) and when it was really
   written; the gateway's /metrics before the first request and after the last answer, and
   every 5 s; the CPU this script's processes and all others used;
4. `sluice sim --config --profile --trace --json` on the times really sent (and, where the
   simulator adds an edge allowance to each answer, again with `--edge-ms 0`: the core alone);
5. a markdown table, live against simulated, with the targets (p50 within 10%, p99 within
   25%, the function's share of batches within 5 points, instance-seconds and cost within
   15%); where the latency goes (the gateway's own histograms, the same requests live less
   simulated); the pool's starts and stops on both sides; a timeline in 10 s windows; and
   everything as JSON in --out.

`--slo-ms N` adds a second configuration: the same file with the adaptive policy for an N ms
p99 SLO (admission on), on the same trace and profile. Before the profile and each live run
the script waits (`--quiet-wait`) for other processes to leave the machine's CPU alone; the
results say how much they used. Exit code 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from backends.worker.demo import demo_model_path  # noqa: E402
from loadclient import CONN_ERROR, TIMEOUT, ConnPool, build_request, read_response  # noqa: E402

ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"}
MODEL = "demo"
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [0.1] * 256}]}).encode()
TARGETS = {"p50": 0.10, "p99": 0.25, "share": 5.0, "instance_s": 0.15, "cost": 0.15}
WINDOW_S = 10.0
CLIENT_TIMEOUT_S = 35.0  # past the gateway's own 30 s request timeout


# -- processes -------------------------------------------------------------------------


def start(*argv: str, stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway", *argv], cwd=REPO, env=ENV, text=True,
                            stdout=stdout, stderr=stderr, start_new_session=True)  # fmt: skip


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (3: the parent, 19: the start time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below `pid` now, with its start time (workers and function
    environments run in sessions of their own, so a process group does not reach them)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)) is not None:
            children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def stop(process: subprocess.Popen | None, grace_s: float = 30.0) -> None:
    """SIGTERM to the process's group, SIGKILL after `grace_s`; then, by id, any process
    below it that is still there (the same process: its start time is checked)."""
    if process is None:
        return
    below = descendants(process.pid)
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, started in below if (fields := _stat(pid)) is not None and fields[19] == started]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not alive:
            return
        time.sleep(2.0)


def start_emulator(model: Path, concurrency: int, log_path: Path) -> tuple[subprocess.Popen, int]:
    with open(log_path, "w") as log:
        process = start("faas-emulator", "--port", "0", "--function", f"{MODEL}={model}",
                        "--max-concurrency", str(concurrency), "--parent-pid", str(os.getpid()),
                        stdout=subprocess.PIPE, stderr=log)  # fmt: skip
    line = process.stdout.readline()  # type: ignore[union-attr]
    if not line:
        stop(process)
        raise RuntimeError(f"the emulator did not start:\n{log_path.read_text()[-2000:]}")
    return process, int(json.loads(line)["port"])


def start_gateway(config: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    with open(log_path, "w") as log:
        process = start("serve", "--port", "0", "--config", str(config), stderr=log)
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited:\n{log_path.read_text()[-2000:]}")
        for line in log_path.read_text().splitlines():
            if '"serving"' in line:
                return process, f"http://127.0.0.1:{json.loads(line)['port']}"
        time.sleep(0.05)
    stop(process)
    raise RuntimeError("the gateway did not start in 120 s")


def write_config(template: str, model: Path, port: int, path: Path, slo_ms: float | None) -> dict[str, Any]:
    text = template.replace("/models/demo.onnx", str(model)).replace("http://127.0.0.1:9000", f"http://127.0.0.1:{port}")
    if slo_ms is not None:
        text, count = re.subn(r'(?m)^policy = "fixed".*$', f'policy = "adaptive"\nslo_ms = {slo_ms:g}', text)
        if count != 1:
            raise ValueError('the config needs one line `policy = "fixed"` for --slo-ms to replace')
    path.write_text(text)
    return tomllib.loads(text)


# -- the trace -------------------------------------------------------------------------


def bursty_trace(duration_s: float, seed: int, base_rate: float) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Poisson arrivals at `base_rate`, with bursts of 4-8x lasting 5-20 s, each starting
    20-40 s after the one before (and at least 5 s after it ended); the first 10-25 s in."""
    rng = np.random.default_rng(seed)
    segments: list[dict[str, float]] = []
    at, burst = 0.0, float(rng.uniform(10.0, 25.0))
    while at < duration_s:
        if burst > at:
            segments.append({"from": at, "to": min(burst, duration_s), "rate": base_rate})
            at = min(burst, duration_s)
        if at >= duration_s:
            break
        length, factor, gap = (float(x) for x in (rng.uniform(5, 20), rng.uniform(4, 8), rng.uniform(20, 40)))
        segments.append({"from": at, "to": min(at + length, duration_s), "rate": base_rate * factor})
        burst = at + max(gap, length + 5.0)
        at = min(at + length, duration_s)
    times = [np.sort(rng.uniform(s["from"], s["to"], rng.poisson(s["rate"] * (s["to"] - s["from"])))) for s in segments]
    return np.concatenate(times), segments


# -- the live run ----------------------------------------------------------------------


async def replay(url: str, offsets: np.ndarray, t0: float) -> dict[str, np.ndarray]:
    """Send one request at each offset (seconds after `t0`, on time.perf_counter()), open loop.
    Per request: the offset it was written to the socket at, its status (0: no answer in
    time, -1: connection error) and its latency from that write to the whole answer."""
    host, port, request = build_request(f"{url}/v2/models/{MODEL}/infer", body=BODY)
    pool = ConnPool(host, port, 1024)
    n = len(offsets)
    sent, latency = np.full(n, np.nan), np.full(n, np.nan)
    codes = np.full(n, TIMEOUT, dtype=np.int16)
    clock = time.perf_counter
    due = (t0 + offsets).tolist()
    tasks: set[asyncio.Task] = set()

    async def one(i: int) -> None:
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                conn = await pool.acquire()
                reader, writer = conn
                try:
                    began = clock()
                    writer.write(request)
                    sent[i] = began - t0
                    status, keep = await read_response(reader)
                except BaseException:
                    pool.discard(conn)
                    raise
                done = clock()
                if keep:
                    pool.release(conn)
                else:
                    pool.discard(conn)
            latency[i], codes[i] = done - began, status
        except TimeoutError:
            pass
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            codes[i] = CONN_ERROR

    i = 0
    while i < n:
        now = clock()
        while i < n and due[i] <= now:
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, due[i] - clock()))
    while tasks:
        await asyncio.gather(*list(tasks))
    pool.close_all()
    return {"scheduled": offsets, "sent": sent, "latency": latency, "code": codes}


def scrape(url: str) -> dict[str, float]:
    """The gateway's metrics: `name{label=value,...}` (the model label left out) -> value."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "model")
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples with these labels (and any others)."""
    total = 0.0
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def cpu_by_owner() -> tuple[dict[int, float], dict[int, int]]:
    """Every process's CPU seconds so far, and its parent."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, parent = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(entry)) is not None:
            pid = int(entry)
            parent[pid], cpu[pid] = int(fields[1]), (float(fields[11]) + float(fields[12])) / tick
    return cpu, parent


class CpuMeter:
    """Cores used since the last reading: by this script and everything it started
    (gateway, workers, emulator, function environments), and by every other process."""

    def __init__(self) -> None:
        self.last, _ = cpu_by_owner()
        self.at = time.monotonic()

    def read(self) -> tuple[float, float]:
        cpu, parent = cpu_by_owner()
        now = time.monotonic()
        mine = {os.getpid()}
        for pid in cpu:  # up each process's ancestry: below this script or not
            chain, p = [], pid
            while p not in mine and p in parent and p > 1 and len(chain) < 64:
                chain.append(p)
                p = parent[p]
            if p in mine:
                mine.update(chain)
        used = {pid: cpu[pid] - self.last.get(pid, 0.0) for pid in cpu}
        ours = sum(v for pid, v in used.items() if pid in mine)
        others = sum(v for pid, v in used.items() if pid not in mine)
        span = max(1e-3, now - self.at)
        self.last, self.at = cpu, now
        return ours / span, others / span


def wait_for_quiet(limit_s: float, cores: float = 0.15) -> float:
    """Wait (at most `limit_s`) until other processes use under `cores` over 5 s; what they used last."""
    meter, give_up = CpuMeter(), time.monotonic() + limit_s
    while True:
        time.sleep(5.0)
        _, others = meter.read()
        if others < cores or time.monotonic() > give_up:
            return others
        print(f"other processes use {others:.2f} cores; waiting for a quieter machine", file=sys.stderr)


class Watcher(threading.Thread):
    """Every `every_s`: the gateway's placements and the machine's CPU use, for the timeline."""

    def __init__(self, url: str, t0: float, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.url, self.t0, self.every_s = url, t0, every_s
        self.rows: list[dict[str, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        meter = CpuMeter()
        while not self.done.wait(self.every_s):
            try:
                values = scrape(self.url)
            except OSError:
                continue
            ours, others = meter.read()
            self.rows.append({
                "t": time.perf_counter() - self.t0,
                "to_pool": metric(values, "sluice_placements_total", target="pool"),
                "to_faas": metric(values, "sluice_placements_total", target="faas"),
                "workers": metric(values, "sluice_pool_instances"),
                "cores_ours": ours, "cores_others": others,
            })  # fmt: skip


def log_events(log_path: Path, wall_t0: float) -> list[dict[str, Any]]:
    """The gateway's log lines about its pool and the scheduler, `t` seconds after the trace began."""
    keep = ("pool grew", "pool shrank", "scheduler ready", "model ready", "servers measured", "serving")
    events = []
    for line in log_path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("msg") in keep or doc.get("level") in ("warning", "error"):
            stamp = datetime.strptime(doc["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
            events.append({"t": round(stamp - wall_t0, 3), **doc})
    return events


def live_run(template: str, model: Path, slo_ms: float | None, offsets: np.ndarray, folder: Path) -> dict[str, Any]:
    """A fresh emulator (its one warm environment comes from the gateway's startup
    measurement, as the simulator assumes), the gateway, the trace."""
    emulator, gateway = None, None
    try:
        concurrency = int(tomllib.loads(template)["models"][MODEL]["faas"].get("concurrency", 10))
        emulator, port = start_emulator(model, concurrency, folder / "emulator.log")
        config = folder / "sluice.toml"
        write_config(template, model, port, config, slo_ms)
        began = time.monotonic()
        gateway, url = start_gateway(config, folder / "gateway.log")
        startup_s = time.monotonic() - began
        before = scrape(url)
        gateway_cpu0 = _cpu_seconds(gateway.pid)
        t0 = time.perf_counter() + 0.2
        wall_t0 = time.time() + (t0 - time.perf_counter())
        watcher = Watcher(url, t0)
        watcher.start()
        load_began = time.monotonic()
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            raw = runner.run(replay(url, offsets, t0))
        load_s = time.monotonic() - load_began
        after = scrape(url)
        gateway_cpu = _cpu_seconds(gateway.pid) - gateway_cpu0
        watcher.done.set()
        watcher.join()
        watcher.rows.append({"t": time.perf_counter() - t0, "to_pool": metric(after, "sluice_placements_total", target="pool"),
                             "to_faas": metric(after, "sluice_placements_total", target="faas"),
                             "workers": metric(after, "sluice_pool_instances")})  # fmt: skip
    finally:
        stop(gateway)
        stop(emulator)
    inits = [float(m) for m in re.findall(r"started in ([\d.]+) ms", (folder / "emulator.log").read_text())]
    return {"config": config, "raw": raw, "before": before, "after": after, "timeline": watcher.rows,
            "environment_starts_ms": inits, "startup_s": startup_s, "load_s": load_s, "gateway_cpu_s": gateway_cpu,
            "events": log_events(folder / "gateway.log", wall_t0)}  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid) or ["0"] * 13
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize_live(run: dict[str, Any]) -> dict[str, Any]:
    raw, before, after = run["raw"], run["before"], run["after"]
    codes, latency, sent = raw["code"], raw["latency"], raw["sent"]
    ok = codes == 200
    lag = (sent - raw["scheduled"])[np.isfinite(sent)]
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    to_pool = metric(delta, "sluice_placements_total", target="pool")
    to_faas = metric(delta, "sluice_placements_total", target="faas")
    pool_usd = metric(delta, "sluice_cost_usd_total", backend="pool")
    faas_usd = metric(delta, "sluice_cost_usd_total", backend="faas")
    statuses = {str(int(c)): int(n) for c, n in zip(*np.unique(codes, return_counts=True))}
    done = latency[ok]
    return {
        "requests": int(len(codes)),
        "completed": int(ok.sum()),
        "statuses": statuses,  # 0: no answer in time, -1: connection error
        "refused": int((codes == 429).sum()),
        "other_errors": int((~ok & (codes != 429)).sum()),
        "latency_ms": _percentiles(done),
        "latency_from_schedule_ms": _percentiles((latency + sent - raw["scheduled"])[ok]),
        "send_lag_ms": {**_percentiles(lag), "over_5ms": int((lag > 0.005).sum()), "over_20ms": int((lag > 0.020).sum())},
        "batches": to_pool + to_faas, "batches_on_pool": to_pool, "batches_on_faas": to_faas,
        "faas_share": to_faas / (to_pool + to_faas) if to_pool + to_faas else 0.0,
        "mean_batch_size": float(ok.sum() / (to_pool + to_faas)) if to_pool + to_faas else None,
        "cold_starts": metric(delta, "sluice_faas_cold_starts_total"),
        "environment_starts_ms": run["environment_starts_ms"],  # the emulator's log: the gateway's first warm-up, then the trace's
        "over_100ms": int((done > 0.1).sum()),
        "faas_billed_s": metric(delta, "sluice_faas_billed_seconds_total"),
        "instance_seconds": metric(delta, "sluice_pool_instance_seconds_total"),
        "instance_seconds_with_startup": metric(after, "sluice_pool_instance_seconds_total"),
        "faas_billed_ms_per_batch": metric(delta, "sluice_faas_billed_seconds_total") * 1e3 / to_faas if to_faas else None,
        "cost_usd": pool_usd + faas_usd, "cost_pool_usd": pool_usd, "cost_faas_usd": faas_usd,
        "shed": metric(delta, "sluice_requests_shed_total"),
        "answered_by_code": {k.split("code=")[1].rstrip("}"): v for k, v in delta.items()
                             if k.startswith("sluice_requests_total{") and v},
        "mean_ms": {
            "client": float(np.mean(done) * 1e3) if len(done) else None,
            "gateway": _mean_ms(delta, "sluice_request_duration_seconds"),  # its middleware, in to out
            "queue_wait": _mean_ms(delta, "sluice_queue_wait_seconds"),  # arrival at the core to the batch sent
        },
        "instance_seconds_from_log": _billed_from_log(run["events"], float(np.nanmax(sent + latency)) if ok.any() else 0.0),
        "workers_started": sum(1 for e in run["events"] if e["msg"] == "pool grew"),
        "workers_stopped": sum(1 for e in run["events"] if e["msg"] == "pool shrank"),
        "gateway_cpu_s": run["gateway_cpu_s"], "gateway_startup_s": run["startup_s"], "load_s": run["load_s"],
    }  # fmt: skip


def _mean_ms(values: dict[str, float], histogram: str) -> float | None:
    count = metric(values, f"{histogram}_count")
    return metric(values, f"{histogram}_sum") / count * 1e3 if count else None


def _billed_from_log(events: list[dict[str, Any]], end: float) -> float:
    """Worker-seconds from the gateway's log, up to `end`: the first worker from "model
    ready", each new one from its start request ("pool grew" less its startup_s), each until
    "pool shrank" (the oldest first, as the planner stops them)."""
    opened = [e["t"] for e in events if e["msg"] == "model ready"][:1]
    total = 0.0
    for e in events:
        if e["msg"] == "pool grew":
            opened.append(e["t"] - e.get("startup_s", 0.0))
        elif e["msg"] == "pool shrank" and opened:
            total += e["t"] - opened.pop(0)
    return total + sum(max(0.0, end - t) for t in opened)


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return dict.fromkeys(("p50", "p90", "p99", "max"))
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) * 1e3
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max() * 1e3)}


# -- the simulation --------------------------------------------------------------------


def simulate(config: Path, profile: Path, trace: Path, *extra: str) -> dict[str, Any]:
    """`sluice sim --config --profile --trace --json`, as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "gateway", "sim", "--config", str(config), "--profile", str(profile),
                          "--trace", str(trace), "--json", *extra], cwd=REPO, env=ENV, capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"sluice sim failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def simulated_timeline(config: Path, profile: Path, arrivals: np.ndarray) -> dict[str, Any] | None:
    """The same simulation in process (gateway.simulated.simulate_config, which `sluice sim
    --config` calls), recording each batch's placement and the pool's changes for the timeline,
    and each request's latency from the core alone."""
    try:
        import sim.served as served
        from gateway.config import load
        from gateway.simulated import pick_model, simulate_config
        from scheduler.types import billed_ms
        from sim.profiles import ServiceProfile

        runs: list[Any] = []

        class Recorded(served.ServedRun):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                runs.append(self)
                self.pool_events: list[tuple[float, str]] = []
                fleet, started, stopped = self.fleet, self.fleet.start_ended, self.fleet.stop_ended

                def start_ended(token: int, seat: Any, now: float) -> None:
                    started(token, seat, now)
                    if seat is not None:
                        self.pool_events.append((now, "grew"))

                def stop_ended(seat: Any, now: float) -> None:
                    stopped(seat, now)
                    self.pool_events.append((now, "shrank"))

                fleet.start_ended, fleet.stop_ended = start_ended, stop_ended

        original = served.ServedRun
        served.ServedRun = Recorded  # simulate_served builds its run from the module's name
        try:
            cfg = load(str(config))
            # The core alone (no edge allowance, in versions that add one): the paired differences
            # are then what the gateway adds to the core's answers.
            edge = {"edge_s": 0.0} if "edge_s" in inspect.signature(simulate_config).parameters else {}
            result = simulate_config(cfg, pick_model(cfg, None), ServiceProfile.load(profile), arrivals, **edge)
        finally:
            served.ServedRun = original
        run = runs[-1]
        batches = [(float(s.started), bool(s.on_function)) for s, *_ in run.out.sends]
        wait = result.start_time[result.batch] - result.arrival  # per request: arrival to its batch's start
        on_faas = np.array([f for _, f in batches], dtype=bool)[result.batch]
        return {
            "batches": batches, "pool_events": run.pool_events, "summary": result.summary(),
            "initial_workers": run.serving.servers, "end": run.end,
            "faas_billed_ms_per_batch": float(np.mean([billed_ms(v) for s, v, *_ in run.out.sends if s.on_function]))
            if any(s.on_function for s, *_ in run.out.sends) else None,
            "latency_s": result.latency_s, "wait_s": np.where(result.batch >= 0, wait, np.nan), "on_faas": on_faas,
        }  # fmt: skip
    except Exception as exc:  # the timeline is for reading; the comparison does not need it
        print(f"(no simulated timeline: {exc.__class__.__name__}: {exc})", file=sys.stderr)
        return None


# -- the comparison --------------------------------------------------------------------


def compare(live: dict[str, Any], sim: dict[str, Any], core_only: dict[str, Any] | None = None,
            edge_ms: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or a == 0 else b / a

    rows = []
    for key, label in (("p50", "p50 latency (ms)"), ("p99", "p99 latency (ms)")):
        a, b = live["latency_ms"][key], sim["latency_ms"][key]
        r = ratio(a, b)
        rows.append({"what": label + (f", sim with its {edge_ms:g} ms edge" if edge_ms else ""), "live": a, "sim": b, "vs": r,
                     "vs_text": _x(r), "target": f"within {TARGETS[key]:.0%}",
                     "met": r is not None and abs(r - 1) <= TARGETS[key]})  # fmt: skip
    for key in ("p50", "p99"):  # informative: the core's own prediction, without the edge
        label = f"{key} latency (ms), sim core alone (--edge-ms 0)"
        if core_only is not None:
            a, b = live["latency_ms"][key], core_only["latency_ms"][key]
            r = ratio(a, b)
            rows.append({"what": label, "live": a, "sim": b, "vs": r, "vs_text": _x(r), "target": f"(within {TARGETS[key]:.0%})",
                         "met": None, "would_meet": r is not None and abs(r - 1) <= TARGETS[key]})  # fmt: skip
    a, b = live["faas_share"] * 100, sim["faas_share"] * 100
    rows.append({"what": "batches on the function (%)", "live": a, "sim": b, "vs": b - a, "vs_text": f"{b - a:+.1f} points",
                 "target": "within 5 points", "met": abs(b - a) <= TARGETS["share"]})  # fmt: skip
    sim_instance_s = (sim.get("instance_hours") or 0.0) * 3600
    for key, label, a, b in (("instance_s", "pool instance-seconds", live["instance_seconds"], sim_instance_s),
                             ("cost", "cost (USD)", live["cost_usd"], sim["cost_usd"])):  # fmt: skip
        r = ratio(a, b)
        rows.append({"what": label, "live": a, "sim": b, "vs": r, "vs_text": _x(r), "target": f"within {TARGETS[key]:.0%}",
                     "met": r is not None and abs(r - 1) <= TARGETS[key]})  # fmt: skip
    a, b = live["refused"], sim["refused"]
    rows.append({"what": "refused (429)", "live": a, "sim": b, "vs": b - a, "vs_text": f"{b - a:+d}", "target": "", "met": None})
    a, b = live["other_errors"], sim["timed_out"] + sim["failed"]
    rows.append({"what": "other errors", "live": a, "sim": b, "vs": b - a, "vs_text": f"{b - a:+d}", "target": "", "met": None})
    sim_slow = sim.get("over_100ms")
    for label, a, b in (("requests answered 200", live["completed"], sim["completed"]),
                        ("answered in over 100 ms", live["over_100ms"], sim_slow),
                        ("batches", live["batches"], sim["batches"]),
                        ("function cold starts", live["cold_starts"], sim["cold_starts"]),
                        ("workers started", live["workers_started"], sim.get("instances_started"))):  # fmt: skip
        rows.append({"what": label, "live": a, "sim": b, "vs": None, "vs_text": "", "target": "", "met": None})
    return rows


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _fmt(value: Any, what: str) -> str:
    if value is None:
        return "-"
    if "USD" in what:
        return f"{value:.6f}"
    if "latency" in what or "%" in what or "seconds" in what:
        return f"{value:.1f}"
    return f"{round(value):,}"  # a count


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| | live | sim | sim vs live | target | met |", "|---|---:|---:|---:|---|---|"]
    for row in rows:
        met = "" if row["met"] is None else ("yes" if row["met"] else "**no**")
        if row.get("would_meet") is not None:
            met = "(yes)" if row["would_meet"] else "(no)"
        lines.append(f"| {row['what']} | {_fmt(row['live'], row['what'])} | {_fmt(row['sim'], row['what'])} | "
                     f"{row['vs_text']} | {row['target']} | {met} |")  # fmt: skip
    return "\n".join(lines)


def timeline(live: dict[str, Any], raw: dict[str, np.ndarray], sim: dict[str, Any] | None, duration_s: float,
             workers: int) -> list[dict[str, Any]]:  # fmt: skip
    """Per window: requests sent, where the batches went (live from the scrapes, which are
    5 s apart; sim per batch), and the workers serving at the window's end."""
    edges = np.arange(0.0, duration_s + WINDOW_S, WINDOW_S)
    sent = raw["sent"][np.isfinite(raw["sent"])]
    scrapes = live["timeline"]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        row: dict[str, Any] = {"from": float(lo), "to": float(hi), "req_s": float(((sent >= lo) & (sent < hi)).sum() / WINDOW_S)}
        a = _at(scrapes, lo)
        b = _at(scrapes, hi)
        if a is not None and b is not None:
            row["live_pool"], row["live_faas"] = b["to_pool"] - a["to_pool"], b["to_faas"] - a["to_faas"]
            inside = [r for r in scrapes if lo < r["t"] <= hi + 0.5 and "cores_ours" in r]
            row["cores_ours"] = float(np.mean([r["cores_ours"] for r in inside])) if inside else None
            row["cores_others"] = float(np.mean([r["cores_others"] for r in inside])) if inside else None
        row["live_workers"] = _workers_at(live["events"], workers, hi, grew="pool grew", shrank="pool shrank")
        if sim is not None:
            starts = [(t, f) for t, f in sim["batches"] if lo <= t < hi]
            row["sim_pool"] = sum(1 for _, f in starts if not f)
            row["sim_faas"] = sum(1 for _, f in starts if f)
            events = [{"t": t, "msg": m} for t, m in sim["pool_events"]]
            row["sim_workers"] = _workers_at(events, sim["initial_workers"], hi, grew="grew", shrank="shrank")
        rows.append(row)
    return rows


def _at(scrapes: list[dict[str, float]], t: float) -> dict[str, float] | None:
    """The scrape within 1 s of `t`; past the end of the trace, the one after its last answer."""
    if t <= 0:
        return {"to_pool": 0.0, "to_faas": 0.0}
    near = min(scrapes, key=lambda r: abs(r["t"] - t), default=None)
    if near is not None and abs(near["t"] - t) <= 1.0:
        return near
    return scrapes[-1] if scrapes and scrapes[-1]["t"] < t else None


def _workers_at(events: list[dict[str, Any]], initial: int, t: float, *, grew: str, shrank: str) -> int:
    n = initial
    for e in events:
        if e["t"] <= t:
            n += 1 if e["msg"] == grew else -1 if e["msg"] == shrank else 0
    return n


def timeline_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| t (s) | req/s | live: batches to worker / function | sim: batches to worker / function | "
             "workers at the end, live / sim | cores: ours / other processes |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        live = f"{r['live_pool']:.0f} / {r['live_faas']:.0f}" if "live_pool" in r else "-"
        sim = f"{r['sim_pool']} / {r['sim_faas']}" if "sim_pool" in r else "-"
        ours, others = r.get("cores_ours"), r.get("cores_others")
        cores = "-" if ours is None else f"{ours:.2f} / {others:.2f}"
        lines.append(f"| {r['from']:.0f}-{r['to']:.0f} | {r['req_s']:.0f} | {live} | {sim} | "
                     f"{r['live_workers']} / {r.get('sim_workers', '-')} | {cores} |")  # fmt: skip
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def one_configuration(name: str, template: str, model: Path, offsets: np.ndarray, profile: Path, folder: Path,
                      slo_ms: float | None, duration_s: float, quiet_wait_s: float) -> dict[str, Any]:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    others_before = wait_for_quiet(quiet_wait_s)
    print(f"[{name}] serving the trace live (about {duration_s:.0f} s; logs in {folder})", file=sys.stderr)
    run = live_run(template, model, slo_ms, offsets, folder)
    config = run["config"]
    raw = run["raw"]
    np.savez_compressed(folder / "live.npz", **raw)
    (folder / "live.json").write_text(json.dumps({k: v for k, v in run.items() if k not in ("raw", "config")}, default=_json))
    live = summarize_live(run)
    sent = np.sort(raw["sent"][np.isfinite(raw["sent"])])
    trace = folder / "sent.txt"
    np.savetxt(trace, sent, fmt="%.6f")
    print(f"[{name}] simulating the {len(sent):,} arrivals really sent", file=sys.stderr)
    began = time.monotonic()
    simulated = simulate(config, profile, trace)
    sim_wall_s = time.monotonic() - began
    # The latency the core alone predicts, without what `sluice sim --config` adds for the
    # gateway's own handling of each request (`--edge-ms`, where this version has it).
    edge_ms = simulated.get("settings", {}).get("edge_ms")
    core_only = simulate(config, profile, trace, "--edge-ms", "0") if edge_ms else None
    recorded = simulated_timeline(config, profile, np.loadtxt(trace))  # the CLI's arrivals; its clock is the live run's
    slow = None if recorded is None else int(np.count_nonzero(np.asarray(recorded["latency_s"]) > 0.1))
    rows = compare(live, {**simulated, "over_100ms": slow}, core_only, edge_ms)
    paired = paired_differences(raw, recorded) if recorded is not None else None
    workers = int(tomllib.loads(config.read_text())["models"][MODEL].get("workers", 1))
    windows = timeline(run, raw, recorded, duration_s, workers)
    lag = live["send_lag_ms"]
    warnings = []
    others = [r["cores_others"] for r in run["timeline"] if "cores_others" in r]
    if others and float(np.mean(others)) > 0.2:
        warnings.append(f"other processes used {np.mean(others):.2f} cores on average during the run (at most "
                        f"{max(others):.2f} over 5 s): the live side shared the machine")  # fmt: skip
    if lag["p99"] is not None and (lag["p99"] > 5.0 or lag["over_20ms"] > 0.001 * len(sent)):
        warnings.append(f"the sender lagged: send lag p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms, "
                        f"{lag['over_20ms']} requests more than 20 ms late (the sim is fed the real send times)")  # fmt: skip
    return {
        "name": name, "slo_ms": slo_ms, "config": config.read_text(), "live": live, "sim": simulated, "sim_core_only": core_only,
        "sim_wall_s": sim_wall_s, "comparison": rows, "paired": paired, "timeline": windows, "warnings": warnings,
        "cores_others_before": others_before, "cores_others_mean": float(np.mean(others)) if others else None,
        "sim_in_process_matches_cli": None if recorded is None else _same(recorded["summary"], core_only or simulated),
        "sim_run": None if recorded is None else {k: recorded[k] for k in ("end", "pool_events", "faas_billed_ms_per_batch")},
        "events": run["events"], "scrapes": run["timeline"], "metrics_before": run["before"], "metrics_after": run["after"],
    }  # fmt: skip


def paired_differences(raw: dict[str, np.ndarray], recorded: dict[str, Any]) -> dict[str, Any]:
    """The same requests live and simulated (the sim's arrivals are the live send times,
    sorted): live latency less the core's simulated latency, in ms, by where the sim ran the
    request's batch."""
    sent = raw["sent"]
    finite = np.isfinite(sent)
    order = np.argsort(sent[finite], kind="stable")
    live = np.where(raw["code"][finite] == 200, raw["latency"][finite], np.nan)[order]
    sim = np.asarray(recorded["latency_s"], dtype=float)
    both = np.isfinite(live) & np.isfinite(sim)
    out: dict[str, Any] = {"sim_mean_wait_ms": float(np.nanmean(recorded["wait_s"]) * 1e3),
                           "sim_mean_ms": float(np.mean(sim[np.isfinite(sim)]) * 1e3)}  # fmt: skip
    on_faas = recorded["on_faas"]
    for name, mask in (("all", both), ("sim_on_worker", both & ~on_faas), ("sim_on_function", both & on_faas)):
        d = (live[mask] - sim[mask]) * 1e3
        out[name] = {"n": int(mask.sum()), **({k: float(v) for k, v in zip(("p10", "p50", "p90"), np.percentile(d, [10, 50, 90]))}
                                              if len(d) else {}), "mean": float(d.mean()) if len(d) else None}  # fmt: skip
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("requests", "completed", "batches", "faas_share", "cost_usd", "refused", "timed_out", "failed")
    return all(a.get(k) == b.get(k) for k in keys) and a["latency_ms"]["p99"] == b["latency_ms"]["p99"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of trace (at least 120; default 150)")
    parser.add_argument("--seed", type=int, default=0, help="the trace's seed (default 0)")
    parser.add_argument("--base-rate", type=float, default=80.0, help="requests per second between bursts (default 80)")
    parser.add_argument("--config", type=Path, default=REPO / "deploy" / "sluice-fidelity.toml",
                        help="the model to serve and simulate (default deploy/sluice-fidelity.toml)")
    parser.add_argument("--slo-ms", type=float, help="also run the adaptive policy for this p99 SLO")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="before each live run, wait at most this long "
                        "for other processes to use under 0.15 cores (default 300 s)")
    parser.add_argument("--out", type=Path, help="where to write the results (default bench/results/fidelity-<time>-seed<N>)")
    args = parser.parse_args()
    if args.duration < 120:
        parser.error("--duration must be at least 120 s")
    out = args.out or REPO / "bench" / "results" / f"fidelity-{time.strftime('%Y%m%d-%H%M%S')}-seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    code_at_start = _code_state()
    model = demo_model_path()
    template = args.config.read_text()
    offsets, segments = bursty_trace(args.duration, args.seed, args.base_rate)
    np.savetxt(out / "trace.txt", offsets, fmt="%.6f")
    plan = ", ".join(f"{s['rate']:.0f}/s {s['from']:.0f}-{s['to']:.0f} s" for s in segments)
    print(f"trace: {len(offsets):,} requests in {args.duration:g} s (seed {args.seed}): {plan}", file=sys.stderr)

    emulator = None
    wait_for_quiet(args.quiet_wait)
    try:  # the profile, on an emulator of its own
        doc = tomllib.loads(template)
        concurrency = int(doc["models"][MODEL]["faas"].get("concurrency", 10))
        emulator, port = start_emulator(model, concurrency, out / "emulator-profile.log")
        write_config(template, model, port, out / "profile.toml", None)
        print("measuring the profile (sluice profile --config)", file=sys.stderr)
        began = time.monotonic()
        argv = ["profile", "--config", str(out / "profile.toml"), "--output", str(out / "profile.json")]
        measured = subprocess.run([sys.executable, "-m", "gateway", *argv], cwd=REPO, env=ENV, capture_output=True, text=True)
        if measured.returncode != 0:
            raise RuntimeError(f"sluice profile failed: {measured.stderr[-2000:]}")
        profile_s = time.monotonic() - began
    finally:
        stop(emulator)
    profile = out / "profile.json"

    variants = [("fixed", None)] + ([(f"adaptive-{args.slo_ms:g}ms", args.slo_ms)] if args.slo_ms else [])
    results = []
    for name, slo in variants:
        results.append(one_configuration(name, template, model, offsets, profile, out / name, slo, args.duration, args.quiet_wait))

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seed": args.seed, "duration_s": args.duration,
        "base_rate": args.base_rate, "requests": len(offsets), "segments": segments, "profile": json.loads(profile.read_text()),
        "profile_s": profile_s, "targets": TARGETS, "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
        "code_at_start": code_at_start, "code_at_end": _code_state(),
        "results": results, "wall_s": time.monotonic() - started,
    }  # fmt: skip
    (out / "fidelity.json").write_text(json.dumps(report, indent=1, default=_json))
    print_report(report)
    print(f"\nresults in {out} ({report['wall_s']:.0f} s)")
    sys.exit(1 if any(row["met"] is False for result in results for row in result["comparison"]) else 0)


def print_report(report: dict[str, Any]) -> None:
    profile = report["profile"]
    iaas, faas = profile["iaas"], profile["faas"]
    curve = next(iter(faas["memory_mb"].values()))["batch_ms"]
    print(f"\nSeed {report['seed']}, {report['duration_s']:g} s, {report['requests']:,} requests; profile: worker s(8) "
          f"{iaas['batch_ms'].get('8', math.nan):.2f} ms, startup {iaas['startup_s']:.2f} s; function s(8) "
          f"{curve.get('8', math.nan):.2f} ms + {faas['invoke_overhead_ms']:.2f} ms overhead, "
          f"cold start {faas['cold_start_ms']:.0f} ms")  # fmt: skip
    if report["code_at_start"] != report["code_at_end"]:
        print("WARNING: the library code changed during the run (see code_at_start and code_at_end in fidelity.json)")
    for result in report["results"]:
        live, paired, sim_run = result["live"], result["paired"], result["sim_run"]
        lag, means = live["send_lag_ms"], live["mean_ms"]
        print(f"\n### {result['name']}\n")
        print(table(result["comparison"]))
        print(f"\nsend lag (sent minus scheduled): p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, max {lag['max']:.1f} ms; "
              f"latency from the scheduled time: p50 {live['latency_from_schedule_ms']['p50']:.1f} ms, "
              f"p99 {live['latency_from_schedule_ms']['p99']:.1f} ms; gateway CPU {live['gateway_cpu_s']:.1f} s "
              f"({live['gateway_cpu_s'] / max(1, live['requests']) * 1e6:.0f} us a request)")  # fmt: skip
        if paired is not None:
            print(f"mean latency: live client {means['client']:.2f} ms, live gateway (its middleware) {means['gateway']:.2f} ms, "
                  f"sim core {paired['sim_mean_ms']:.2f} ms; mean wait before the batch is sent: live {means['queue_wait']:.2f} ms, "
                  f"sim {paired['sim_mean_wait_ms']:.2f} ms")  # fmt: skip
            print("the same requests, live less sim core (ms): " + "; ".join(
                f"{k.replace('_', ' ')} (n={v['n']:,}) p10 {v['p10']:+.2f}, p50 {v['p50']:+.2f}, p90 {v['p90']:+.2f}"
                for k, v in paired.items() if isinstance(v, dict) and v["n"]))  # fmt: skip
        if sim_run is not None:
            live_changes = [(e["t"] - e.get("startup_s", 0.0), e.get("startup_s")) if e["msg"] == "pool grew" else (e["t"], None)
                            for e in result["events"] if e["msg"] in ("pool grew", "pool shrank")]  # fmt: skip
            sim_changes = [(t - iaas["startup_s"], iaas["startup_s"]) if m == "grew" else (t, None)
                           for t, m in sim_run["pool_events"]]  # fmt: skip
            print(f"pool changes (s; a start as asked+startup, a stop as -t): live {_changes(live_changes)}; "
                  f"sim {_changes(sim_changes)}")  # fmt: skip
            if sim_run["faas_billed_ms_per_batch"] is not None and live["faas_billed_ms_per_batch"] is not None:
                print(f"function billed per batch: live {live['faas_billed_ms_per_batch']:.2f} ms, "
                      f"sim {sim_run['faas_billed_ms_per_batch']:.2f} ms")  # fmt: skip
        starts = live["environment_starts_ms"]
        if len(starts) > 1:  # the first is the gateway's warm-up at startup
            times = ", ".join(f"{ms:.0f}" for ms in starts[1:])
            print(f"function environments started during the trace (the emulator's log): {len(starts) - 1}, in {times} ms "
                  f"(profiled cold start {faas['cold_start_ms']:.0f} ms)")  # fmt: skip
        for warning in result["warnings"]:
            print(f"WARNING: {warning}")
        print()
        print(timeline_table(result["timeline"]))


def _changes(changes: list[tuple[float, float | None]]) -> str:
    return ", ".join(f"{t:.1f}+{startup:.2f}" if startup is not None else f"-{t:.1f}" for t, startup in changes)


def _code_state() -> dict[str, Any]:
    """The commit, and what differs from it in the library's folders (others may be editing them)."""
    folders = ("gateway", "batching", "scheduler", "backends", "sim")
    diff = _git("diff", "HEAD", "--", *folders)
    return {"commit": _git("rev-parse", "--short", "HEAD"), "changed": _git("status", "--short", "--", *folders).splitlines(),
            "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None}  # fmt: skip


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


if __name__ == "__main__":
    main()
