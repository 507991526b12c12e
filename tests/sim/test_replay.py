"""Outage replays through the daemon: the verdict follows the scripted night."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prober.cli.demo import platform_env
from prober.engine.daemon import Daemon
from tests.support.checks import fast_shipped_config
from tests.support.processes import spawn_prober

SIM_BANNER = "prober sim: serving "


@contextlib.asynccontextmanager
async def replaying(scenario: str, speed: float) -> AsyncIterator[dict[str, str]]:
    """`prober sim` replaying `scenario`, as a process of its own: its event loop is not the
    daemon's, so a loaded machine slows each apart instead of timing out every check (and
    the canary) at once. Yields the variables that point the shipped checks at it."""
    process = await spawn_prober(
        "sim", "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
        "--latency-ms", "1", "--latency-jitter-ms", "0", "--seed", "3",
        "--scenario", scenario, "--speed", f"{speed:g}",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert banner.startswith(SIM_BANNER), banner
        yield platform_env(banner.removeprefix(SIM_BANNER).split()[0], banner.strip())
    finally:
        if process.returncode is None:
            process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=10)
        if process.returncode is None:
            process.kill()
            await process.wait()


async def verdicts_during(
    scenario: str,
    speed: float,
    seconds: float,
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    starting: asyncio.Lock,
) -> list[str]:
    """Replay `scenario` against a daemon on short intervals; the verdicts seen, in order.

    The environment is the process's: daemons started at once (their configs load in
    threads) take `starting` in turn, so none reads another's platform.
    """
    # 1 s checks, 0.8 s timeouts: at speed 30 a phase lasts 6 s, room for a failure, its
    # confirming run and a canary's vouch; and a loaded machine's stalls stay under the
    # timeout. The lag budget judges the platform, not this test's loop on a busy machine.
    config = fast_shipped_config(directory, interval="1s", timeout="0.8s",
                                 extra="loop_lag_budget: 2s\n")  # fmt: skip
    async with replaying(scenario, speed) as env:
        async with starting:
            with monkeypatch.context() as patch:
                for name, value in env.items():
                    patch.setenv(name, value)
                daemon = Daemon(config)
                await daemon.start()
        seen: list[str] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            while loop.time() < deadline:
                state = daemon.status.verdict.state
                if not seen or seen[-1] != state:
                    seen.append(state)
                await asyncio.sleep(0.25)
        finally:
            await daemon.stop()
    return seen


def in_order(seen: list[str], wanted: list[str]) -> bool:
    position = 0
    for state in seen:
        if position < len(wanted) and state == wanted[position]:
            position += 1
    return position == len(wanted)


async def test_dec_2022_replay_goes_component_then_platform_wide_then_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # dec-2022 lasts 1800 s at speed 1: 60 s at speed 30; notifications-down (demo's shard,
    # so the stream and gRPC checks fail: one component down) from 300 s to 480 s is 10 s to
    # 16 s, before login and timeline join. single-endpoint breaks notifications from 60 s
    # to 360 s: 2 s to 12 s at speed 30.
    starting = asyncio.Lock()
    dec, single = await asyncio.gather(
        verdicts_during("dec-2022", 30, 62, tmp_path / "a", monkeypatch, starting),
        verdicts_during("single-endpoint", 30, 14, tmp_path / "b", monkeypatch, starting),
    )
    assert in_order(dec, ["ok", "component_down", "platform_wide", "ok"]), dec
    assert dec[-1] == "ok", dec
    assert "component_down" in single, single
    assert "platform_wide" not in single, single
    assert "prober_impaired" not in dec + single
