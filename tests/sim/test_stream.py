"""The notification stream `GET /api/v1/notifications/stream`, driven by aiohttp's own
WebSocket client (apart from the probe's) over 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from prober.sim import (
    DEMO_API_TOKEN,
    DEMO_PASSWORD,
    DEMO_USER,
    FaultSpec,
    RunningSim,
    SimOptions,
    start_sim,
)

FAST: dict[str, Any] = {"latency_ms": 0.0, "latency_jitter_ms": 0.0, "seed": 13}
STREAM = "/api/v1/notifications/stream"
QUIET = 0.3  # how long a test waits for a message that must not come


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(options=SimOptions(**FAST))
    yield running
    await running.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def login(client: aiohttp.ClientSession, sim: RunningSim, user: str) -> dict[str, str]:
    creds = {"username": user, "password": DEMO_PASSWORD}
    async with client.post(f"{sim.url}/api/v1/login", json=creds) as resp:
        return {"Authorization": f"Bearer {(await resp.json())['access_token']}"}


async def post(
    client: aiohttp.ClientSession, sim: RunningSim, auth: dict[str, str], path: str, text: str
) -> str:
    async with client.post(f"{sim.url}{path}", json={"text": text}, headers=auth) as resp:
        assert resp.status == 201
        post_id: str = (await resp.json())["id"]
    return post_id


async def test_hello_then_one_message_per_reply_to_the_account(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    alice = await login(client, sim, "user-0001")
    bob = await login(client, sim, "user-0002")
    async with client.ws_connect(sim.url + STREAM, headers=alice) as ws:
        assert await ws.receive_json(timeout=5) == {"type": "hello"}
        first = await post(client, sim, alice, "/api/v1/posts", "who is on call?")
        await post(client, sim, alice, f"/api/v1/posts/{first}/replies", "me, myself")  # own
        reply = await post(client, sim, bob, f"/api/v1/posts/{first}/replies", "bob here")
        second = await post(client, sim, bob, f"/api/v1/posts/{first}/replies", "and again")
        messages = [await ws.receive_json(timeout=5) for _ in range(2)]
    assert [m["type"] for m in messages] == ["notification", "notification"]
    notices = [m["notification"] for m in messages]
    assert [n["status_id"] for n in notices] == [reply, second]  # no notice of her own reply
    assert notices[0] == {
        "id": f"n{reply}",
        "type": "reply",
        "account": "user-0002",
        "status_id": reply,
        "in_reply_to": first,
        "created_at": notices[0]["created_at"],
        "read": False,
    }


async def test_a_lagging_notice_waits_until_it_is_visible(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    await client.put(f"{sim.url}/-/faults/notifications", json={"propagation_delay_ms": 60_000})
    alice = await login(client, sim, "user-0001")
    bob = await login(client, sim, "user-0002")
    async with client.ws_connect(sim.url + STREAM, headers=alice) as ws:
        assert await ws.receive_json(timeout=5) == {"type": "hello"}
        first = await post(client, sim, alice, "/api/v1/posts", "anyone?")
        await post(client, sim, bob, f"/api/v1/posts/{first}/replies", "eventually")
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=QUIET)


async def test_missing_token_is_a_401_before_any_upgrade(
    sim: RunningSim, client: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await client.ws_connect(sim.url + STREAM)
    assert raised.value.status == 401
    assert raised.value.headers is not None
    assert raised.value.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_plain_get_is_told_to_upgrade(sim: RunningSim, client: aiohttp.ClientSession) -> None:
    auth = await login(client, sim, DEMO_USER)
    async with client.get(sim.url + STREAM, headers=auth) as resp:
        assert resp.status == 400
        assert (await resp.json())["message"] == "expected a WebSocket upgrade"


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [({"status": 503}, "error_status"), ({"hang": True}, "hang"), ({"reset": True}, "reset")],
    ids=["status", "hang", "reset"],
)
async def test_faults_of_notifications_apply_and_are_counted(
    client: aiohttp.ClientSession, fault: dict[str, Any], outcome: str
) -> None:
    options = SimOptions(**FAST, faults={"notifications": FaultSpec(**fault)})
    sim = await start_sim(options=options)
    try:
        auth = await login(client, sim, DEMO_USER)
        if "status" in fault:
            with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
                await client.ws_connect(sim.url + STREAM, headers=auth)
            assert raised.value.status == 503
        else:
            async with client.ws_connect(sim.url + STREAM, headers=auth) as ws:
                if "hang" in fault:
                    with pytest.raises(TimeoutError):
                        await ws.receive(timeout=QUIET)  # accepted, and silent
                else:
                    message = await ws.receive(timeout=5)
                    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        async with client.get(f"{sim.url}/-/stats") as resp:
            counted = (await resp.json())["components"]["notifications"]
        assert counted["outcomes"][outcome] == 1
        assert counted["accounts"] == {"seen": 1, "hit": 1, "capped": False}
    finally:
        await sim.stop()


async def test_account_scoped_fault_refuses_only_its_share(client: aiohttp.ClientSession) -> None:
    fault = FaultSpec(status=503, accounts=0.3)  # user-0002 is at 0.106, demo at 0.837
    sim = await start_sim(options=SimOptions(**FAST, faults={"notifications": fault}))
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect(sim.url + STREAM, headers=await login(client, sim, "user-0002"))
        auth = await login(client, sim, DEMO_USER)
        async with client.ws_connect(sim.url + STREAM, headers=auth) as ws:
            assert await ws.receive_json(timeout=5) == {"type": "hello"}
    finally:
        await sim.stop()


async def test_the_demo_api_token_opens_the_stream_and_never_expires(
    client: aiohttp.ClientSession,
) -> None:
    sim = await start_sim(options=SimOptions(**FAST, token_ttl_s=0.001))
    auth = {"Authorization": f"Bearer {DEMO_API_TOKEN}"}
    try:
        expired = await login(client, sim, DEMO_USER)
        await asyncio.sleep(0.01)  # past the login token's TTL; the API token has none
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect(sim.url + STREAM, headers=expired)
        async with client.ws_connect(sim.url + STREAM, headers=auth) as ws:
            assert await ws.receive_json(timeout=5) == {"type": "hello"}
    finally:
        await sim.stop()


async def test_shutdown_closes_open_streams_going_away(client: aiohttp.ClientSession) -> None:
    sim = await start_sim(options=SimOptions(**FAST))
    auth = await login(client, sim, DEMO_USER)
    ws = await client.ws_connect(sim.url + STREAM, headers=auth)
    assert await ws.receive_json(timeout=5) == {"type": "hello"}
    await sim.stop()
    message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == 1001
    await ws.close()
