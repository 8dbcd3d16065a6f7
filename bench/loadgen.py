"""Open-loop HTTP/1.1 load generator for loopback benchmarks.

Requests arrive as a Poisson process and are never held back by earlier
responses, so server-side queueing shows up in latency instead of silently
lowering the offered rate. Latency is measured from each request's *scheduled*
send time. The hot path uses raw asyncio streams and pre-built request bytes
because the generator shares CPU cores with the server under test.

Status codes recorded per request: HTTP status, 0 = timeout or never answered,
-1 = connection error (refused/reset/malformed response).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing as mp
import queue
import socket
import sys
import time
from collections import deque
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

try:
    import uvloop
    _new_loop = uvloop.new_event_loop
except ImportError:  # plain asyncio still works, just slower
    _new_loop = asyncio.new_event_loop

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TIMEOUT, CONN_ERROR = 0, -1


def build_request(url: str, method: str = "POST", body: bytes = b"",
                  headers: Mapping[str, str] | Sequence[str] | None = None,
                  content_type: str = "application/json") -> tuple[str, int, bytes]:
    """Validate the target and return (host, port, request bytes), built once per run."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    host = parts.hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"refusing non-loopback host {host!r}; allowed: {sorted(LOOPBACK_HOSTS)}")
    port = parts.port or 80
    method = method.upper()
    if method == "GET" and body:
        raise ValueError("GET requests cannot carry a body")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_hdr = f"[{host}]" if ":" in host else host
    hdrs: dict[str, tuple[str, str]] = {"host": ("Host", f"{host_hdr}:{port}")}
    if method != "GET":
        hdrs["content-type"] = ("Content-Type", content_type)
    hdrs["connection"] = ("Connection", "keep-alive")
    items = headers.items() if isinstance(headers, Mapping) else (
        tuple(part.strip() for part in h.split(":", 1)) for h in (headers or ()))
    for item in items:
        if len(item) != 2 or not item[0]:
            raise ValueError(f"bad header {item!r}; expected 'Name: value'")
        name, value = item
        if any(c in name + value for c in "\r\n"):
            raise ValueError("header names/values must not contain CR or LF")
        if name.lower() == "content-length":
            raise ValueError("Content-Length is computed from the body")
        hdrs[name.lower()] = (name, value)
    if method != "GET":
        hdrs["content-length"] = ("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in hdrs.values())
    return host, port, head.encode("latin-1") + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, connection still reusable)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    version, status_s = lines[0].split(b" ", 2)[:2]
    status = int(status_s)
    length: int | None = None
    keep = version == b"HTTP/1.1"
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            value = value.lower()
            keep = b"close" not in value and (keep or b"keep-alive" in value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            await reader.readexactly(size + 2)
    elif length is not None:
        if length:
            await reader.readexactly(length)
    elif status not in (204, 304) and status >= 200:
        await reader.read()  # body delimited by connection close
        keep = False
    return status, keep


class ConnPool:
    """Keep-alive connections: reuse idle ones, open new ones up to a cap, queue beyond it."""

    def __init__(self, host: str, port: int, cap: int) -> None:
        self.host, self.port, self.cap = host, port, cap
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.waiters: deque[asyncio.Future] = deque()
        self.open = 0
        self.peak = 0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.open -= 1
            self._hand_over(None)
            raise

    async def acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        if self.open < self.cap:
            return await self._connect()
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            conn = await fut
        except BaseException:
            if fut.done() and not fut.cancelled():  # handed over just as we were cancelled
                if fut.result() is None:
                    self._hand_over(None)
                else:
                    self.release(fut.result())
            raise
        return conn if conn is not None else await self._connect()

    def _hand_over(self, conn: Any) -> bool:
        """Give a connection (or, with None, a free slot) to the oldest live waiter."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    def release(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        if not self._hand_over(conn):
            self.idle.append(conn)

    def discard(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        conn[1].transport.abort()
        self.open -= 1
        self._hand_over(None)

    def close_all(self) -> None:
        for _, writer in self.idle:
            writer.transport.abort()
        self.idle.clear()


def poisson_offsets(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival offsets (seconds from start) of a Poisson process truncated to the duration."""
    chunks, total = [], 0.0
    while total < duration_s:
        gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 0.2) + 64)
        cum = total + np.cumsum(gaps)
        chunks.append(cum)
        total = float(cum[-1])
    offsets = np.concatenate(chunks)
    return offsets[offsets < duration_s]


