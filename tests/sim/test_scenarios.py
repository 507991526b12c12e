"""Outage scenarios (replays): parsing, errors with file:line, and playing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prober.sim import DEMO_USER, Component, RunningSim, account_name, shard_share
from prober.sim.faults import FaultSpec
from prober.sim.scenarios import Phase, ScenarioError, builtin_scenarios, load_scenario
from tests.support.sim import (
    NOTIFICATIONS,
    StartSim,
    get_json,
    in_share,
    login,
    status_of,
    wait_for,
)

# --- scenarios ---------------------------------------------------------------------------

SMALL_SCENARIO = """\
name: small
description: a test outage
duration: 40
phases:
  - {at: 0, name: calm, faults: {}}
  - {at: 10, name: notifications-down, faults: {notifications: {status: 503}}}
  - {at: 20, name: login-flaky, faults: {login: {error_rate: 0.5}, all: {latency_ms: 1}}}
  - {at: 30, name: recovered, faults: {}}
"""


def write(tmp_path: Path, text: str, name: str = "outage.yml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def scenario_state(client: aiohttp.ClientSession, sim: RunningSim) -> Any:
    return await get_json(client, f"{sim.url}/-/scenario")


async def test_scenario_file_plays_its_phases_in_order_and_on_time(
    start: StartSim, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    sim = await start(scenario=write(tmp_path, SMALL_SCENARIO), speed=100.0)

    async def finished() -> bool:
        return bool((await scenario_state(client, sim))["state"] == "finished")

    await wait_for(finished)
    state = await scenario_state(client, sim)
    assert [h["name"] for h in state["history"]] == [
        "calm",
        "notifications-down",
        "login-flaky",
        "recovered",
    ]
    for entry in state["history"]:
        assert entry["at"] / 100 - 0.005 <= entry["applied_after_s"] < entry["at"] / 100 + 2.0
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {}


async def test_scenario_phase_faults_apply_and_stopping_clears_them(
    sim: RunningSim, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    long_phase = SMALL_SCENARIO.replace("duration: 40", "duration: 4000")
    path = write(
        tmp_path, long_phase.replace("at: 20,", "at: 2000,").replace("at: 30,", "at: 3000,")
    )
    async with client.post(f"{sim.url}/-/scenario", json={"name": path, "speed": 100}) as resp:
        assert resp.status == 200

    async def notifications_down() -> bool:
        phase = (await scenario_state(client, sim))["phase"]
        return phase is not None and phase["name"] == "notifications-down"

    await wait_for(notifications_down)
    state = await scenario_state(client, sim)
    assert state["next_phase"]["name"] == "login-flaky"
    async with client.get(sim.url + NOTIFICATIONS) as resp:
        assert resp.status == 503
    async with client.delete(f"{sim.url}/-/scenario") as resp:
        assert (await resp.json())["state"] == "idle"
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {}
    async with client.get(sim.url + NOTIFICATIONS) as resp:
        assert resp.status == 401  # healthy again: only the missing token is wrong


async def test_repeating_scenario_starts_over(
    start: StartSim, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    text = SMALL_SCENARIO.replace("duration: 40", "duration: 40\nrepeat: true")
    sim = await start(scenario=write(tmp_path, text), speed=200.0)

    async def third_cycle() -> bool:
        return bool((await scenario_state(client, sim))["cycle"] >= 2)

    await wait_for(third_cycle)
    names = [h["name"] for h in (await scenario_state(client, sim))["history"]]
    assert names[:5] == ["calm", "notifications-down", "login-flaky", "recovered", "calm"]


@pytest.mark.parametrize("name", builtin_scenarios(), ids=builtin_scenarios())
def test_shipped_scenarios_load(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.description


def _fails_for(phase: Phase, share: float) -> set[str]:
    """The components that fail every request of an account at `share` in this phase."""
    failing = set()
    for component, spec in phase.faults.items():
        if spec.hits(share) and (spec.failure_rate() >= 1.0 or spec.hang or spec.reset):
            failing.add(str(component))
    if "all" in failing:
        failing |= {"login", "timeline", "notifications"}  # all: every account's endpoint
    return failing - {"all"}


def _failing_share(phase: Phase, component: str) -> float:
    """The share of accounts whose requests to `component` fail in this phase (or some do)."""
    shares = [0.0]
    for name in (component, "all"):
        spec = phase.faults.get(Component(name))
        if spec is not None and (spec.failure_rate() > 0 or spec.hang or spec.reset):
            shares.append(spec.accounts or 1.0)
    return max(shares)


def test_dec_2022_is_a_rack_pull_that_grows_then_recovers() -> None:
    scenario = load_scenario("dec-2022")
    phases = scenario.phases
    demo = shard_share(DEMO_USER)
    seen_by_demo = [_fails_for(phase, demo) for phase in phases]
    first = next(i for i, p in enumerate(phases) if p.faults)
    down = seen_by_demo.index({"notifications"})
    peak = next(i for i, failing in enumerate(seen_by_demo) if len(failing) >= 2)
    # Notifications first, and for few accounts: demo, logging in from one place, sees nothing.
    assert set(phases[first].faults) == {Component.NOTIFICATIONS}
    assert 0 < _failing_share(phases[first], "notifications") < demo
    # Then notifications fail for demo alone; then login and timeline for a share of accounts
    # without demo; then the API at large for demo too; then everything recovers.
    login = next(i for i, p in enumerate(phases) if _failing_share(p, "login") > 0)
    assert first < down < login < peak < len(phases) - 1
    assert 0 < _failing_share(phases[login], "login") < demo
    assert seen_by_demo[peak] == {"login", "timeline", "notifications"}
    assert Component.ALL in phases[peak].faults
    assert all(len(failing) < 2 for failing in seen_by_demo[:peak])
    assert all(spec.accounts is not None for p in phases for spec in p.faults.values())
    shares = [_failing_share(p, "login") for p in phases]
    assert shares[: peak + 1] == sorted(shares[: peak + 1])  # the share only grows to the peak
    assert not any(seen_by_demo[peak + 1 :])
    assert phases[-1].faults == {}
    assert 25 * 60 <= scenario.length_s <= 35 * 60  # ~30 min, ~3 min at --speed 10


async def test_dec_2022_replays_every_phase_in_order(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    sim = await start(scenario="dec-2022", speed=2000.0)

    async def finished() -> bool:
        return bool((await scenario_state(client, sim))["state"] == "finished")

    await wait_for(finished, within_s=10.0)
    history = (await scenario_state(client, sim))["history"]
    assert [h["name"] for h in history] == [p.name for p in load_scenario("dec-2022").phases]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("phases: [\n", ["outage.yml:2", "invalid YAML"]),
        ("- at: 0\n", ["outage.yml", "expected a mapping"]),
        ("phasez: []\n", ["outage.yml:1", "phasez: unknown key"]),
        ("phases: []\n", ["outage.yml:1", "phases: List should have at least 1 item"]),
        (
            "phases:\n  - at: 0\n    name: a\n    faults:\n      login:\n        error_rate: 2\n",
            ["outage.yml:6", "phases[0].faults.login.error_rate", "less than or equal to 1"],
        ),
        (
            "phases:\n  - at: 0\n    name: a\n    faults:\n      search: {status: 503}\n",
            ["outage.yml:5", "phases[0].faults.search"],
        ),
        (
            "phases:\n  - {at: 10, name: a}\n  - {at: 5, name: b}\n",
            ["phases[1].at (5) must be later than phases[0].at (10)"],
        ),
        ("repeat: true\nphases:\n  - {at: 0, name: a}\n", ["repeat: true needs duration"]),
        ("phases:\n  - {name: a}\n", ["outage.yml:2", "phases[0].at: Field required"]),
        (
            "phases:\n  - at: 0\n    name: a\n    faults:\n      login:\n        accounts: 0\n",
            ["outage.yml:6", "phases[0].faults.login.accounts", "greater than 0"],
        ),
        (
            "phases:\n  - at: 0\n    name: a\n    faults:\n      login: {accounts: 1.2}\n",
            ["outage.yml:5", "phases[0].faults.login.accounts", "less than or equal to 1"],
        ),
        (
            "phases:\n  - at: 0\n    name: a\n    faults:\n"
            "      login: {propagation_delay_ms: 100}\n",
            ["outage.yml:5", "phases[0].faults.login.propagation_delay_ms: only on timeline"],
        ),
    ],
    ids=[
        "bad-yaml",
        "not-a-mapping",
        "unknown-key",
        "no-phases",
        "bad-fault-value",
        "unknown-component",
        "phases-out-of-order",
        "repeat-without-duration",
        "missing-at",
        "no-accounts",
        "accounts-above-1",
        "propagation-on-login",
    ],
)
def test_bad_scenario_files_give_a_located_one_line_error(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


RACK_SCENARIO = """\
name: rack
phases:
  - {at: 0, name: calm, faults: {}}
  - at: 1
    name: rack-pulled
    faults:
      timeline: {status: 503, accounts: 0.3}
      all: {propagation_delay_ms: 20000, accounts: 0.5}
