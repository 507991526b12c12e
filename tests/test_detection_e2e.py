"""The proof: simulated platform + daemon + a real Prometheus with the shipped rules.

Three stacks run side by side (each its own sim, daemon and Prometheus on loopback, 1s
scrape and evaluation), one per fault: a single broken component, a platform-wide outage,
and a prober cut off from everything. Prometheus' /api/v1/alerts says which alerts fire
and which never even go pending, and how many seconds detection took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prober.daemon import Daemon
from prober.sim import SimOptions, start_sim
from prober.sim.server import RunningSim
from prober.web import build_app, start_web
from tests.conftest import REPO, fast_shipped_config, free_port, require_tool
from tests.test_rules import GRAFANA_SAMPLES, all_queries

WARM_UP = 20.0  # rate windows need some samples before the fault
DETECTION_LIMIT = 240.0
QUIET_AFTER = 15.0  # how long forbidden alerts keep being watched after detection


@dataclass
class Stack:
    sim: RunningSim
    daemon: Daemon
    prometheus: asyncio.subprocess.Process
    prometheus_url: str
    daemon_port: int
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def alerts(self) -> dict[str, set[str]]:
        """Alert name -> states (pending, firing) now."""
        url = f"{self.prometheus_url}/api/v1/alerts"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            data: dict[str, Any] = await resp.json()
        states: dict[str, set[str]] = {}
        for alert in data["data"]["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    async def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()


async def start_stack(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    sim = await start_sim(options=SimOptions(latency_ms=1, latency_jitter_ms=0, seed=7))
    config = fast_shipped_config(directory)
    # Each stack's checks point at its own sim: the environment is read when the daemon loads.
    with monkeypatch.context() as patch:
        patch.setenv("PLATFORM_URL", sim.url)
        daemon = Daemon(config)
        await daemon.start()
    runner = await start_web(build_app(daemon), "127.0.0.1", 0)
    prom_port = free_port()
    prom_config = directory / "prometheus.yml"
    prom_config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{REPO}/deploy/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: prober
    static_configs: [{{targets: ["127.0.0.1:{runner.port}"]}}]
""")
    process = await asyncio.create_subprocess_exec(
        require_tool("prometheus"),
        f"--config.file={prom_config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stack = Stack(sim, daemon, process, f"http://127.0.0.1:{prom_port}", runner.port)

    async def stop_prometheus() -> None:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)

    stack.cleanups += [sim.stop, daemon.stop, runner.cleanup, stop_prometheus]
    await _wait_ready(stack.prometheus_url)
    return stack


async def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    pytest.fail("Prometheus did not become ready")


async def put_fault(sim: RunningSim, component: str, fault: dict[str, Any]) -> None:
    url = f"{sim.url}/-/faults/{component}"
    async with aiohttp.ClientSession() as session, session.put(url, json=fault) as resp:
        assert resp.status == 200, await resp.text()


@dataclass
class Outcome:
    scenario: str
    expected: str
    seconds: float | None
    seen: dict[str, set[str]]


async def run_scenario(
    stack: Stack, scenario: str, inject: Callable[[], Awaitable[None]], expected: str
) -> Outcome:
    """Inject the fault; wait for `expected` to fire; record every alert state seen."""
    await asyncio.sleep(WARM_UP)
    before = await stack.alerts()
    assert not before, f"{scenario}: alerts before the fault: {before}"
    start = time.monotonic()
    await inject()
    seen: dict[str, set[str]] = {}
    detected: float | None = None
    while time.monotonic() - start < DETECTION_LIMIT:
        for name, states in (await stack.alerts()).items():
            seen.setdefault(name, set()).update(states)
        if detected is None and "firing" in seen.get(expected, set()):
            detected = time.monotonic() - start
        if detected is not None and time.monotonic() - start > detected + QUIET_AFTER:
            break
        await asyncio.sleep(1.0)
    return Outcome(scenario, expected, detected, seen)


SCENARIOS: dict[str, tuple[str, set[str]]] = {
    # scenario: (alert that must fire, alerts that must never even go pending)
    "single-component": (
        "ProberComponentDown",
        {"ProberPlatformWideDegradation", "ProberImpaired", "ProberDown"},
    ),
    "platform-wide": ("ProberPlatformWideDegradation", {"ProberImpaired", "ProberDown"}),
    "prober-cut-off": (
        "ProberImpaired",
        {"ProberComponentDown", "ProberPlatformWideDegradation", "ProberCheckFailing"},
    ),
}


# Queries that must return data once the daemon has been scraped for a while.
KEY_QUERIES = (
    "probe_success",
    "prober_verdict",
    "check:probe_success:avg_over_time1m",
    "component:probe_success:ratio_avg",
    "component:probe_success:failing_ratio",
    "instance:components_down:count",
    "job:vantages_reporting:count",
    "component:prober_check_duration_seconds:p95_rate5m",
    "instance:prober_impaired:bool",
)


async def query(stack: Stack, expr: str) -> dict[str, Any]:
    url = f"{stack.prometheus_url}/api/v1/query"
    params = {"query": expr}
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        data: dict[str, Any] = await resp.json()
    return data


async def check_every_query(stack: Stack) -> None:
    """Every expression of the rules and the dashboard runs on the real Prometheus."""
    instance = f"127.0.0.1:{stack.daemon_port}"
    failed = []
    for where, expr in all_queries():
        answer = await query(stack, expr.replace(GRAFANA_SAMPLES["instance"], instance))
        if answer["status"] != "success":
            failed.append(f"{where}: {answer.get('error')}")
    assert not failed, failed
    empty = [expr for expr in KEY_QUERIES if not (await query(stack, expr))["data"]["result"]]
    assert not empty, f"no data for {empty}"


@pytest.mark.integration
async def test_detection_tells_outage_kinds_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("prometheus")
    stacks: dict[str, Stack] = {}
    try:
        for name in SCENARIOS:
            (tmp_path / name).mkdir()
            stacks[name] = await start_stack(tmp_path / name, monkeypatch)
        injections: dict[str, Callable[[], Awaitable[None]]] = {
            "single-component": lambda: put_fault(
                stacks["single-component"].sim, "notifications", {"status": 503}
            ),
            "platform-wide": lambda: put_fault(stacks["platform-wide"].sim, "all", {"status": 503}),
            # Everything the prober talks to vanishes, its canary included.
            "prober-cut-off": stacks["prober-cut-off"].sim.stop,
        }
        outcomes = await asyncio.gather(
            *(
                run_scenario(stacks[name], name, injections[name], expected)
                for name, (expected, _) in SCENARIOS.items()
            )
        )
        # With minutes of real data in it, every rule and dashboard query must run.
        await check_every_query(stacks["single-component"])
    finally:
        for stack in stacks.values():
            await stack.close()
    print("\nscenario             alert that fired                 seconds to fire")
    for outcome in outcomes:
        shown = f"{outcome.seconds:.0f}" if outcome.seconds is not None else "never"
        print(f"{outcome.scenario:20} {outcome.expected:32} {shown}")
    for outcome in outcomes:
        _, forbidden = SCENARIOS[outcome.scenario]
        assert outcome.seconds is not None, f"{outcome.scenario}: {outcome.expected} never fired"
        leaked = {name: states for name, states in outcome.seen.items() if name in forbidden}
        assert not leaked, f"{outcome.scenario}: should not fire: {leaked}"
