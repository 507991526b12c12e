"""The status page as a person sees it: rendered by headless Chromium, failing component shown."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from prober.daemon import Daemon
from prober.sim import FaultSpec, SimOptions, start_sim
from prober.web import build_app, start_web
from tests.conftest import IN_CI, fast_shipped_config, wait_for

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
        )
    )
    monkeypatch.setenv("PLATFORM_URL", sim.url)
    config = fast_shipped_config(tmp_path)
    daemon = Daemon(config)
    await daemon.start()
    runner = await start_web(build_app(daemon), "127.0.0.1", 0)
    try:
        await wait_for(lambda: daemon.status.verdict.state == "component_down", limit=15)
        yield f"http://127.0.0.1:{runner.port}/status"
    finally:
        await runner.cleanup()
        await daemon.stop()
        await sim.stop()


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


async def test_status_page_renders_failing_component(status_url: str, tmp_path: Path) -> None:
    dom = await run_chromium("--dump-dom", status_url)
    assert 'data-verdict="component_down"' in dom
    assert 'data-component="notifications" data-state="down"' in dom
    assert 'data-component="timeline" data-state="ok"' in dom
    screenshot = tmp_path / "status.png"
    await run_chromium(f"--screenshot={screenshot}", "--window-size=1200,800", status_url)
    assert screenshot.stat().st_size > 10_000
