"""`sluice serve` with a worker pool and a function for one model: the hybrid scheduler places
each batch and sizes the pool, live. Workers and the emulator are real processes."""

from __future__ import annotations

import asyncio
import textwrap
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import numpy as np
import pytest

from support import GatewayProcess, send, send_until, start_emulator, start_gateway, total

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("aws_credentials")]


async def send_until_logged(gw: GatewayProcess, rate: float, rng: np.random.Generator, msg: str, above: int,
                            at_least_s: float = 0.0, limit_s: float = 60.0) -> int:  # fmt: skip
    """Poisson load at `rate` for `at_least_s`, and on until the gateway has logged `msg`
    more than `above` times (or `limit_s` passed); how many times it has. Every answer must
    be a 200. Waiting for the log, not a fixed time, leaves a busy machine its slowness."""
    stop = asyncio.Event()
    load = asyncio.ensure_future(send_until(gw.url, rate, stop, rng))
    began = time.monotonic()
    try:
        while True:
            seen = sum(e.get("msg") == msg for e in gw.logs())
            waited = time.monotonic() - began
            if (seen > above and waited >= at_least_s) or waited >= limit_s:
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await load
    return seen


async def test_the_pool_follows_a_step_in_load_and_the_function_takes_the_rest(tmp_path, demo_path) -> None:
    """Priced so that a worker pays for itself only above about 70 req/s: at 20 req/s the
    pool shrinks to nothing and the function serves; at 300 req/s a worker is started
    (FaaS serving meanwhile); back at 20 req/s it is stopped again. Every answer is a 200.
    (An invocation here bills about $2.8e-7, mostly the request fee; batches close after
    10 ms, so they hold about 1.2 requests at 20 req/s and 4 at 300: the function costs
    about $0.017 an hour at 20 req/s and $0.076 at 300, either side of the worker's $0.04.)"""
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "16")
    config = tmp_path / "sluice.toml"
    config.write_text(textwrap.dedent(f"""
        [models.demo]
        path = "{demo_path}"
        workers = 1
        batch_size = 8
        timeout_ms = 10
        scheduler = "hybrid"
        max_workers = 2
        instance_price_per_hour = 0.04
        instance_min_billed_s = 1
        plan_interval_s = 1
        scale_in_after_s = 3
        [models.demo.faas]
        function = "demo"
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:{emulator.port}"
        concurrency = 16
    """))
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        rng = np.random.default_rng(4)
        await send(gw.url, 20.0, 10.0, rng)
        shrank_first = sum(e.get("msg") == "pool shrank" for e in gw.logs())
        grew = await send_until_logged(gw, 300.0, rng, "pool grew", 0, at_least_s=8.0, limit_s=30.0)
        # The scheduler weighs the last 30 steps' rates (bursts as they came), so the worker
        # goes once the burst has mostly left that window, then 3 s more: some 20 s.
        shrank = await send_until_logged(gw, 20.0, rng, "pool shrank", shrank_first)
        async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/metrics") as resp:
            text = await resp.text()
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    assert shrank_first >= 1, "at 20 req/s the worker costs more than the function"
    assert grew >= 1, "at 300 req/s a worker pays for itself"
    assert shrank > shrank_first, "back at 20 req/s it should go again"
    assert total(text, "sluice_faas_invocations_total", outcome="ok") > 10
    assert total(text, "sluice_requests_total", code="200") == total(text, "sluice_requests_total")
    # Every batch placed on the function was invoked (besides the start-up measurement's invocations).
    assert 10 < total(text, "sluice_placements_total", target="faas") <= total(text, "sluice_faas_invocations_total", outcome="ok")
    assert total(text, "sluice_placements_total", target="pool") > 0
    # The worker's time is billed: at least its 1 s minimum for each start, at $0.04/h.
    billed = total(text, "sluice_pool_instance_seconds_total")
    assert billed >= grew * 1.0
    assert total(text, "sluice_cost_usd_total", backend="pool") == pytest.approx(billed * 0.04 / 3600, rel=1e-6)


