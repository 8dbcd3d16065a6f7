"""Open-loop HTTP/1.1 load generator for loopback benchmarks.

Requests arrive as a Poisson process and are never held back by earlier responses,
so server-side queueing shows up as latency instead of silently lowering the offered
rate. Latency counts from each request's *scheduled* send time. The hot path uses raw
asyncio streams and pre-built request bytes because the generator shares CPU cores
with the server under test. Per-request status: HTTP code, 0 = timeout/unanswered,
-1 = connection error (refused, reset, malformed response).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing as mp
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadclient import CONN_ERROR, TIMEOUT, ConnPool, build_request, read_response  # noqa: E402

try:
    import uvloop
    _new_loop = uvloop.new_event_loop
except ImportError:  # the stdlib loop works too, just costs more CPU per request
    _new_loop = asyncio.new_event_loop

def poisson_offsets(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (s from start) of a Poisson process of the given rate, cut at duration."""
    chunks, total = [], 0.0
    while total < duration_s:
        chunks.append(total + np.cumsum(rng.exponential(1.0 / rate, int(rate * duration_s) + 64)))
        total = float(chunks[-1][-1])
    offsets = np.concatenate(chunks)
    return offsets[offsets < duration_s]


class Driver:
    """One process's schedule: start each request when due, record status and latency."""

    SWEEP_S = 0.01  # timeout resolution; one shared sweeper is cheaper than a timer each

    def __init__(self, pool: ConnPool, request: bytes, offsets: np.ndarray, duration_s: float,
                 timeout_s: float, drain_s: float) -> None:
        self.pool, self.request, self.timeout_s = pool, request, timeout_s
        self.n, self.sent, self.inflight = len(offsets), 0, 0
        self.codes = np.full(self.n, TIMEOUT, dtype=np.int16)  # stays TIMEOUT unless answered
        self.latency = np.full(self.n, np.nan)
        self.lag = np.full(self.n, np.nan)
        # (deadline, task) in send order, hence in deadline order; also keeps tasks alive.
        self.deadlines: deque[tuple[float, asyncio.Task]] = deque()
        self.all_done = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        self.due = (t0 + offsets).tolist()  # plain floats are cheaper than numpy scalars
        self.hard_end = t0 + duration_s + drain_s  # no request outlives this
        self.first_wall = self.last_wall = time.time()

    def dispatch(self) -> None:
        """Start every due request; runs on timer wake-ups and after each completion."""
        now, start = time.perf_counter(), self.sent
        if now >= self.hard_end:
            return  # hopelessly behind: the rest stay recorded as timeouts
        while self.sent < self.n and self.due[self.sent] <= now:
            sched = self.due[self.sent]
            task = self.loop.create_task(self.one(self.sent, sched))
            self.deadlines.append((min(sched + self.timeout_s, self.hard_end), task))
            self.inflight += 1
            self.sent += 1
        if self.sent != start:
            self.last_wall = time.time()

    async def sweep(self) -> None:
        """Cancel requests past their deadline; they stay recorded as timeouts."""
        deadlines = self.deadlines
        while True:
            await asyncio.sleep(self.SWEEP_S)
            now = time.perf_counter()
            while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
                task = deadlines.popleft()[1]
                if not task.done():
                    task.cancel()

    async def one(self, i: int, sched: float) -> None:
        clock, pool = time.perf_counter, self.pool
        self.lag[i] = clock() - sched
        try:
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
            self.codes[i] = status
        except asyncio.CancelledError:
            pass  # cancelled by the sweeper: already recorded as TIMEOUT
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            self.codes[i] = CONN_ERROR
        finally:
            self.inflight -= 1
            self.dispatch()  # completions wake the loop more finely than its ~1 ms timers
            if not self.inflight:
                self.all_done.set()

    async def run(self) -> dict[str, Any]:
        sweeper = self.loop.create_task(self.sweep())
        while self.sent < self.n and time.perf_counter() < self.hard_end:
            self.dispatch()
            if self.sent < self.n:
                # Loop timers have ~1 ms resolution and uvloop turns shorter sleeps into a
                # busy spin; the lateness this costs is counted in latency and send_lag_ms.
                await asyncio.sleep(max(0.001, self.due[self.sent] - time.perf_counter()))
        if self.inflight:
            self.all_done.clear()
            try:  # the sweeper ends every request by hard_end; this is only a backstop
                await asyncio.wait_for(self.all_done.wait(),
                                       self.hard_end - time.perf_counter() + 2.0)
            except TimeoutError:
                for _, task in self.deadlines:
                    task.cancel()
        sweeper.cancel()
        self.pool.close_all()
        return {"codes": self.codes, "latency": self.latency, "lag": self.lag, "sent": self.sent,
                "first_wall": self.first_wall, "last_wall": self.last_wall,
                "peak_conns": self.pool.peak}


