"""Accounts and shards, and faults scoped to some accounts (an outage for some users)."""

from __future__ import annotations

import random
import zlib
from typing import Any

import aiohttp
import pytest

from prober.sim import (
    ACCOUNT_PATTERN,
    DEMO_PASSWORD,
    DEMO_USER,
    Component,
    RunningSim,
    SimOptions,
    account_name,
    shard_share,
)
from prober.sim.faults import FaultSpec, FaultTable
from tests.support.sim import (
    ENDPOINT_OF,
    HIT,
    NOTIFICATIONS,
    SPARED,
    TIMELINE,
    StartSim,
    get_json,
    in_share,
    login,
    put_fault,
    status_of,
    wait_for,
)

# --- accounts and shards ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "status"),
    [
        ("user-0001", 200),
        ("user-0012", 200),
        (DEMO_USER, 200),
        ("user-0013", 401),
        ("user-0000", 401),
        ("user-1", 401),
        ("user-00001", 401),
        ("user-\uff10\uff1001", 401),
    ],
    ids=["first", "last", "demo", "past-the-end", "zero", "unpadded", "overpadded", "wide-digits"],
)
async def test_population_accounts_log_in_with_the_demo_password(
    start: StartSim, client: aiohttp.ClientSession, username: str, status: int
) -> None:
    sim = await start(accounts=12)
    creds = {"username": username, "password": DEMO_PASSWORD}
    async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
        assert resp.status == status


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [
        ("user-0002", "rack-pass", 200),
        ("user-0002", DEMO_PASSWORD, 401),
        (DEMO_USER, DEMO_PASSWORD, 200),
        ("user-0001", "own-pass", 200),
        ("user-0001", "rack-pass", 401),
    ],
    ids=["population", "population-demo-password", "demo", "configured", "configured-shared"],
)
async def test_accounts_password_is_the_populations_and_configured_users_keep_their_own(
    start: StartSim, client: aiohttp.ClientSession, username: str, password: str, status: int
) -> None:
    users = {DEMO_USER: DEMO_PASSWORD, "user-0001": "own-pass"}
    sim = await start(accounts=3, accounts_password="rack-pass", users=users)
    creds = {"username": username, "password": password}
    async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
        assert resp.status == status


@pytest.mark.parametrize(
    ("accounts", "names"),
    [
        (100, ["user-0001", "user-0002", "user-0003", "user-0004", "user-0005"]),
        (2, ["user-0001", "user-0002"]),
        (0, []),
    ],
    ids=["default", "fewer-than-five", "none"],
)
async def test_accounts_endpoint_lists_the_population(
    start: StartSim, client: aiohttp.ClientSession, accounts: int, names: list[str]
) -> None:
    sim = await start(accounts=accounts)
    listing = await get_json(client, f"{sim.url}/-/accounts")
    assert listing == {"accounts": accounts, "names": names, "pattern": "user-{i:04d}"}
    assert [ACCOUNT_PATTERN.format(i=i) for i in range(1, len(names) + 1)] == names


def test_default_population_is_a_hundred_accounts() -> None:
    assert SimOptions().accounts == 100
    assert account_name(100) == "user-0100"
    assert account_name(12345) == "user-12345"


def test_shard_share_is_the_crc32_of_the_name_as_a_share_of_2_to_the_32() -> None:
    # Pinned values: the prober side and scenario files rely on these shares never moving.
    assert shard_share(DEMO_USER) == pytest.approx(0.8369579091668129, abs=1e-12)
    assert shard_share("user-0001") == pytest.approx(0.5080420677550137, abs=1e-12)
    names = [account_name(i) for i in range(1, 1001)]
    shares = [shard_share(name) for name in names]
    assert shares == [zlib.crc32(name.encode()) / 2**32 for name in names]
    assert all(0.0 <= share < 1.0 for share in shares)
    assert 250 <= sum(share < 0.3 for share in shares) <= 350  # ~300, a usable spread


# --- account-scoped faults ----------------------------------------------------------------


@pytest.mark.parametrize("component", ["api", "timeline", "notifications"])
async def test_account_scoped_fault_hits_exactly_the_accounts_in_the_share(
    start: StartSim, client: aiohttp.ClientSession, component: str
) -> None:
    sim = await start(accounts=40)
    names = [*(account_name(i) for i in range(1, 41)), DEMO_USER]
    failing = in_share(names, 0.3)
    assert failing and len(failing) < len(names)  # both sides are tested
    tokens = {name: await login(client, sim, name) for name in names}
    await put_fault(client, sim, component, {"status": 503, "accounts": 0.3})
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {
        component: {"status": 503, "accounts": 0.3}
    }
    statuses = {name: await status_of(client, sim, component, tokens[name]) for name in names}
    assert {name for name, status in statuses.items() if status == 503} == failing
    assert {statuses[name] for name in set(names) - failing} == {201 if component == "api" else 200}
    stats = (await get_json(client, f"{sim.url}/-/stats"))["components"][component]
    assert stats["outcomes"]["error_status"] == len(failing)
    assert stats["accounts"] == {"seen": len(names), "hit": len(failing), "capped": False}


