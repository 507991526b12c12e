"""The simulated platform, driven by a real aiohttp client over 127.0.0.1 (no mocks)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
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
    start_sim,
)
from prober.sim.faults import FaultError, FaultSpec, FaultTable, parse_fault_args, plan_request
from prober.sim.scenarios import Phase, ScenarioError, builtin_scenarios, load_scenario
from prober.sim.server import add_sim_arguments, run_sim
from tests.support.processes import REPO

FAST: dict[str, Any] = {"latency_ms": 0.0, "latency_jitter_ms": 0.0, "seed": 7}
TIMELINE = "/api/v1/timeline/home"
NOTIFICATIONS = "/api/v1/notifications"
StartSim = Callable[..., Awaitable[RunningSim]]


@pytest.fixture
async def start() -> AsyncIterator[StartSim]:
    """Start sims with FAST options plus overrides; every one is stopped at teardown."""
    running: list[RunningSim] = []

    async def _start(**overrides: Any) -> RunningSim:
        sim = await start_sim(options=SimOptions(**{**FAST, **overrides}))
        running.append(sim)
        return sim

    yield _start
    for sim in running:
        await sim.stop()


@pytest.fixture
async def sim(start: StartSim) -> RunningSim:
    return await start()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A fresh connection per request, so a reset or hang never spills into the next request."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def login(
    client: aiohttp.ClientSession,
    sim: RunningSim,
    username: str = DEMO_USER,
    password: str = DEMO_PASSWORD,
) -> dict[str, str]:
    """Log in (as the demo user unless told); the Authorization header to use."""
    creds = {"username": username, "password": password}
    async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
        assert resp.status == 200, (username, resp.status)
        body = await resp.json()
    return {"Authorization": f"Bearer {body['access_token']}"}


async def put_fault(
    client: aiohttp.ClientSession, sim: RunningSim, component: str, spec: dict[str, Any]
) -> None:
    async with client.put(f"{sim.url}/-/faults/{component}", json=spec) as resp:
        assert resp.status == 200, await resp.text()


async def get_json(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def outcomes(client: aiohttp.ClientSession, sim: RunningSim, component: str) -> Any:
    stats = await get_json(client, f"{sim.url}/-/stats")
    return stats["components"][component]["outcomes"]


async def wait_for(condition: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> None:
    """Re-check `condition` until it holds; TimeoutError after `within_s` seconds."""
    async with asyncio.timeout(within_s):
        # The condition is read over HTTP from the server, so there is no event to wait on.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# --- the platform API ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/status"], ids=["health", "status"])
async def test_public_endpoints_answer_without_a_token(
    sim: RunningSim, client: aiohttp.ClientSession, path: str
) -> None:
    async with client.get(sim.url + path) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", TIMELINE, {}),
        ("GET", NOTIFICATIONS, {}),
        ("POST", "/api/v1/posts", {}),
        ("GET", TIMELINE, {"Authorization": "Bearer not-a-token"}),
        ("GET", NOTIFICATIONS, {"Authorization": "Basic ZGVtbzpkZW1v"}),
    ],
    ids=["timeline-none", "notifications-none", "post-none", "unknown-token", "basic-auth"],
)
async def test_protected_endpoints_refuse_requests_without_a_valid_token(
    sim: RunningSim, client: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str]
) -> None:
    async with client.request(method, sim.url + path, headers=headers, json={"text": "x"}) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["error"] == "unauthorized"


async def test_login_returns_a_bearer_token_that_opens_the_timeline(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    creds = {"username": DEMO_USER, "password": DEMO_PASSWORD}
    async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
        body = await resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    async with client.get(f"{sim.url}{TIMELINE}?limit=5", headers=headers) as resp:
        posts = (await resp.json())["posts"]
    assert len(posts) == 5
    assert set(posts[0]) == {"id", "author", "text", "created_at"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": DEMO_USER, "password": "wrong"}, 401),
        ({"username": "nobody", "password": DEMO_PASSWORD}, 401),
        ({"username": DEMO_USER}, 400),
        ({"username": DEMO_USER, "password": DEMO_PASSWORD, "otp": "1"}, 400),
        ("not json", 400),
    ],
    ids=["wrong-password", "unknown-user", "missing-password", "extra-field", "not-json"],
)
async def test_bad_logins_are_refused(
    sim: RunningSim, client: aiohttp.ClientSession, body: Any, status: int
) -> None:
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    async with client.post(f"{sim.url}/api/v1/login", **kwargs) as resp:
        assert resp.status == status
        assert "access_token" not in await resp.json()


async def test_configured_users_can_log_in(start: StartSim, client: aiohttp.ClientSession) -> None:
    sim = await start(users={"ops": "s3cret"})
    creds = {"username": "ops", "password": "s3cret"}
    async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
        assert resp.status == 200


async def test_expired_token_gives_401_and_logging_in_again_refreshes_it(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    sim = await start(token_ttl_s=0.3)
    headers = await login(client, sim)

    async def expired() -> bool:
        async with client.get(sim.url + TIMELINE, headers=headers) as resp:
            return resp.status == 401 and (await resp.json())["message"] == "token expired"

    await wait_for(expired)
    async with client.get(sim.url + TIMELINE, headers=await login(client, sim)) as resp:
        assert resp.status == 200


async def test_a_new_post_tops_the_timeline(sim: RunningSim, client: aiohttp.ClientSession) -> None:
    headers = await login(client, sim)
    async with client.post(f"{sim.url}/api/v1/posts", json={"text": "hi"}, headers=headers) as r:
        assert r.status == 201
        post = await r.json()
    async with client.get(f"{sim.url}{TIMELINE}?limit=1", headers=headers) as resp:
        assert (await resp.json())["posts"] == [post]
    assert post["author"] == DEMO_USER


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1"], ids=["zero", "too-big", "word", "neg"])
async def test_bad_timeline_limit_is_a_400(
    sim: RunningSim, client: aiohttp.ClientSession, limit: str
) -> None:
    headers = await login(client, sim)
    async with client.get(f"{sim.url}{TIMELINE}?limit={limit}", headers=headers) as resp:
        assert resp.status == 400


async def test_notifications_list_items_and_the_unread_count(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    async with client.get(sim.url + NOTIFICATIONS, headers=await login(client, sim)) as resp:
        body = await resp.json()
    assert body["items"]
    assert body["unread_count"] == sum(1 for item in body["items"] if not item["read"])


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "errors", "outcome"),
    [
        ({"hang": True}, (TimeoutError,), "hang"),
        (
            {"reset": True},
            (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError),
            "reset",
        ),
        ({"malformed": "truncated"}, (aiohttp.ClientPayloadError,), "malformed"),
    ],
    ids=["hang", "reset", "truncated"],
)
async def test_connection_faults_break_the_request(
    sim: RunningSim,
    client: aiohttp.ClientSession,
    spec: dict[str, Any],
    errors: tuple[type[BaseException], ...],
    outcome: str,
) -> None:
    headers = await login(client, sim)
    await put_fault(client, sim, "timeline", spec)
    timeout = aiohttp.ClientTimeout(total=0.3)
    with pytest.raises(errors):
        async with client.get(sim.url + TIMELINE, headers=headers, timeout=timeout) as resp:
            await resp.read()
    # >= 1: aiohttp's client resends an idempotent request once after a reset.
    assert (await outcomes(client, sim, "timeline"))[outcome] >= 1


def _is_not_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(
    ("spec", "status", "check", "outcome"),
    [
        ({"status": 503}, 503, lambda b: json.loads(b)["status"] == 503, "error_status"),
        ({"status": 429, "error_rate": 1}, 429, lambda b: True, "error_status"),
        ({"malformed": True}, 200, _is_not_json, "malformed"),
        ({"malformed": "json"}, 200, _is_not_json, "malformed"),
        ({"wrong_content": True}, 200, lambda b: "posts" not in json.loads(b), "wrong_content"),
        (
            {"body_bytes": 100_000, "malformed": "json"},
            200,
            lambda b: len(b) == 50_000 and _is_not_json(b),
            "malformed",
        ),
    ],
    ids=[
        "status-503",
        "status-429",
        "malformed-true",
        "malformed-json",
        "wrong-content",
        "huge-and-malformed",
    ],
)
async def test_answer_faults_change_what_the_client_gets(
    sim: RunningSim,
    client: aiohttp.ClientSession,
    spec: dict[str, Any],
    status: int,
    check: Callable[[bytes], bool],
    outcome: str,
) -> None:
    headers = await login(client, sim)
    await put_fault(client, sim, "timeline", spec)
    async with client.get(sim.url + TIMELINE, headers=headers) as resp:
        assert resp.status == status
        assert check(await resp.read())
    assert (await outcomes(client, sim, "timeline"))[outcome] == 1


async def test_hung_request_does_not_delay_shutdown(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    sim = await start(faults={"api": FaultSpec(hang=True)})
    request = asyncio.ensure_future(client.get(sim.url + "/api/v1/health"))
    await wait_for(lambda: _outcome_is(client, sim, "api", "hang"))
    started = time.perf_counter()
    await sim.stop()
    # Hung handlers are released at once, not after aiohttp's 60 s shutdown timeout.
    assert time.perf_counter() - started < 10.0
    with pytest.raises(aiohttp.ClientError):
        await request


async def _outcome_is(client: aiohttp.ClientSession, sim: RunningSim, comp: str, name: str) -> bool:
    return bool((await outcomes(client, sim, comp))[name] >= 1)


async def test_error_rate_stays_within_bounds_with_a_fixed_seed(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    await put_fault(client, sim, "api", {"error_rate": 0.3, "status": 502})
    statuses = []
    for _ in range(300):
        async with client.get(sim.url + "/api/v1/health") as resp:
            statuses.append(resp.status)
    failed = statuses.count(502)
    assert 60 <= failed <= 120  # 90 expected; bounds are ~3.5 standard deviations
    assert set(statuses) == {200, 502}
    counted = await outcomes(client, sim, "api")
    assert (counted["error_status"], counted["ok"]) == (failed, 300 - failed)


async def test_same_seed_fails_the_same_requests(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    patterns = []
    for _ in range(2):
        sim = await start(seed=42, faults={"api": FaultSpec(error_rate=0.5)})
        statuses = []
        for _ in range(40):
            async with client.get(sim.url + "/api/v1/health") as resp:
                statuses.append(resp.status)
        patterns.append(statuses)
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {200, 500}


@pytest.mark.parametrize(
    ("spec", "at_least_s"),
    [({"latency_ms": 200}, 0.2), ({"latency_ms": 100, "latency_jitter_ms": 100}, 0.1)],
    ids=["fixed", "with-jitter"],
)
async def test_latency_delays_the_answer(
    sim: RunningSim, client: aiohttp.ClientSession, spec: dict[str, Any], at_least_s: float
) -> None:
    await put_fault(client, sim, "api", spec)
    started = time.perf_counter()
    async with client.get(sim.url + "/api/v1/health") as resp:
        assert resp.status == 200
    assert at_least_s * 0.95 <= time.perf_counter() - started < 5.0


async def test_base_latency_applies_without_faults(
    start: StartSim, client: aiohttp.ClientSession
) -> None:
    sim = await start(latency_ms=150.0)
    started = time.perf_counter()
    async with client.get(sim.url + "/api/v1/health") as resp:
        assert resp.status == 200
    assert time.perf_counter() - started >= 0.14


async def test_body_bytes_streams_a_huge_body_without_holding_it(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    size = 32 * 1024 * 1024
    await put_fault(client, sim, "api", {"body_bytes": size})
    received, head, tail = 0, b"", b""
    tracemalloc.start()
    try:
        async with client.get(sim.url + "/api/v1/health") as resp:
            assert resp.content_length == size
            async for chunk in resp.content.iter_chunked(256 * 1024):
                head = head or chunk[:12]
                received, tail = received + len(chunk), chunk[-2:]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == size
    assert (head, tail) == (b'{"padding":"', b'"}')
    assert peak < size / 4  # neither side held the body whole
    assert (await outcomes(client, sim, "api"))["huge_body"] == 1


async def test_slow_body_sends_headers_then_trickles_the_body(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    rate = 1000
    await put_fault(client, sim, "api", {"slow_body_bytes_per_s": rate})
    started = time.perf_counter()
    async with client.get(sim.url + "/api/v1/status") as resp:
        headers_after = time.perf_counter() - started
        body = await resp.read()
    total = time.perf_counter() - started
    assert json.loads(body)["status"] == "ok"
    # The first tenth of a second's worth goes out at once, the rest is paced.
    assert total >= (len(body) - rate // 10) / rate * 0.95
    assert headers_after < total
    assert (await outcomes(client, sim, "api"))["slow_body"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/health"),
        ("POST", "/api/v1/login"),
        ("GET", TIMELINE),
        ("GET", NOTIFICATIONS),
    ],
    ids=["api", "login", "timeline", "notifications"],
)
async def test_fault_on_all_hits_every_component(
    sim: RunningSim, client: aiohttp.ClientSession, method: str, path: str
) -> None:
    await put_fault(client, sim, "all", {"status": 503})
    async with client.request(method, sim.url + path) as resp:
        assert resp.status == 503


async def test_sim_health_is_never_faulted_nor_counted(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    await put_fault(client, sim, "all", {"hang": True})
    timeout = aiohttp.ClientTimeout(total=2)
    async with client.get(f"{sim.url}/-/healthy", timeout=timeout) as resp:
        assert resp.status == 200
    assert (await get_json(client, f"{sim.url}/-/stats"))["total"] == 0


NONE: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("shared", "own", "expected"),
    [
        (NONE, NONE, {"failure": None, "delay_s": 0.0}),
        ({"latency_ms": 100}, {"latency_ms": 50}, {"delay_s": 0.15}),
        ({"status": 502}, {"status": 503}, {"failure": "error_status", "status": 502}),
        ({"error_rate": 0}, {"status": 503}, {"failure": "error_status", "status": 503}),
        ({"status": 503}, {"wrong_content": True}, {"failure": "error_status"}),
        ({"hang": True}, {"reset": True}, {"failure": "hang"}),
        (NONE, {"reset": True}, {"failure": "reset"}),
        ({"body_bytes": 1000}, {"body_bytes": 2000}, {"body_bytes": 2000}),
        ({"body_bytes": 1000}, NONE, {"body_bytes": 1000}),
        ({"malformed": "json"}, {"malformed": "truncated"}, {"malformed": "truncated"}),
        ({"wrong_content": True}, NONE, {"body_outcome": "wrong_content"}),
    ],
    ids=[
        "nothing",
        "latencies-add",
        "all-fails-first",
        "own-status-when-all-passes",
        "errors-beat-body-faults",
        "hang-beats-reset",
        "own-reset",
        "own-body-size-wins",
        "all-body-size-inherited",
        "own-malformed-wins",
        "all-wrong-content-inherited",
    ],
)
def test_all_and_component_faults_combine_as_two_layers(
    shared: dict[str, Any], own: dict[str, Any], expected: dict[str, Any]
) -> None:
    plan = plan_request(
        FaultSpec(**own) if own else None, FaultSpec(**shared) if shared else None, random.Random(1)
    )
    seen = {
        "failure": plan.failure,
        "status": plan.status,
        "delay_s": round(plan.delay_s, 6),
        "body_bytes": plan.body.body_bytes,
        "malformed": plan.body.malformed,
        "body_outcome": plan.body.outcome,
    }
    assert {key: seen[key] for key in expected} == expected


def test_error_rates_of_all_and_a_component_fail_independently() -> None:
    rng, own, shared = random.Random(3), FaultSpec(error_rate=0.5), FaultSpec(error_rate=0.2)
    failed = sum(plan_request(own, shared, rng).failure is not None for _ in range(10_000))
    assert 5700 <= failed <= 6300  # 1 - 0.8 * 0.5 = 60%


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


def in_share(names: list[str], share: float) -> set[str]:
    """The names whose shard falls in the failing share."""
    return {name for name in names if shard_share(name) < share}


async def status_of(
    client: aiohttp.ClientSession, sim: RunningSim, component: str, headers: dict[str, str]
) -> int:
    """The status of one request of `component` (the login's own for login) as `headers`' user."""
    method, path = ENDPOINT_OF[component]
    async with client.request(method, sim.url + path, headers=headers, json={"text": "hi"}) as r:
        return r.status


ENDPOINT_OF = {
    "api": ("POST", "/api/v1/posts"),
    "timeline": ("GET", TIMELINE),
    "notifications": ("GET", NOTIFICATIONS),
}


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


HIT = account_name(2)  # share 0.106
SPARED = account_name(1)  # share 0.508


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


# --- the write path -----------------------------------------------------------------------

POSTS = "/api/v1/posts"


async def publish(
    client: aiohttp.ClientSession, sim: RunningSim, headers: dict[str, str], path: str, text: str
) -> dict[str, Any]:
    """POST a post or a reply; its JSON (the status must be 201)."""
    async with client.post(sim.url + path, json={"text": text}, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def timeline_ids(
    client: aiohttp.ClientSession, sim: RunningSim, headers: dict[str, str]
) -> list[str]:
    async with client.get(f"{sim.url}{TIMELINE}?limit=100", headers=headers) as resp:
        assert resp.status == 200
        return [post["id"] for post in (await resp.json())["posts"]]


async def notification_items(
    client: aiohttp.ClientSession, sim: RunningSim, headers: dict[str, str]
) -> Any:
    async with client.get(sim.url + NOTIFICATIONS, headers=headers) as resp:
        assert resp.status == 200
        return await resp.json()


async def post_status(
    client: aiohttp.ClientSession, sim: RunningSim, headers: dict[str, str], post_id: str
) -> int:
    async with client.get(f"{sim.url}{POSTS}/{post_id}", headers=headers) as resp:
        return resp.status


async def test_a_reply_reaches_the_authors_notifications_and_the_timeline(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    alice, bob = await login(client, sim, "user-0001"), await login(client, sim, "user-0002")
    post = await publish(client, sim, alice, POSTS, "who is on call?")
    reply = await publish(client, sim, bob, f"{POSTS}/{post['id']}/replies", "me")
    assert reply["in_reply_to"] == post["id"]
    assert (reply["author"], reply["text"]) == ("user-0002", "me")
    assert "in_reply_to" not in post
    assert (await timeline_ids(client, sim, bob))[:2] == [reply["id"], post["id"]]
    async with client.get(f"{sim.url}{POSTS}/{reply['id']}", headers=alice) as resp:
        assert (resp.status, await resp.json()) == (200, reply)
    inbox = await notification_items(client, sim, alice)
    assert inbox["items"][0] == {
        "id": f"n{reply['id']}",
        "type": "reply",
        "account": "user-0002",
        "status_id": reply["id"],
        "in_reply_to": post["id"],
        "created_at": reply["created_at"],
        "read": False,
    }
    assert inbox["unread_count"] == sum(1 for item in inbox["items"] if not item["read"])
    # Only the author of the post replied to is notified.
    for headers in (bob, await login(client, sim)):
        items = (await notification_items(client, sim, headers))["items"]
        assert reply["id"] not in {item["status_id"] for item in items}
    assert (await outcomes(client, sim, "api"))["ok"] == 3


async def test_a_reply_to_ones_own_post_notifies_nobody(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    headers = await login(client, sim, "user-0003")
    post = await publish(client, sim, headers, POSTS, "thinking aloud")
    reply = await publish(client, sim, headers, f"{POSTS}/{post['id']}/replies", "still thinking")
    items = (await notification_items(client, sim, headers))["items"]
    assert not [item for item in items if item["type"] == "reply"]
    assert (await timeline_ids(client, sim, headers))[0] == reply["id"]


@pytest.mark.parametrize(
    ("path", "body", "auth", "status"),
    [
        ("/api/v1/posts/999/replies", {"text": "hi"}, True, 404),
        ("/api/v1/posts/{seed}/replies", {"text": ""}, True, 400),
        ("/api/v1/posts/{seed}/replies", {"text": "x" * 501}, True, 400),
        ("/api/v1/posts/{seed}/replies", {"text": "hi", "to": "bob"}, True, 400),
        ("/api/v1/posts/{seed}/replies", {"text": "hi"}, False, 401),
    ],
    ids=["unknown-post", "empty-text", "text-too-long", "extra-field", "no-token"],
)
async def test_bad_replies_are_refused(
    sim: RunningSim,
    client: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
    auth: bool,
    status: int,
) -> None:
    headers = await login(client, sim)
    before = await timeline_ids(client, sim, headers)
    async with client.post(
        sim.url + path.format(seed=before[-1]), json=body, headers=headers if auth else {}
    ) as resp:
        assert resp.status == status
        assert "error" in await resp.json()
    assert await timeline_ids(client, sim, headers) == before  # nothing was stored


async def test_a_post_is_read_by_id_and_an_unknown_id_is_a_404(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    headers = await login(client, sim)
    async with client.get(f"{sim.url}{TIMELINE}?limit=1", headers=headers) as resp:
        newest = (await resp.json())["posts"][0]
    async with client.get(f"{sim.url}{POSTS}/{newest['id']}", headers=headers) as resp:
        assert (resp.status, await resp.json()) == (200, newest)
    assert await post_status(client, sim, headers, "nope") == 404
    async with client.get(f"{sim.url}{POSTS}/{newest['id']}") as resp:
        assert resp.status == 401
    assert (await outcomes(client, sim, "api"))["not_found"] == 1


async def wait_until_visible(
    read: Callable[[], Awaitable[bool]], written_at: float, delay_s: float
) -> None:
    """Read until the write shows; no read may show it before `delay_s` after `written_at`.

    Sound on a loaded machine: the sim stamps the write after `written_at`, so a read that
    shows it was served at least `delay_s` after that.
    """

    async def shown() -> bool:
        visible = await read()
        if visible:
            assert time.monotonic() - written_at >= delay_s
        return visible

    await wait_for(shown, within_s=30.0)


HIDDEN_MS = 600_000  # far longer than any test: the write must still be hidden at the end
SHORT_MS = 500


async def test_propagation_delay_on_timeline_hides_a_post_until_it_has_passed(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    headers = await login(client, sim, "user-0001")
    await put_fault(client, sim, "timeline", {"propagation_delay_ms": HIDDEN_MS})
    hidden = await publish(client, sim, headers, POSTS, "lost in the replica")
    await put_fault(client, sim, "timeline", {"propagation_delay_ms": SHORT_MS})
    written_at = time.monotonic()
    shown = await publish(client, sim, headers, POSTS, "a little late")

    async def in_timeline() -> bool:
        return shown["id"] in await timeline_ids(client, sim, headers)

    await wait_until_visible(in_timeline, written_at, SHORT_MS / 1000)
    assert await post_status(client, sim, headers, shown["id"]) == 200
    assert hidden["id"] not in await timeline_ids(client, sim, headers)
    assert await post_status(client, sim, headers, hidden["id"]) == 404
    # Clearing the fault does not hurry a write already stamped.
    await put_fault(client, sim, "timeline", {})
    assert hidden["id"] not in await timeline_ids(client, sim, headers)


@pytest.mark.parametrize("component", ["notifications", "all"])
async def test_propagation_delay_on_notifications_hides_a_reply_notice_until_it_has_passed(
    sim: RunningSim, client: aiohttp.ClientSession, component: str
) -> None:
    alice, bob = await login(client, sim, "user-0001"), await login(client, sim, "user-0002")
    post = await publish(client, sim, alice, POSTS, "ping")
    await put_fault(client, sim, component, {"propagation_delay_ms": HIDDEN_MS})
    hidden = await publish(client, sim, bob, f"{POSTS}/{post['id']}/replies", "pong 1")
    await put_fault(client, sim, component, {"propagation_delay_ms": SHORT_MS})
    written_at = time.monotonic()
    shown = await publish(client, sim, bob, f"{POSTS}/{post['id']}/replies", "pong 2")

    async def noticed() -> bool:
        items = (await notification_items(client, sim, alice))["items"]
        return shown["id"] in {item["status_id"] for item in items}

    await wait_until_visible(noticed, written_at, SHORT_MS / 1000)
    items = (await notification_items(client, sim, alice))["items"]
    assert hidden["id"] not in {item["status_id"] for item in items}
    # On notifications alone, the timeline shows the replies at once; `all` delays both.
    in_timeline = hidden["id"] in await timeline_ids(client, sim, bob)
    assert in_timeline is (component == "notifications")


async def test_account_scoped_propagation_delay_lags_only_the_share(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    lagging, prompt = await login(client, sim, HIT), await login(client, sim, SPARED)
    spec = {"propagation_delay_ms": HIDDEN_MS, "accounts": 0.3}
    await put_fault(client, sim, "timeline", spec)
    late = await publish(client, sim, lagging, POSTS, "from the pulled rack")
    on_time = await publish(client, sim, prompt, POSTS, "from a healthy rack")
    ids = await timeline_ids(client, sim, prompt)
    assert on_time["id"] in ids
    assert late["id"] not in ids


@pytest.mark.parametrize("component", ["api", "login"])
async def test_propagation_delay_is_refused_where_writes_do_not_show(
    sim: RunningSim, client: aiohttp.ClientSession, component: str
) -> None:
    url = f"{sim.url}/-/faults/{component}"
    async with client.put(url, json={"propagation_delay_ms": 100}) as resp:
        assert resp.status == 400
        assert (
            "propagation_delay_ms: only on timeline, notifications, all"
            in (await resp.json())["error"]
        )


# --- admin API ---------------------------------------------------------------------------


async def test_faults_can_be_set_read_and_cleared(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    await put_fault(client, sim, "notifications", {"status": 503})
    await put_fault(client, sim, "all", {"latency_ms": 5})
    faults = (await get_json(client, f"{sim.url}/-/faults"))["faults"]
    assert faults == {"notifications": {"status": 503}, "all": {"latency_ms": 5.0}}
    async with client.delete(f"{sim.url}/-/faults/notifications") as resp:
        assert (await resp.json())["faults"] == {"all": {"latency_ms": 5.0}}
    async with client.delete(f"{sim.url}/-/faults") as resp:
        assert resp.status == 200
    assert (await get_json(client, f"{sim.url}/-/faults"))["faults"] == {}


async def test_putting_an_empty_fault_clears_it(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    await put_fault(client, sim, "login", {"status": 503})
    await put_fault(client, sim, "login", {})
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


# --- command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["notifications:status=503"], {"notifications": FaultSpec(status=503)}),
        (
            ["all:latency_ms=50,latency_jitter_ms=10"],
            {"all": FaultSpec(latency_ms=50, latency_jitter_ms=10)},
        ),
        (["timeline:hang"], {"timeline": FaultSpec(hang=True)}),
        (["login:malformed=truncated"], {"login": FaultSpec(malformed="truncated")}),
        (
            ["login:error_rate=0.2", "login:status=503"],
            {"login": FaultSpec(error_rate=0.2, status=503)},
        ),
        (["timeline:status=503,accounts=0.3"], {"timeline": FaultSpec(status=503, accounts=0.3)}),
        (["all:hang,accounts=1"], {"all": FaultSpec(hang=True, accounts=1.0)}),
        (
            ["notifications:propagation_delay_ms=20000"],
            {"notifications": FaultSpec(propagation_delay_ms=20000)},
        ),
    ],
    ids=[
        "status",
        "latency",
        "bare-flag",
        "malformed-mode",
        "repeated-merge",
        "accounts",
        "all-accounts",
        "propagation",
    ],
)
def test_fault_arguments_parse(args: list[str], expected: dict[str, FaultSpec]) -> None:
    assert parse_fault_args(args) == expected


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("status=503", "expected COMPONENT:KEY=VALUE"),
        ("search:status=503", "unknown component 'search'"),
        ("login:status=abc", "--fault login: status:"),
        ("login:error_rate=1.5", "error_rate:"),
        ("login:", "expected COMPONENT:KEY=VALUE"),
        ("login:=3", "empty key"),
        ("login:colour=red", "colour: unknown key"),
        ("timeline:status=503,accounts=0", "--fault timeline: accounts: Input should be greater"),
        ("timeline:accounts=30%", "accounts: Input should be a valid number"),
        ("api:propagation_delay_ms=100", "--fault api: propagation_delay_ms: only on timeline"),
    ],
    ids=[
        "no-component",
        "unknown-component",
        "bad-int",
        "rate",
        "no-fields",
        "empty-key",
        "key",
        "no-accounts",
        "accounts-percent",
        "propagation-on-api",
    ],
)
def test_bad_fault_arguments_are_refused(arg: str, message: str) -> None:
    with pytest.raises(FaultError, match=message.replace("(", r"\(")):
        parse_fault_args([arg])


def _sim_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fault", "login:colour=red"], "colour: unknown key"),
        (["--scenario", "no-such-outage"], "unknown scenario 'no-such-outage'"),
        (["--listen", "localhost"], "bad --listen"),
        (["--user", "alice"], "bad --user"),
        (["--speed", "0"], "speed:"),
        (["--accounts", "-1"], "accounts: Input should be greater than or equal to 0"),
        (["--accounts-password", ""], "accounts_password: String should have at least 1"),
        (["--fault", "login:propagation_delay_ms=5"], "propagation_delay_ms: only on"),
    ],
    ids=["fault", "scenario", "listen", "user", "speed", "accounts", "password", "propagation"],
)
def test_run_sim_rejects_bad_arguments_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run_sim(_sim_args(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("prober sim: ")
    assert message in err
    assert err.count("\n") == 1


async def test_sim_command_serves_until_sigint(client: aiohttp.ClientSession) -> None:
    code = (
        "import argparse, sys\n"
        "from prober.sim.server import add_sim_arguments, run_sim\n"
        "p = argparse.ArgumentParser(); add_sim_arguments(p)\n"
        "sys.exit(run_sim(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--listen", "127.0.0.1:0", "--latency-ms", "0",
        "--fault", "notifications:status=503", "--fault", "timeline:status=502,accounts=0.3",
        "--accounts", "3", "--accounts-password", "Rack-Pa55-7f2c",
        stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert f"demo user {DEMO_USER} / {DEMO_PASSWORD}" in line
        assert "accounts user-0001..user-0003" in line
        assert "Rack-Pa55-7f2c" not in line  # a chosen password is never printed
        url = line.split("serving ")[1].split()[0]
        async with client.get(url + NOTIFICATIONS) as resp:
            assert resp.status == 503
        assert (await get_json(client, f"{url}/-/accounts"))["accounts"] == 3
        creds = {"username": "user-0002", "password": "Rack-Pa55-7f2c"}
        async with client.post(f"{url}/api/v1/login", json=creds) as resp:
            token = (await resp.json())["access_token"]
        async with client.get(url + TIMELINE, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 502  # user-0002's shard (0.106) is in the 30%
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
