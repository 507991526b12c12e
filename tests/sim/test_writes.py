"""The write path: posts, fan-out and how long a write takes to become visible."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from prober.sim import RunningSim
from tests.support.sim import (
    HIT,
    NOTIFICATIONS,
    SPARED,
    TIMELINE,
    login,
    outcomes,
    put_fault,
    wait_for,
)

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
