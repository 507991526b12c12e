"""The proof: the platform, the canary's reference endpoint, daemons and a real Prometheus
with the shipped rules, every one of them a process of its own (bench/stack.py).

Short intervals here (3 s checks, 1 s scrape and evaluation) so the suite stays quick; the
figures at the shipped 15 s come from `make detect` (docs/DETECTION.md). Each phase injects
one kind of outage the way it happens (a fault, a stopped host, a prober cut off, one
vantage's path cut) and asserts which alert fires and which never fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from bench.stack import AlertStates, Stack, start_stack
from tests.support.deploy import GRAFANA_SAMPLES, all_queries
from tests.support.processes import require_tool

LIMIT = 120.0  # generous: a loaded CI machine, 1 s intervals, `for: 30s` at most
COMPONENT = "ProberComponentDown"
PLATFORM = "ProberPlatformWideDegradation"
IMPAIRED = "ProberImpaired"
VANTAGE = "ProberVantageDegraded"

# Queries that must return data once the daemons have been scraped for a while.
KEY_QUERIES = (
    "probe_success",
    "prober_verdict",
    "prober_component_state",
    "check:probe_success:avg_over_time1m",
    "component:probe_success:down",
    "instance:components_down:count",
    "job:vantages_reporting:count",
    "job_scope:prober_trouble:bool",
    "component:prober_check_duration_seconds:p95_rate5m",
    "instance:prober_impaired:bool",
)


@contextlib.asynccontextmanager
async def stack_of(directory: Path, **options: object) -> AsyncIterator[Stack]:
    stack = await start_stack(
        directory,
        # 3 s checks with a 2.5 s timeout: short, yet a loaded CI machine does not make the
        # healthy vantages time out and join a cut-off one in a vote.
        check_interval="3s",
        check_timeout="2.5s",
        prometheus_interval="1s",
        prometheus=require_tool("prometheus"),
        **options,  # type: ignore[arg-type]
    )
    try:
        yield stack
    finally:
        await stack.close()


def firing(name: str, **labels: str) -> Callable[[AlertStates], bool]:
    def check(states: AlertStates) -> bool:
        return any(
            state == "firing" and set(labels.items()) <= set(key)
            for key, state in states.get(name, {}).items()
        )

    return check


def daemon_logs(stack: Stack, lines: int = 80) -> str:
    """The last log lines of each vantage's daemon: what it saw when an alert went wrong."""
    parts = []
    for vantage in stack.vantages:
        log = vantage.daemon.log
        if log is not None and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {vantage.daemon.name} ---\n" + "\n".join(tail))
    return "\n".join(parts)


# What Prometheus held over the last minute and a half when an alert went wrong: scrapes
# (up), the daemons' component states and the alerts, each as "value@seconds ago" runs
# ("-" for a gap without samples).
HISTORY = (
    "up[90s]",
    'max by (instance, component) (prober_component_state{state=~"down|partial"})[90s:1s]',
    'ALERTS{alertname!~"ProberLatencySLOBurn|ProberCheckFailing"}[90s]',
)


async def prometheus_history(stack: Stack) -> str:
    parts = []
    for expr in HISTORY:
        answer = await stack.query(expr)
        now = time.time()
        for series in answer.get("data", {}).get("result", []):
            runs: list[str] = []
            last = None
            for at, value in series["values"]:
                if last is not None and float(at) - last > 2.5:  # no sample: a gap
                    runs.append(f"-@{now - last:.0f}s")
                if not runs or runs[-1].split("@")[0] != value:
                    runs.append(f"{value}@{now - float(at):.0f}s")
                last = float(at)
            parts.append(f"{expr.split('[')[0][:40]} {series['metric']}: {' '.join(runs)}")
    return "\n".join(parts)


async def watch(
    stack: Stack, until: Callable[[AlertStates], bool], forbidden: set[str], what: str
) -> None:
    """Poll Prometheus' alerts until `until` holds; fail on any forbidden alert meanwhile."""
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        states = await stack.alerts()
        leaked = {
            name: s for name, s in states.items() if name in forbidden and "firing" in s.values()
        }
        if leaked:
            history = await prometheus_history(stack)
            pytest.fail(f"{what}: must not fire: {leaked}\n{history}\n{daemon_logs(stack)}")
        if until(states):
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"{what}: not within {LIMIT:g}s; alerts now: {await stack.alerts()}")


# Alerts over long windows that an earlier phase's outage rightly leaves behind.
AFTERMATH = {"ProberLatencySLOBurn", "ProberCheckFailing"}


# Verdicts of a daemon that sees no outage (a slow check under load is no outage), and how
# long quiet must hold: more than a scrape and an evaluation (1 s each), so Prometheus has
# seen what the daemons see.
SETTLED = {"ok", "degraded"}
STEADY = 3.0


