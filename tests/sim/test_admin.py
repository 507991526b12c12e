"""The admin API (/-/faults, /-/stats, /-/healthy)."""

from __future__ import annotations

import aiohttp
import pytest

from prober.sim import RunningSim
from tests.support.sim import NOTIFICATIONS, TIMELINE, get_json, login, put_fault

# --- admin API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("puts", "faults"),
    [
        (
            [("notifications", {"status": 503}), ("all", {"latency_ms": 5})],
            {"notifications": {"status": 503}, "all": {"latency_ms": 5.0}},
        ),
        ([("login", {"status": 503}), ("login", {})], {}),
    ],
    ids=["set-and-read", "an-empty-fault-clears-it"],
)
async def test_faults_put_are_read_back(
    sim: RunningSim,
    client: aiohttp.ClientSession,
    puts: list[tuple[str, dict[str, object]]],
    faults: dict[str, object],
) -> None:
    for component, fault in puts:
        await put_fault(client, sim, component, fault)
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == faults


async def test_faults_are_cleared_one_component_or_all(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    await put_fault(client, sim, "notifications", {"status": 503})
    await put_fault(client, sim, "all", {"latency_ms": 5})
    async with client.delete(f"{sim.url}/-/faults/notifications") as resp:
        assert (await resp.json())["faults"] == {"all": {"latency_ms": 5.0}}
    async with client.delete(f"{sim.url}/-/faults") as resp:
        assert resp.status == 200
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {}


@pytest.mark.parametrize(
    ("component", "body", "status", "message"),
    [
        ("login", '{"colour": "red"}', 400, "colour: unknown key"),
        ("login", '{"error_rate": 1.5}', 400, "error_rate: Input should be less than or equal"),
        ("login", '{"status": "soon"}', 400, "status:"),
        ("login", '{"status": 200}', 400, "status: Input should be greater than or equal to 400"),
        ("login", '{"malformed": "sometimes"}', 400, "malformed:"),
        ("login", '{"body_bytes": -1}', 400, "body_bytes:"),
        ("login", '{"accounts": 0}', 400, "accounts: Input should be greater than 0"),
        ("login", '{"accounts": 1.5}', 400, "accounts: Input should be less than or equal to 1"),
        ("api", '{"propagation_delay_ms": -1}', 400, "propagation_delay_ms: Input should be"),
        ("login", "[1, 2]", 400, "expected a JSON object"),
        ("login", "{not json", 400, "not valid JSON"),
        ("search", '{"status": 503}', 404, "unknown component 'search'"),
    ],
    ids=[
        "unknown-key",
        "rate-above-1",
        "status-not-int",
        "status-not-error",
        "malformed-mode",
        "negative-body",
        "no-accounts",
        "accounts-above-1",
        "negative-propagation",
        "not-an-object",
        "not-json",
        "unknown-component",
    ],
)
async def test_bad_faults_are_refused_with_a_clear_message(
    sim: RunningSim,
    client: aiohttp.ClientSession,
    component: str,
    body: str,
    status: int,
    message: str,
) -> None:
    async with client.put(f"{sim.url}/-/faults/{component}", data=body) as resp:
        assert resp.status == status
        assert message in (await resp.json())["error"]
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {}


async def test_stats_count_outcomes_per_component_and_reset(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    headers = await login(client, sim)
    for auth in (headers, headers, {}):
        async with client.get(sim.url + TIMELINE, headers=auth):
            pass
    await put_fault(client, sim, "notifications", {"status": 503})
    async with client.get(sim.url + NOTIFICATIONS, headers=headers):
        pass
    stats = await get_json(client, f"{sim.url}/-/stats")
    timeline = stats["components"]["timeline"]
    assert (
        timeline["total"],
        timeline["outcomes"]["ok"],
        timeline["outcomes"]["unauthorized"],
    ) == (
        3,
        2,
        1,
    )
    assert stats["components"]["notifications"]["outcomes"]["error_status"] == 1
    assert stats["components"]["login"]["outcomes"]["ok"] == 1
    assert stats["total"] == 5
    async with client.delete(f"{sim.url}/-/stats") as resp:
        assert (await resp.json())["total"] == 0
