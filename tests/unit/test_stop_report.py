"""A stop that overruns says, in the log, which tasks it still waits on and where."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.loop import BackgroundLoop
from gateway.server import _report_slow_stop, _where

from support import until


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

    def reports() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "stop is taking long"]

    await until(lambda: len(reports()) >= 2, 5.0, "a second report")  # every 0.05 s while the stop lasts
    report.cancel()
    stuck.cancel()
    warnings = reports()
    assert len(warnings) >= 2
    assert any(w == where for w in warnings[0].waiting_on)
    assert not any("_report_slow_stop" in w for w in warnings[0].waiting_on)


async def test_a_loop_that_swallows_its_cancellation_is_cancelled_again_until_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    class Stubborn(BackgroundLoop):
        swallowed = 0

        async def _run(self) -> None:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if self.swallowed == 1:
                        raise
                    self.swallowed += 1  # as a library catching it would

    loop = Stubborn()
    loop.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(loop.stop(), 5.0)
    assert loop.swallowed == 1
    assert any("ignored its cancellation" in r.getMessage() for r in caplog.records)
