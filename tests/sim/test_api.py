"""The platform API (login, timeline, notifications), over real HTTP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from prober.sim import DEMO_PASSWORD, DEMO_USER, RunningSim
from tests.support.sim import NOTIFICATIONS, TIMELINE, StartSim, login, wait_for

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
