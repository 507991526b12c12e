"""Fault injection per component: status, latency, resets, hangs, bodies."""

from __future__ import annotations

import asyncio
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from prober.sim import RunningSim
from prober.sim.faults import FaultSpec, plan_request
from tests.support.sim import (
    NOTIFICATIONS,
    TIMELINE,
    StartSim,
    get_json,
    login,
    outcomes,
    put_fault,
    wait_for,
)

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
