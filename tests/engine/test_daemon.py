"""The daemon end to end: real checks over loopback, real /metrics, real reloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from prober.engine.daemon import Daemon
from prober.sim import SimOptions, start_sim
from prober.web.app import build_app
from prober.web.server import WebLimits, WebServer, start_web
from tests.support.checks import WriteConfig, fast_shipped_config, shipped_env
from tests.support.processes import require_tool, wait_for
from tests.support.samples import Sample, parse_samples, sample_value
from tests.support.servers import Target

TWO_CHECKS = """
interval: 0.5s
timeout: 0.3s
labels: {vantage: test}
checks:
  - {name: good, kind: http, component: api, url: "${URL}/ok"}
  - name: flow
    kind: flow
    component: timeline
    detail: full
    steps:
      - {name: first, url: "${URL}/ok", extract: {status: $.status}}
      - {name: second, url: "${URL}/echo?s=${status}", assert: ['$.query.s == "ok"']}
"""


class Running:
    def __init__(self, daemon: Daemon, runner: WebServer) -> None:
        self.daemon = daemon
        self.runner = runner
        self.base = f"http://127.0.0.1:{runner.port}"

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.base + path) as resp:
            return resp.status, await resp.text()

    async def samples(self) -> list[Sample]:
        status, text = await self.get("/metrics")
        assert status == 200
        return parse_samples(text)


@pytest.fixture
async def running(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    monkeypatch.setenv("URL", target.url)
    path = write_config(TWO_CHECKS)
    daemon = Daemon(path)
    await daemon.start()
    runner = await start_web(build_app(daemon.metrics, daemon, daemon.reload), "127.0.0.1", 0)
    yield Running(daemon, runner)
    await runner.cleanup()
    await daemon.stop()


async def test_metrics_show_both_checks_then_failure(running: Running, target: Target) -> None:
    async def both_ran() -> bool:
        samples = await running.samples()
        return all(sample_value(samples, "probe_success", check=c) == 1.0 for c in ("good", "flow"))

    await wait_for(both_ran)
    samples = await running.samples()
    assert sample_value(samples, "probe_http_status_code", check="good") == 200.0
    assert sample_value(samples, "prober_step_success", check="flow", step="second") == 1.0
    # detail: full (the flow) adds a histogram per step; the default (good) has none.
    step_histograms = {
        dict(labels)["check"]
        for name, labels, _ in samples
        if name == "prober_step_duration_seconds_count"
    }
    assert step_histograms == {"flow"}
    assert (
        sample_value(samples, "probe_success", check="good", component="api", vantage="test") == 1.0
    )
    phases = {
        dict(labels)["phase"]
        for name, labels, _ in samples
        if name == "probe_http_duration_seconds" and dict(labels)["check"] == "good"
    }
    assert phases == {"resolve", "connect", "tls", "processing", "transfer"}
    assert sample_value(samples, "prober_checks_configured", scope="all") == 2.0
    assert sample_value(samples, "prober_build_info") == 1.0

    target.status = 503

    async def good_failed() -> bool:
        samples = await running.samples()
        return sample_value(samples, "probe_success", check="good") == 0.0

    await wait_for(good_failed)
    samples = await running.samples()
    assert (
        sample_value(
            samples,
            "prober_check_failures_total",
            check="good",
            reason="status",
            failed_step="request",
        )
        is not None
    )


async def test_health_ready_and_status_endpoints(running: Running) -> None:
    assert (await running.get("/-/healthy"))[0] == 200
    assert (await running.get("/-/ready"))[0] == 200
    await wait_for(lambda: running.daemon.status.snapshot()["checks"][0]["state"] != "pending")
    status, text = await running.get("/api/status")
    assert status == 200 and '"verdict"' in text
    status, html = await running.get("/status")
    assert status == 200 and "prober status" in html


async def test_reload_removes_and_adds_checks(
    running: Running, write_config: WriteConfig, target: Target
) -> None:
    await wait_for(lambda: _has(running, "flow"))
    write_config("""
        interval: 0.5s
        timeout: 0.3s
        labels: {vantage: test}
        checks:
          - {name: good, kind: http, component: api, url: "${URL}/ok"}
          - {name: added, kind: http, component: api, url: "${URL}/ok"}
    """)
    status, _ = await running.get("/-/reload")
    assert status == 405
    async with aiohttp.ClientSession() as session, session.post(running.base + "/-/reload") as resp:
        assert resp.status == 200, await resp.text()
    samples = await running.samples()
    assert sample_value(samples, "probe_success", check="flow") is None
    await wait_for(lambda: _has(running, "added"))


async def test_bad_reload_keeps_running_config(running: Running, write_config: WriteConfig) -> None:
    await wait_for(lambda: _has(running, "good"))
    write_config("checks:\n  - {name: broken, kind: http}\n")
    async with aiohttp.ClientSession() as session, session.post(running.base + "/-/reload") as resp:
        assert resp.status == 400
        assert "prober.yml:2" in await resp.text()
    samples = await running.samples()
    assert sample_value(samples, "prober_config_last_reload_successful") == 0.0
    assert sample_value(samples, "probe_success", check="good") is not None


async def _has(running: Running, check: str) -> bool:
    return sample_value(await running.samples(), "probe_success", check=check) is not None


@pytest.mark.integration
async def test_promtool_check_metrics_on_live_scrape(running: Running) -> None:
    promtool = require_tool("promtool")
    await wait_for(lambda: _has(running, "flow"))
    _, text = await running.get("/metrics")
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(text.encode()), timeout=30)
    assert process.returncode == 0, output.decode()
    assert output.decode().strip() == "", output.decode()


async def test_slow_client_is_cut_off_and_normal_clients_served(
    running: Running, target: Target, write_config: WriteConfig
) -> None:
    server = await start_web(
        build_app(running.daemon.metrics, running.daemon),
        "127.0.0.1",
        0,
        limits=WebLimits(head_seconds=0.5),
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        await writer.drain()
        # The server closes the connection at its deadline: EOF well before our own bound.
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/-/healthy"
            async with session.get(url) as resp:
                assert resp.status == 200
    finally:
        await server.cleanup()


async def test_oversized_request_is_refused(running: Running) -> None:
    url = running.base + "/-/reload"
    async with aiohttp.ClientSession() as session, session.post(url, data=b"x" * 100_000) as resp:
        assert resp.status == 413


async def test_a_change_of_state_is_confirmed_by_a_run_at_once(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a 30 s interval a failure is still confirmed within seconds: the daemon re-runs
    the check at once, counts that run, and only then calls the component down."""
    monkeypatch.setenv("URL", target.url)
    path = write_config("""
interval: 30s
timeout: 2s
checks:
  - {name: only, component: api, url: "${URL}/ok"}
""")
    daemon = Daemon(path)
    await daemon.start()
    try:
        await wait_for(lambda: daemon.status.states()[0].success is True, limit=60)
        target.status = 503
        # Run it now, as a component sweep would; the confirmation must follow by itself.
        daemon.run_soon("only", "sweep", 0.0)
        await wait_for(lambda: daemon.status.states()[0].success is False, limit=20)
        confirm = daemon.metrics.daemon.extra_runs.labels(trigger="confirm")._value.get()
        assert confirm >= 1
        assert daemon.status.component_conditions()["api"].value == "down"
    finally:
        await daemon.stop()


