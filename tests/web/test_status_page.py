"""The status page as a person sees it: rendered by headless Chromium, failing component shown."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from prober.engine.daemon import Daemon
from prober.sim import FaultSpec, SimOptions, start_sim
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.checks import fast_shipped_config, shipped_env
from tests.support.processes import IN_CI, wait_for

ROW = re.compile(r'<tr data-check="([^"]+)" data-state="([^"]+)">')
# A history dot's tooltip: when it ran, how it ended, how long it took.
FAILED_DOT = re.compile(
    r'class="dot" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · failed: status · [\d.]+ ms"'
)
OK_DOT = re.compile(r'class="dot" title="[^"]+ UTC · ok · [\d.]+ ms"')

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if IN_CI:
            pytest.fail("chromium not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (Debian package: chromium)")
    return path


@pytest.fixture
async def status_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str
) -> AsyncIterator[str]:
    sim = await start_sim(
        options=SimOptions(
            latency_ms=0, latency_jitter_ms=0, faults={"notifications": FaultSpec(status=503)}
        ),
        grpc_listen=("127.0.0.1", 0),
    )
    for name, value in shipped_env(sim).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROBER_VANTAGE", "test-vantage")
    config = fast_shipped_config(tmp_path)
    daemon = Daemon(config)
    await daemon.start()
    runner = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
    try:
        await wait_for(lambda: daemon.status.verdict.state == "component_down", limit=15)
        # Every check has run at least twice, so each has a response-time line.
        await wait_for(lambda: all(len(c["recent_runs"]) >= 2 for c in checks(daemon)), limit=30)
        yield f"http://127.0.0.1:{runner.port}/status"
    finally:
        await runner.cleanup()
        await daemon.stop()
        await sim.stop()


def checks(daemon: Daemon) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = daemon.status.snapshot()["checks"]
    return found


async def run_chromium(*args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    return out.decode()


async def test_status_page_shows_failing_first_with_uptime_sparkline_and_tooltips(
    status_url: str, tmp_path: Path
) -> None:
    dom = await run_chromium("--dump-dom", status_url)
    assert 'data-verdict="component_down"' in dom
    assert 'data-component="notifications" data-state="down"' in dom
    assert 'data-component="timeline" data-state="ok"' in dom
    assert "vantage <b>test-vantage</b>" in dom
    assert 'scope <b data-scope="component">component</b>' in dom
    rows = ROW.findall(dom)
    assert len(rows) == 9, rows
    # Failing checks first: notifications (503; its stream refused, its gRPC health
    # NOT_SERVING), and the reply journey, which waits for a notification, fail; every other
    # check is ok.
    failing = [name for name, state in rows if state == "failing"]
    assert sorted(failing) == [
        "notifications", "notifications-grpc", "notifications-websocket", "reply-journey"
    ], rows  # fmt: skip
    assert rows[: len(failing)] == [(name, "failing") for name in failing], rows
    assert all(state == "ok" for _, state in rows[len(failing) :]), rows
    first_row = dom.split('<tr data-check="notifications"', 1)[1].split("</tr>", 1)[0]
    assert "failing since " in first_row
    assert FAILED_DOT.search(first_row), first_row
    assert first_row.count('<td class="num"') == 2 and "%</td>" in first_row
    assert "<svg" in first_row and "<polyline" in first_row and "<circle" in first_row
    ok_row = dom.split('<tr data-check="timeline"', 1)[1].split("</tr>", 1)[0]
    assert ">100%</td>" in ok_row and OK_DOT.search(ok_row), ok_row
    screenshot = tmp_path / "status.png"
    await run_chromium(f"--screenshot={screenshot}", "--window-size=1200,800", status_url)
    assert screenshot.stat().st_size > 10_000