async def _drive(cfg: dict[str, Any], offsets: np.ndarray) -> dict[str, Any]:
    addr = await asyncio.get_running_loop().getaddrinfo(cfg["host"], cfg["port"],
                                                        type=socket.SOCK_STREAM)
    pool = ConnPool(addr[0][4][0], cfg["port"], cfg["max_conns"])  # resolve "localhost" once
    return await Driver(pool, cfg["request"], offsets, cfg["duration_s"], cfg["timeout_s"],
                        cfg["drain_s"]).run()


def _worker(cfg: dict[str, Any], seed: np.random.SeedSequence, barrier: Any = None,
            out: Any = None) -> dict[str, Any]:
    """Run one generator, in a child process (barrier/out given) or in the caller's."""
    offsets = poisson_offsets(cfg["rate"], cfg["duration_s"], np.random.default_rng(seed))
    if barrier is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked child may inherit a handler
        barrier.wait(timeout=120)  # start processes together so their send spans line up
    gc_was_enabled, cpu0 = gc.isenabled(), time.process_time()
    gc.disable()  # allocation-triggered collections are pure overhead in a bounded run
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            result = runner.run(_drive(cfg, offsets))
    finally:
        if gc_was_enabled:
            gc.enable()
    result["cpu_s"] = time.process_time() - cpu0
    if out is not None:
        out.put(result)
    return result


def _stats(values: np.ndarray, keys: Sequence[str]) -> dict[str, float | None]:
    """Millisecond summary of a seconds array, ignoring NaN (unanswered) entries."""
    ms = values[~np.isnan(values)] * 1000.0
    if not len(ms):
        return {k: None for k in keys}
    calc = {"max": np.max, "mean": np.mean, "p50": lambda v: np.percentile(v, 50),
            "p90": lambda v: np.percentile(v, 90), "p99": lambda v: np.percentile(v, 99)}
    return {k: round(float(calc[k](ms)), 3) for k in keys}


def summarize(parts: list[dict[str, Any]], rate: float, duration_s: float,
              procs: int) -> dict[str, Any]:
    """Merge per-process arrays into the report dict."""
    codes = np.concatenate([p["codes"] for p in parts])
    ok_mask = (codes >= 200) & (codes < 300)
    ok = int(ok_mask.sum())
    values, counts = np.unique(codes[(codes > 0) & ~ok_mask], return_counts=True)
    errors = {str(int(v)): int(c) for v, c in zip(values, counts)}
    if conn_errors := int((codes == CONN_ERROR).sum()):
        errors["conn_error"] = conn_errors
    span = max(p["last_wall"] for p in parts) - min(p["first_wall"] for p in parts)
    sent = sum(p["sent"] for p in parts)
    return {
        "rate_target": rate, "duration_s": duration_s, "procs": procs, "sent": sent,
        "completed": int((codes > 0).sum()), "ok": ok, "errors": errors,
        "timeouts": int((codes == TIMEOUT).sum()),
        "achieved_rps": round(ok / (span if span > 0 else duration_s), 1),
        "latency_ms": _stats(np.concatenate([p["latency"] for p in parts])[ok_mask],
                             ("p50", "p90", "p99", "max", "mean")),
        # How long a refusal (429 or 503, with Retry-After) took to arrive.
        "refused_latency_ms": _stats(np.concatenate([p["latency"] for p in parts])[(codes == 429) | (codes == 503)],
                                     ("p50", "p99", "max")),
        "send_lag_ms": _stats(np.concatenate([p["lag"] for p in parts]), ("p50", "p99", "max")),
        "peak_connections": sum(p["peak_conns"] for p in parts),
        "client_cpu_us_per_req": round(sum(p["cpu_s"] for p in parts) * 1e6 / max(sent, 1), 1),
    }


