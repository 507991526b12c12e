"""The simulated platform driven by a real aiohttp client: options, fixtures' helpers and
small requests the tests/sim modules share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from prober.sim import DEMO_PASSWORD, DEMO_USER, RunningSim, account_name, shard_share

FAST: dict[str, Any] = {"latency_ms": 0.0, "latency_jitter_ms": 0.0, "seed": 7}
TIMELINE = "/api/v1/timeline/home"
NOTIFICATIONS = "/api/v1/notifications"
StartSim = Callable[..., Awaitable[RunningSim]]
# Method and path of one request of each component.
ENDPOINT_OF = {
    "api": ("POST", "/api/v1/posts"),
    "timeline": ("GET", TIMELINE),
    "notifications": ("GET", NOTIFICATIONS),
}
# Two accounts, by the share of their shard: HIT falls in a 30% fault, SPARED does not.
HIT = account_name(2)  # share 0.106
SPARED = account_name(1)  # share 0.508


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
