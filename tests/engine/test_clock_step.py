"""A wall-clock step (NTP at boot, a resumed VM) neither stops nor bursts the schedule.

The daemon runs as a child process under libfaketime (Debian's `libfaketime`), which moves
the process's wall clock by the offset written in a file while leaving the monotonic clock
alone: exactly what an NTP step does. Without prober's steady clock a step back of five
minutes stopped every check until the clock had caught up, even after it was put right.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from tests.support.checks import WriteConfig
from tests.support.processes import IN_CI, read_base_url, spawn_prober, wait_for
from tests.support.servers import Target

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def libfaketime() -> Path:
    if not LIBFAKETIME.exists():
        message = "libfaketime not installed (Debian package: libfaketime); .ci/run installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return LIBFAKETIME


async def _metric(base: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def test_wall_clock_steps_neither_stop_nor_burst_runs(
    target: Target, write_config: WriteConfig, tmp_path: Path
) -> None:
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    config = write_config(f"""
interval: 0.5s
timeout: 0.3s
checks:
  - {{name: steady, url: "{target.url}/ok"}}
""")
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=str(libfaketime()),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    process = await spawn_prober(
        "run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0", env=env
    )
    try:
        base = await read_base_url(process)
        runs = "prober_check_runs_total{"
        await wait_for(lambda: _ran_more(base, runs, 0.0, 2), limit=30)
        for step in ("-300", "+0", "+300", "+0"):  # back 5 min, put right, forward, right
            offset.write_text(f"{step}\n")
            before = await _metric(base, runs)
            # Runs go on: at a 0.5 s interval, four more are due within two seconds.
            await wait_for(lambda b=before: _ran_more(base, runs, b, 4), limit=30)  # type: ignore[misc]
        # A forward step of five minutes is not 600 missed runs.
        assert await _metric(base, "prober_scheduler_runs_skipped_total") < 5
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()


async def _ran_more(base: str, name: str, before: float, more: int) -> bool:
    return await _metric(base, name) >= before + more