"""


async def test_scenario_phases_scope_faults_to_accounts(
    start: StartSim, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    scenario = load_scenario(write(tmp_path, RACK_SCENARIO))
    assert scenario.phases[1].faults[Component.TIMELINE] == FaultSpec(status=503, accounts=0.3)
    sim = await start(scenario=write(tmp_path, RACK_SCENARIO), speed=100.0)
    names = [account_name(i) for i in range(1, 41)]
    tokens = {name: await login(client, sim, name) for name in names}

    async def pulled() -> bool:
        return bool((await get_json(client, f"{sim.url}/-/faults"))["faults"])

    await wait_for(pulled)
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {
        "timeline": {"status": 503, "accounts": 0.3},
        "all": {"propagation_delay_ms": 20000.0, "accounts": 0.5},
    }
    failed = {n for n in names if await status_of(client, sim, "timeline", tokens[n]) == 503}
    assert failed == in_share(names, 0.3)


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="dec-2022, flaky"):
        load_scenario("dec-2023")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "nope"}, "unknown scenario 'nope'"),
        ({"name": "flaky", "speed": 0}, "speed:"),
        ({"name": "flaky", "loop": True}, "loop: unknown key"),
    ],
    ids=["unknown-name", "zero-speed", "unknown-key"],
)
async def test_bad_scenario_requests_are_refused(
    sim: RunningSim, client: aiohttp.ClientSession, body: dict[str, Any], message: str
) -> None:
    async with client.post(f"{sim.url}/-/scenario", json=body) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert (await scenario_state(client, sim))["state"] == "idle"