async def test_a_flaky_run_is_refuted_not_reported(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("URL", target.url)
    path = write_config("""
interval: 30s
timeout: 2s
checks:
  - {name: only, component: api, url: "${URL}/ok"}
""")
    daemon = Daemon(path)
    await daemon.start()
    try:
        await wait_for(lambda: daemon.status.states()[0].success is True, limit=60)
        target.status = 503
        daemon.run_soon("only", "sweep", 0.0)
        await wait_for(lambda: daemon.status.snapshot()["checks"][0]["last_run_ok"] is False)
        target.status = 200  # the blip is over before the confirmation run
        await wait_for(lambda: daemon.status.snapshot()["checks"][0]["last_run_ok"] is True)
        assert daemon.status.states()[0].success is True
        assert daemon.status.evaluate(0.0, 0.1).state == "ok"
    finally:
        await daemon.stop()


async def test_login_outage_is_confirmed_by_fresh_logins_not_by_cached_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    """The flows reuse a cached login, so their last word on `login` is an old success. When
    login breaks, the confirmation and sweep runs log in afresh, so login is seen down at once,
    not after those old words go stale (three 30 s intervals here)."""
    sim = await start_sim(
        options=SimOptions(latency_ms=0, latency_jitter_ms=0), grpc_listen=("127.0.0.1", 0)
    )
    for name, value in shipped_env(sim).items():
        monkeypatch.setenv(name, value)
    daemon = Daemon(fast_shipped_config(tmp_path, interval="30s", timeout="5s"))
    await daemon.start()
    try:
        await wait_for(lambda: daemon.status.evaluate(0.0, 1.0).state == "ok", limit=60)
        async with aiohttp.ClientSession() as session:
            url = f"{sim.url}/-/faults/login"
            async with session.put(url, json={"status": 503}) as resp:
                assert resp.status == 200
        daemon.run_soon("login", "sweep", 0.0)  # as if its schedule came round now
        await wait_for(
            lambda: daemon.status.component_conditions()["login"].value == "down", limit=20
        )
        conditions = daemon.status.component_conditions()
        assert conditions["timeline"].value == "ok"  # cached tokens still read the timeline
        assert conditions["notifications"].value == "ok"
    finally:
        await daemon.stop()
        await sim.stop()