async def verdicts(stack: Stack) -> dict[str, str]:
    """Each vantage's own verdict, from its daemon's /api/status."""
    seen = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for vantage in stack.vantages:
            url = f"http://127.0.0.1:{vantage.port}/api/status"
            async with session.get(url) as resp:
                seen[vantage.name] = str((await resp.json())["verdict"])
    return seen


async def quiet(stack: Stack, what: str) -> None:
    """Wait until every daemon's verdict is settled and Prometheus has no alert pending or
    firing but the aftermath ones, both for STEADY seconds on end.

    No alert at one instant is not enough: a missed scrape empties the rules for an
    evaluation while the daemons still hold components down, and the alert fires again
    right after (seen: ProberPlatformWideDegradation in the phase after the platform's).
    """
    deadline = time.monotonic() + LIMIT
    since: float | None = None
    while time.monotonic() < deadline:
        alerts = set(await stack.alerts()) - AFTERMATH
        seen = await verdicts(stack)
        now = time.monotonic()
        if alerts or set(seen.values()) - SETTLED:
            since = None
        elif since is None:
            since = now
        elif now - since >= STEADY:
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"{what}: not quiet within {LIMIT:g}s; alerts {alerts}, verdicts {seen}")


async def phase(
    stack: Stack,
    what: str,
    inject: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[None]],
    until: Callable[[AlertStates], bool],
    forbidden: set[str],
) -> None:
    await quiet(stack, f"before {what}")
    await inject()
    await watch(stack, until, forbidden, what)
    await restore()


async def check_every_query(stack: Stack) -> None:
    """Every expression of the rules and the dashboard runs on the real Prometheus."""
    instance = f"127.0.0.1:{stack.vantages[0].port}"
    failed = []
    for where, expr in all_queries():
        answer = await stack.query(expr.replace(GRAFANA_SAMPLES["instance"], instance))
        if answer["status"] != "success":
            failed.append(f"{where}: {answer.get('error')}")
    assert not failed, failed
    empty = [expr for expr in KEY_QUERIES if not (await stack.query(expr))["data"]["result"]]
    assert not empty, f"no data for {empty}"


async def one_vantage(directory: Path) -> None:
    async with stack_of(directory) as stack:
        sim, reference = stack.sim, stack.reference

        async def clear() -> None:
            await stack.fault("notifications", None)

        async def pause_sim() -> None:
            sim.signal(signal.SIGSTOP)

        async def resume_sim() -> None:
            sim.signal(signal.SIGCONT)

        async def cut_off() -> None:
            sim.signal(signal.SIGSTOP)
            reference.signal(signal.SIGSTOP)

        async def mend() -> None:
            sim.signal(signal.SIGCONT)
            reference.signal(signal.SIGCONT)

        await phase(
            stack,
            "one component answering 503",
            lambda: stack.fault("notifications", {"status": 503}),
            clear,
            firing(COMPONENT, component="notifications"),
            {PLATFORM, IMPAIRED, VANTAGE},
        )
        # The platform's host stops: everything hangs, the canary (elsewhere) passes. That
        # is the outage prober exists for, not the prober's own trouble.
        await phase(
            stack,
            "platform host stopped",
            pause_sim,
            resume_sim,
            firing(PLATFORM),
            {IMPAIRED, VANTAGE},
        )
        await phase(
            stack, "platform host killed", lambda: _kill(stack), stack.restart_sim,
            firing(PLATFORM), {IMPAIRED, VANTAGE},
        )  # fmt: skip
        # Platform and reference both gone: the prober is cut off, it must not blame the
        # platform.
        await phase(
            stack,
            "prober cut off",
            cut_off,
            mend,
            firing(IMPAIRED),
            {COMPONENT, PLATFORM, VANTAGE},
        )
        await quiet(stack, "after the prober mended")
        await check_every_query(stack)


async def _kill(stack: Stack) -> None:
    stack.sim.signal(signal.SIGKILL)


async def three_vantages(directory: Path) -> None:
    async with stack_of(directory, vantages=("a", "b", "c"), relayed=("c",)) as stack:

        async def cut() -> None:
            for relay in stack.relays:
                relay.cut()

        async def mend() -> None:
            for relay in stack.relays:
                relay.mend()

        async def clear() -> None:
            await stack.fault("all", None)

        # One vantage loses its path to the platform: its problem, not the platform's.
        await phase(
            stack,
            "one of three vantages cut off",
            cut,
            mend,
            firing(VANTAGE, vantage="c"),
            {PLATFORM, COMPONENT, IMPAIRED},
        )
        # All three see the platform fail: that is platform-wide.
        await phase(
            stack,
            "all three vantages see the outage",
            lambda: stack.fault("all", {"status": 503}),
            clear,
            firing(PLATFORM),
            {IMPAIRED, VANTAGE},
        )


@pytest.mark.integration
async def test_detection_tells_outage_kinds_apart(tmp_path: Path) -> None:
    require_tool("prometheus")
    await asyncio.gather(one_vantage(tmp_path / "one"), three_vantages(tmp_path / "three"))
