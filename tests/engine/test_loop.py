"""The event loop's tuning: which loop, the collector's thresholds, and loop lag measured."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import pytest

from prober.engine.loop import LoopLagMonitor, settle_heap, use_event_loop
from tests.support.processes import wait_for


def test_settle_heap_hides_long_lived_objects_from_the_collector() -> None:
    settle_heap()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_event_loop_choice() -> None:
    assert use_event_loop("off") == "asyncio"
    with pytest.raises(ValueError, match="uvloop mode"):
        use_event_loop("fast")


def test_lag_window_keeps_the_last_hundred_and_p99_reads_them() -> None:
    monitor = LoopLagMonitor()
    assert monitor.p99() == 0.0
    monitor.window.extend(i / 1000 for i in range(200))
    assert len(monitor.window) == 100
    assert monitor.p99() == 0.199


async def test_a_blocked_loop_is_over_its_lag_budget() -> None:
    monitor = LoopLagMonitor()
    observed: list[float] = []
    watching = asyncio.create_task(monitor.watch(0.1, observed.append))
    try:
        await wait_for(lambda: len(observed) >= 1)
        before = time.perf_counter()
        time.sleep(0.5)  # noqa: ASYNC251 (on purpose: the next wake-up is >= 0.4 s late)
        await wait_for(lambda: monitor.over_budget_at >= before)
        assert max(observed) >= 0.3
        assert list(monitor.window) == observed
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