async def test_serve_runs_a_users_scheduler_given_by_module_and_class(tmp_path, demo_path) -> None:
    """`--scheduler tests.custom_scheduler:TwoInstancesFirstReady` (written against the public
    API only): it grows the pool from one worker to two and sends every batch to a worker,
    never to the function the model also has."""
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "4")
    config = tmp_path / "sluice.toml"
    config.write_text(textwrap.dedent(f"""
        [models.demo]
        path = "{demo_path}"
        workers = 1
        batch_size = 8
        timeout_ms = 10
        max_workers = 3
        [models.demo.faas]
        function = "demo"
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:{emulator.port}"
    """))
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config), "--scheduler", "tests.custom_scheduler:TwoInstancesFirstReady")
        await send(gw.url, 50.0, 6.0, np.random.default_rng(5))
        logs = gw.logs()
        async with aiohttp.ClientSession() as session, session.get(f"{gw.url}/metrics") as resp:
            text = await resp.text()
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    ready = next(e for e in logs if e.get("msg") == "scheduler ready")
    assert ready["scheduler"] == "two-first-ready"
    assert sum(e.get("msg") == "pool grew" for e in logs) == 1, "the plan is two workers, and one was running"
    assert total(text, "sluice_pool_desired_instances") == 2
    assert total(text, "sluice_placements_total", target="pool") > 0
    assert total(text, "sluice_placements_total", target="faas") == 0
    assert total(text, "sluice_requests_total", code="200") == total(text, "sluice_requests_total") == 300


async def test_a_prior_trace_with_date_times_is_read_from_the_time_of_day_the_gateway_starts(tmp_path, demo_path) -> None:
    """Two models, each given yesterday's log as `prior_trace`: one holds the ten minutes around
    this time of day and is read from now (about its 120th second), the other holds hours two
    hours off and is set aside with a warning. The wall clock at startup decides, not the
    record's first arrival."""
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "4")
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    records = {"around": yesterday - timedelta(minutes=2), "away": yesterday + timedelta(hours=2)}
    models = ""
    for name, first in records.items():
        stamps = (first + timedelta(seconds=t) for t in np.arange(0.0, 600.0, 0.1))  # 10 requests/s for 10 minutes
        (tmp_path / f"{name}.csv").write_text("".join(f"{s:%Y-%m-%d %H:%M:%S.%f}\n" for s in stamps))
        models += textwrap.dedent(f"""
            [models.{name}]
            path = "{demo_path}"
            workers = 1
            scheduler = "hybrid"
            prior_trace = "{tmp_path / f"{name}.csv"}"
            [models.{name}.faas]
            function = "demo"
            region = "us-east-1"
            endpoint_url = "http://127.0.0.1:{emulator.port}"
        """)
    config = tmp_path / "sluice.toml"
    config.write_text(models)
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        give_up = time.monotonic() + 60.0  # the models start after the gateway serves: wait for both
        while sum(e.get("logger") == "sluice.prior" for e in gw.logs()) < 2 and time.monotonic() < give_up:
            await asyncio.sleep(0.2)
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    logs = gw.logs()
    read = [e for e in logs if e.get("msg") == "prior trace read"]
    assert [e["path"] for e in read] == [str(tmp_path / "around.csv")]
    assert 110.0 <= read[0]["from_second"] <= 180.0  # started a few seconds after the record's 120th
    away = [e for e in logs if e.get("level") == "warning" and e.get("path") == str(tmp_path / "away.csv")]
    assert len(away) == 1 and away[0]["msg"].endswith("planning without it")


async def test_the_gateway_logs_its_traffic_and_plans_from_yesterdays_log(tmp_path, demo_path) -> None:
    """A model with `traffic_log` and yesterday's day in it: its planner reads that day from
    now's time of day (about its 120th second), and the requests it serves are logged into
    today's file, second by second, every one of them by the time the gateway has stopped."""
    from sim.counts import day_file, read_counts, row

    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "4")
    logs = tmp_path / "traffic"
    (logs / "demo").mkdir(parents=True)
    yesterday = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1, minutes=2)
    rows = "".join(row(yesterday + timedelta(seconds=t), 10) + "\n" for t in range(600))
    day_file(logs / "demo", yesterday.date()).write_text("time,count\n" + rows)  # 10 requests/s for 10 minutes
    config = tmp_path / "sluice.toml"
    config.write_text(textwrap.dedent(f"""
        [models.demo]
        path = "{demo_path}"
        workers = 1
        scheduler = "hybrid"
        traffic_log = "{logs}"
        [models.demo.faas]
        function = "demo"
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:{emulator.port}"
    """))
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        began = datetime.now(timezone.utc)
        await send(gw.url, 20.0, 3.0, np.random.default_rng(3))
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    read = [e for e in gw.logs() if e.get("msg") == "prior trace read"]
    assert [e["path"] for e in read] == [str(logs / "demo")]
    assert 110.0 <= read[0]["from_second"] <= 180.0
    today = [day for day in sorted((logs / "demo").glob("*.csv")) if day.stem >= f"{began:%Y-%m-%d}"]
    assert today and sum(read_counts(day)[0].sum() for day in today) == 60  # every request sent, each answered 200