class _Driver:
    """One process's schedule: fire each request at its due time, record status and latency."""

    def __init__(self, pool: ConnPool, request: bytes, offsets: np.ndarray, duration_s: float,
                 timeout_s: float, drain_s: float) -> None:
        self.pool, self.request, self.timeout_s = pool, request, timeout_s
        self.n = len(offsets)
        self.codes = np.zeros(self.n, dtype=np.int16)  # stays TIMEOUT unless answered
        self.latency = np.full(self.n, np.nan)
        self.lag = np.full(self.n, np.nan)
        self.pending: set[asyncio.Task] = set()
        self.all_done = asyncio.Event()
        self.sent = 0
        t0 = time.perf_counter()
        self.due = (t0 + offsets).tolist()  # absolute perf_counter times as plain floats
        self.hard_end = t0 + duration_s + drain_s  # nothing outlives this
        self.first_wall = self.last_wall = time.time()

    def dispatch(self) -> None:
        """Start every request that is due; called on timer wake-ups and on each completion."""
        now = time.perf_counter()
        if now >= self.hard_end:
            return  # hopelessly behind: the rest stay recorded as timeouts
        due, start = self.due, self.sent
        while self.sent < self.n and due[self.sent] <= now:
            task = asyncio.get_running_loop().create_task(self.one(self.sent, due[self.sent]))
            self.pending.add(task)
            task.add_done_callback(self.finished)
            self.sent += 1
        if self.sent != start:
            self.last_wall = time.time()

    def finished(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        self.dispatch()  # completions wake the loop more finely than its ~1 ms timers
        if not self.pending:
            self.all_done.set()

    async def one(self, i: int, sched: float) -> None:
        clock, pool = time.perf_counter, self.pool
        self.lag[i] = clock() - sched
        status = TIMEOUT
        try:
            async with asyncio.timeout(min(sched + self.timeout_s, self.hard_end) - clock()):
                reader, writer = conn = await pool.acquire()
                try:
                    writer.write(self.request)
                    if writer.transport.get_write_buffer_size() > 65536:
                        await writer.drain()
                    status, keep = await read_response(reader)
                except BaseException:
                    pool.discard(conn)
                    raise
                if keep:
                    pool.release(conn)
                else:
                    pool.discard(conn)
            self.latency[i] = clock() - sched
        except TimeoutError:
            status = TIMEOUT
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            status = CONN_ERROR
        self.codes[i] = status

    async def run(self) -> dict[str, Any]:
        while self.sent < self.n and time.perf_counter() < self.hard_end:
            self.dispatch()
            if self.sent < self.n:
                # Timers have ~1 ms resolution (uvloop rounds shorter sleeps to zero, which
                # would spin). Lateness is not hidden: it counts in latency and send_lag_ms.
                await asyncio.sleep(max(0.001, self.due[self.sent] - time.perf_counter()))
        if self.pending:
            self.all_done.clear()
            try:  # each request has its own deadline <= hard_end; this is only a backstop
                await asyncio.wait_for(self.all_done.wait(),
                                       max(0.0, self.hard_end - time.perf_counter()) + 2.0)
            except TimeoutError:
                for task in list(self.pending):
                    task.cancel()
        self.pool.close_all()
        return {"codes": self.codes, "latency": self.latency, "lag": self.lag,
                "sent": self.sent, "first_wall": self.first_wall, "last_wall": self.last_wall,
                "peak_conns": self.pool.peak}


async def _drive(cfg: dict[str, Any], offsets: np.ndarray) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    resolved = await loop.getaddrinfo(cfg["host"], cfg["port"], type=socket.SOCK_STREAM)
    pool = ConnPool(resolved[0][4][0], cfg["port"], cfg["max_conns"])
    driver = _Driver(pool, cfg["request"], offsets, cfg["duration_s"], cfg["timeout_s"],
                     cfg["drain_s"])
    return await driver.run()


def _worker(cfg: dict[str, Any], seed_seq: np.random.SeedSequence, barrier: Any,
            out: Any = None) -> dict[str, Any]:
    """Run one generator process (or in-process when out is None)."""
    offsets = poisson_offsets(cfg["rate"], cfg["duration_s"], np.random.default_rng(seed_seq))
    if barrier is not None:
        barrier.wait(timeout=120)  # start all processes together so their spans line up
    gc_was_enabled = gc.isenabled()
    gc.disable()  # allocation-driven collections are pure overhead in a bounded run
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            result = runner.run(_drive(cfg, offsets))
    finally:
        if gc_was_enabled:
            gc.enable()
    if out is not None:
        out.put(result)
    return result


def summarize(parts: list[dict[str, Any]], rate: float, duration_s: float,
              procs: int) -> dict[str, Any]:
    """Merge per-process arrays into the report dict."""
    codes = np.concatenate([p["codes"] for p in parts])
    latency = np.concatenate([p["latency"] for p in parts])
    lag = np.concatenate([p["lag"] for p in parts])
    ok_mask = (codes >= 200) & (codes < 300)
    ok = int(ok_mask.sum())
    errors: dict[str, int] = {}
    for code, count in zip(*np.unique(codes[(codes > 0) & ~ok_mask], return_counts=True)):
        errors[str(int(code))] = int(count)
    conn_errors = int((codes == CONN_ERROR).sum())
    if conn_errors:
        errors["conn_error"] = conn_errors
    span = max(p["last_wall"] for p in parts) - min(p["first_wall"] for p in parts)
    span = span if span > 0 else duration_s

    def stats(values: np.ndarray, keys: Sequence[str]) -> dict[str, float | None]:
        values = values[~np.isnan(values)] * 1000.0
        if not len(values):
            return {k: None for k in keys}
        table = {"p50": 50, "p90": 90, "p99": 99}
        return {k: round(float(values.max() if k == "max" else values.mean() if k == "mean"
                               else np.percentile(values, table[k])), 3) for k in keys}

    return {
        "rate_target": rate, "duration_s": duration_s, "procs": procs,
        "sent": int(sum(p["sent"] for p in parts)),
        "completed": int((codes > 0).sum()), "ok": ok, "errors": errors,
        "timeouts": int((codes == TIMEOUT).sum()),
        "achieved_rps": round(ok / span, 1),
        "latency_ms": stats(latency[ok_mask], ("p50", "p90", "p99", "max", "mean")),
        "send_lag_ms": stats(lag, ("p50", "p99", "max")),
        "peak_connections": int(sum(p["peak_conns"] for p in parts)),
    }


def run_load(url: str, rate: float, duration_s: float, body: bytes = b"",
             headers: Mapping[str, str] | Sequence[str] | None = None, procs: int = 1,
             seed: int = 0, method: str = "POST", timeout_s: float = 10.0, drain_s: float = 5.0,
             max_connections: int = 512, content_type: str = "application/json") -> dict[str, Any]:
    """Run an open-loop load test and return the summary dict (blocking).

    procs=1 runs in this process unless an event loop is already running here,
    in which case it uses a child process like procs>1 does.
    """
    if rate <= 0 or duration_s <= 0 or procs < 1:
        raise ValueError("rate and duration_s must be > 0 and procs >= 1")
    host, port, request = build_request(url, method, body, headers, content_type)
    cfg = {"host": host, "port": port, "request": request, "rate": rate / procs,
           "duration_s": duration_s, "timeout_s": timeout_s, "drain_s": drain_s,
           "max_conns": max(1, math.ceil(max_connections / procs))}
    seeds = np.random.SeedSequence(seed).spawn(procs)
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    if procs == 1 and not in_loop:
        return summarize([_worker(cfg, seeds[0], None)], rate, duration_s, procs)
    ctx = mp.get_context("spawn")  # safe even if the caller has threads or a running loop
    out, barrier = ctx.Queue(), ctx.Barrier(procs)
    workers = [ctx.Process(target=_worker, args=(cfg, s, barrier, out), daemon=True) for s in seeds]
    for w in workers:
        w.start()
    parts: list[dict[str, Any]] = []
    deadline = time.monotonic() + duration_s + drain_s + 180
    try:
        while len(parts) < procs:
            try:
                parts.append(out.get(timeout=1.0))
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError("a load generator process died")
                if time.monotonic() > deadline:
                    raise RuntimeError("load generator processes did not finish in time")
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    return summarize(parts, rate, duration_s, procs)


def format_summary(r: dict[str, Any]) -> str:
    lat, lag = r["latency_ms"], r["send_lag_ms"]
    return "\n".join([
        f"target {r['rate_target']:g} req/s for {r['duration_s']:g} s with {r['procs']} proc(s)",
        f"sent {r['sent']}  completed {r['completed']}  ok {r['ok']}  "
        f"timeouts {r['timeouts']}  errors {r['errors'] or 'none'}",
        f"achieved {r['achieved_rps']:.1f} ok req/s  (peak connections {r['peak_connections']})",
        "latency ms (ok, from scheduled send): " + "  ".join(f"{k} {v}" for k, v in lat.items()),
        "client send lag ms: " + "  ".join(f"{k} {v}" for k, v in lag.items()),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="target, e.g. http://127.0.0.1:8000/infer (loopback only)")
    p.add_argument("--rate", type=float, required=True, help="offered load, requests/s (total)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending (default 10)")
    p.add_argument("--procs", type=int, default=1, help="generator processes sharing the rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="POST", choices=["POST", "GET", "PUT"])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--body", help="request body as a JSON string")
    src.add_argument("--body-file", help="file whose bytes are sent as the body")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--content-type", default="application/json")
    p.add_argument("--max-connections", type=int, default=512, help="total connection cap")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout")
    p.add_argument("--drain-s", type=float, default=5.0, help="grace after sending ends")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    body = b""
    try:
        if args.body is not None:
            json.loads(args.body)  # fail early on a malformed body rather than 400s at load
            body = args.body.encode()
        elif args.body_file:
            with open(args.body_file, "rb") as f:
                body = f.read()
        result = run_load(args.url, args.rate, args.duration, body, args.header, args.procs,
                          args.seed, args.method, args.timeout_s, args.drain_s,
                          args.max_connections, args.content_type)
    except (ValueError, OSError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