def run_load(url: str, rate: float, duration_s: float, body: bytes = b"",
             headers: Mapping[str, str] | Sequence[str] | None = None, procs: int = 1,
             seed: int = 0, method: str = "POST", timeout_s: float = 10.0, drain_s: float = 5.0,
             max_connections: int = 512, content_type: str = "application/json") -> dict[str, Any]:
    """Run one open-loop load test and return the summary dict. Blocks until done.

    procs=1 runs in this process, unless this thread already runs an event loop, in
    which case (as for procs > 1) child processes do the work. Children are forked when
    that is safe, else spawned; spawn re-imports the caller's main module, so scripts
    need the usual `if __name__ == "__main__"` guard.
    """
    if rate <= 0 or duration_s <= 0 or procs < 1:
        raise ValueError("need rate > 0, duration_s > 0 and procs >= 1")
    host, port, request = build_request(url, method, body, headers, content_type)
    cfg = {"host": host, "port": port, "request": request, "rate": rate / procs,
           "duration_s": duration_s, "timeout_s": timeout_s, "drain_s": drain_s,
           "max_conns": max(1, math.ceil(max_connections / procs))}
    seeds = np.random.SeedSequence(seed).spawn(procs)  # independent stream per process
    try:
        asyncio.get_running_loop()  # a running loop here rules out in-process and fork
        in_loop = True
    except RuntimeError:
        in_loop = False
    if procs == 1 and not in_loop:
        return summarize([_worker(cfg, seeds[0])], rate, duration_s, procs)
    # fork is cheaper and leaves no helper process behind, but is only safe without
    # other threads or a running loop; spawn is always safe.
    safe_fork = not in_loop and threading.active_count() == 1 and sys.platform == "linux"
    ctx = mp.get_context("fork" if safe_fork else "spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(procs)
    workers = [ctx.Process(target=_worker, args=(cfg, s, barrier, out), daemon=True)
               for s in seeds]
    for w in workers:
        w.start()
    parts: list[dict[str, Any]] = []
    deadline = time.monotonic() + duration_s + drain_s + 120
    try:
        while len(parts) < procs:
            try:
                parts.append(out.get(timeout=1.0))
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError("a load generator process died") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("load generator processes did not finish") from None
    except BaseException:  # includes Ctrl-C: do not leave children sending load
        for w in workers:
            w.terminate()
        raise
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
    return summarize(parts, rate, duration_s, procs)


def _kv(d: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v}" for k, v in d.items())


def format_summary(r: dict[str, Any]) -> str:
    return (f"target {r['rate_target']:g} req/s for {r['duration_s']:g} s, {r['procs']} proc(s)\n"
            f"sent {r['sent']}  completed {r['completed']}  ok {r['ok']}  "
            f"timeouts {r['timeouts']}  errors {r['errors'] or 'none'}\n"
            f"achieved {r['achieved_rps']:.1f} ok req/s  peak connections "
            f"{r['peak_connections']}  client CPU {r['client_cpu_us_per_req']} us/req\n"
            f"latency ms (ok, from scheduled send): {_kv(r['latency_ms'])}\n"
            f"client send lag ms: {_kv(r['send_lag_ms'])}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="target, e.g. http://127.0.0.1:8000/infer (loopback only)")
    p.add_argument("--rate", type=float, required=True, help="total offered load, req/s")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of sending (default 10)")
    p.add_argument("--procs", type=int, default=1, help="processes splitting the rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="POST", choices=["POST", "GET", "PUT"])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--body", help="request body, a JSON string")
    src.add_argument("--body-file", help="file whose bytes are the request body")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--content-type", default="application/json")
    p.add_argument("--max-connections", type=int, default=512, help="total, over all procs")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per request, from schedule")
    p.add_argument("--drain-s", type=float, default=5.0,
                   help="grace after --duration ends (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        body = b""
        if args.body is not None:
            try:  # fail now rather than with a flood of 400s under load
                json.loads(args.body)
            except ValueError as exc:
                raise ValueError(f"--body is not valid JSON: {exc}") from None
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
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
