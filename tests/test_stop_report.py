"""A stop that overruns says, in the log, which tasks it still waits on and where."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.server import _report_slow_stop, _where


async def _stuck_inner(never: asyncio.Event) -> None:
    await never.wait()


async def _stuck_outer(never: asyncio.Event) -> None:
    await _stuck_inner(never)


async def test_a_slow_stop_names_the_tasks_it_waits_on_and_their_lines(caplog: pytest.LogCaptureFixture) -> None:
    never = asyncio.Event()
    stuck = asyncio.create_task(_stuck_outer(never))
    await asyncio.sleep(0)
    where = _where(stuck)
    assert where.index("_stuck_outer (test_stop_report.py:") < where.index("_stuck_inner (test_stop_report.py:")
    assert "wait (locks.py:" in where  # down to the library line it waits at
    caplog.set_level(logging.WARNING, logger="sluice.gateway")
    report = asyncio.create_task(_report_slow_stop(0.05))
    await asyncio.sleep(0.12)
    report.cancel()
    stuck.cancel()
    warnings = [r for r in caplog.records if r.getMessage() == "stop is taking long"]
    assert len(warnings) == 2
    assert any(w == where for w in warnings[0].waiting_on)
    assert not any("_report_slow_stop" in w for w in warnings[0].waiting_on)