async def test_account_scoped_login_fault_fails_the_logins_of_the_share_only(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    sim = await start(accounts=40)
    names = [account_name(i) for i in range(1, 41)]
    await put_fault(client, sim, "login", {"status": 503, "accounts": 0.3})
    failed = set()
    for name in names:
        creds = {"username": name, "password": DEMO_PASSWORD}
        async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
            assert resp.status in (200, 503)
            if resp.status == 503:
                failed.add(name)
    assert failed == in_share(names, 0.3)
    accounts = (await get_json(client, f"{sim.url}/-/stats"))["components"]["login"]["accounts"]
    assert (accounts["seen"], accounts["hit"]) == (len(names), len(failed))


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/v1/health", {}, 200),
        ("GET", "/api/v1/status", {}, 200),
        ("POST", "/api/v1/login", {"data": "not json"}, 400),
        ("POST", "/api/v1/login", {"json": {"password": DEMO_PASSWORD}}, 400),
        ("POST", "/api/v1/login", {"json": {"username": 7, "password": "x"}}, 400),
        ("GET", TIMELINE, {}, 401),
        ("GET", NOTIFICATIONS, {"headers": {"Authorization": "Bearer not-a-token"}}, 401),
        ("POST", "/api/v1/login", {"json": {"username": DEMO_USER, "password": "x"}}, 503),
    ],
    ids=[
        "health",
        "status",
        "login-not-json",
        "login-no-username",
        "login-username-not-a-string",
        "no-token",
        "unknown-token",
        "login-naming-an-account",
    ],
)
async def test_account_scoped_fault_spares_requests_of_no_account(
    sim: RunningSim,
    client: aiohttp.ClientSession,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    await put_fault(client, sim, "all", {"status": 503, "accounts": 1.0})  # every account
    async with client.request(method, sim.url + path, **kwargs) as resp:
        assert resp.status == status


async def test_expired_token_is_a_401_even_for_an_account_in_the_failing_share(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    sim = await start(token_ttl_s=0.3)
    headers = await login(client, sim)
    await put_fault(client, sim, "timeline", {"status": 503, "accounts": 1.0})

    async def expired() -> bool:
        async with client.get(sim.url + TIMELINE, headers=headers) as resp:
            return resp.status == 401

    await wait_for(expired)


async def test_fault_on_all_with_accounts_hits_every_component_for_the_share_only(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    names = [account_name(i) for i in range(1, 101)]
    hit = sorted(in_share(names, 0.5))[0]
    spared = sorted(set(names) - in_share(names, 0.5))[0]
    tokens = {name: await login(client, sim, name) for name in (hit, spared)}
    await put_fault(client, sim, "all", {"status": 503, "accounts": 0.5})
    for component in ENDPOINT_OF:
        assert await status_of(client, sim, component, tokens[hit]) == 503, component
        assert await status_of(client, sim, component, tokens[spared]) in (200, 201), component
    for name, status in ((hit, 503), (spared, 200)):
        creds = {"username": name, "password": DEMO_PASSWORD}
        async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
            assert resp.status == status, name
    async with client.get(sim.url + "/api/v1/health") as resp:
        assert resp.status == 200
    stats = (await get_json(client, f"{sim.url}/-/stats"))["components"]
    assert {c: stats[c]["accounts"]["hit"] for c in stats} == {
        "api": 1,
        "login": 1,
        "timeline": 1,
        "notifications": 1,
    }


@pytest.mark.parametrize(
    ("shared", "own", "account", "failure", "status"),
    [
        ({"status": 503, "accounts": 0.3}, {}, HIT, "error_status", 503),
        ({"status": 503, "accounts": 0.3}, {}, SPARED, None, 500),
        ({"status": 503, "accounts": 0.3}, {}, None, None, 500),
        ({"status": 503, "accounts": 0.3}, {"status": 502}, SPARED, "error_status", 502),
        ({"status": 503, "accounts": 0.3}, {"status": 502}, HIT, "error_status", 503),
        ({}, {"hang": True, "accounts": 0.3}, HIT, "hang", 0),
        ({}, {"hang": True, "accounts": 0.3}, SPARED, None, 500),
        ({"status": 503}, {"hang": True, "accounts": 0.3}, SPARED, "error_status", 503),
        ({}, {"status": 503, "accounts": 1.0}, DEMO_USER, "error_status", 503),
    ],
    ids=[
        "all-hits-the-share",
        "all-spares-the-rest",
        "all-spares-no-account",
        "own-fault-still-fails-the-rest",
        "all-first-for-the-share",
        "own-hang-for-the-share",
        "own-hang-spares-the-rest",
        "unscoped-all-applies-to-the-rest",
        "whole-population",
    ],
)
def test_account_scoped_layers_apply_only_to_their_share(
    shared: dict[str, Any],
    own: dict[str, Any],
    account: str | None,
    failure: str | None,
    status: int,
) -> None:
    faults = {"all": FaultSpec(**shared)} if shared else {}
    table = FaultTable({**faults, **({"timeline": FaultSpec(**own)} if own else {})})
    plan = table.plan(Component.TIMELINE, random.Random(1), account)
    assert (plan.failure, plan.status) == (failure, status)


async def test_stats_count_distinct_known_accounts_per_component(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    names = [account_name(i) for i in range(1, 11)]
    tokens = {name: await login(client, sim, name) for name in names}
    await put_fault(client, sim, "timeline", {"status": 503, "accounts": 0.5})
    for _ in range(2):
        for name in names:
            await status_of(client, sim, "timeline", tokens[name])
    async with client.post(f"{sim.url}/api/v1/login", json={"username": "nobody", "password": "x"}):
        pass
    stats = (await get_json(client, f"{sim.url}/-/stats"))["components"]
    assert stats["timeline"]["accounts"] == {
        "seen": 10,
        "hit": len(in_share(names, 0.5)),
        "capped": False,
    }
    assert stats["timeline"]["outcomes"]["error_status"] == 2 * len(in_share(names, 0.5))
    assert stats["login"]["accounts"]["seen"] == 10  # an unknown name is not remembered
    assert stats["api"]["accounts"] == {"seen": 0, "hit": 0, "capped": False}
    async with client.delete(f"{sim.url}/-/stats") as resp:
        assert (await resp.json())["components"]["timeline"]["accounts"]["seen"] == 0
