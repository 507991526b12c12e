"""The platform's own endpoints (api, login, timeline, notifications), each wrapped so its
component's faults, latency and counts apply to every request.

A request first names its account (the login's username, the token's user, or none), then
draws its fault plan for that account, then is answered (or not) as the plan says, and its
outcome is counted so tests can compare what the prober saw with what the platform did.
"""

from __future__ import annotations

import hmac
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prober.sim.faults import (
    Component,
    Outcome,
    Plan,
    describe_validation_error,
    hang,
    pause,
    reset_connection,
    send_body,
)
from prober.sim.posts import Post
from prober.sim.reply import Rejected, Reply, bad_request, not_found
from prober.sim.state import SIM_STATE, SimState
from prober.sim.stream import notification_stream

_MAX_TIMELINE_LIMIT = 100
_DEFAULT_TIMELINE_LIMIT = 20
_NOTIFICATION_COUNT = 8
_UNREAD_COUNT = 3

Endpoint = Callable[[web.Request, SimState], Awaitable[Reply]]
AccountOf = Callable[[web.Request, SimState], Awaitable[str | None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _read_json(request: web.Request) -> Any:
    """The request's JSON body, or raise a 400 saying why not."""
    try:
        return await request.json()
    except ValueError:
        raise bad_request("body is not valid JSON") from None


async def health(request: web.Request, state: SimState) -> Reply:
    """Liveness of the platform's API tier."""
    return Reply({"status": "ok"})


async def status(request: web.Request, state: SimState) -> Reply:
    """A public status document, as platforms publish for clients."""
    uptime = round(time.monotonic() - state.started, 3)
    return Reply({"status": "ok", "version": "sim-1", "uptime_s": uptime})


class _Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    password: str


async def login(request: web.Request, state: SimState) -> Reply:
    """Trade a username and password for a bearer token."""
    try:
        creds = _Credentials.model_validate(await _read_json(request))
    except ValidationError as exc:
        raise bad_request("; ".join(describe_validation_error(exc))) from None
    known = state.password_of(creds.username)
    if known is None or not hmac.compare_digest(known.encode(), creds.password.encode()):
        raise Rejected(
            Reply(
                {"error": "invalid_credentials", "message": "wrong username or password"},
                401,
                Outcome.UNAUTHORIZED,
            )
        )
    token = state.tokens.issue(creds.username)
    return Reply(
        {"access_token": token, "token_type": "bearer", "expires_in": state.options.token_ttl_s}
    )


class _NewPost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=500)


async def _new_post_text(request: web.Request) -> str:
    """The `text` of a post or reply body, or raise a 400 saying why not."""
    try:
        return _NewPost.model_validate(await _read_json(request)).text
    except ValidationError as exc:
        raise bad_request("; ".join(describe_validation_error(exc))) from None


def _visible_post(request: web.Request, state: SimState) -> Post:
    """The post named in the path, if stored and already visible, or raise a 404."""
    post = state.posts.get(request.match_info["post_id"], time.monotonic())
    if post is None:
        raise not_found("no such post (unknown, or not visible yet)")
    return post


async def create_post(request: web.Request, state: SimState) -> Reply:
    """Publish a post as the token's user."""
    user = state.tokens.user_for(request.headers.get("Authorization"))
    text = await _new_post_text(request)
    return Reply(state.publish(user, text).to_json(), status=201)


async def create_reply(request: web.Request, state: SimState) -> Reply:
    """Reply to a visible post as the token's user; its author is notified."""
    user = state.tokens.user_for(request.headers.get("Authorization"))
    text = await _new_post_text(request)
    parent = _visible_post(request, state)
    return Reply(state.publish(user, text, parent).to_json(), status=201)


async def get_post(request: web.Request, state: SimState) -> Reply:
    """One post, once it is visible (it reads the same replicas as the home timeline)."""
    state.tokens.user_for(request.headers.get("Authorization"))
    return Reply(_visible_post(request, state).to_json())


def _timeline_limit(request: web.Request) -> int:
    """The `limit` query parameter, 1..100, default 20."""
    raw = request.query.get("limit", str(_DEFAULT_TIMELINE_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_TIMELINE_LIMIT:
        raise bad_request(f"limit must be an integer from 1 to {_MAX_TIMELINE_LIMIT}")
    return int(raw)


async def home_timeline(request: web.Request, state: SimState) -> Reply:
    """The newest visible posts and replies, newest first."""
    state.tokens.user_for(request.headers.get("Authorization"))
    limit = _timeline_limit(request)
    posts = itertools.islice(state.posts.visible(time.monotonic()), limit)
    return Reply({"posts": [post.to_json() for post in posts]})


async def notifications(request: web.Request, state: SimState) -> Reply:
    """Replies to the user's posts (unread), then recent activity of others, the first unread."""
    user = state.tokens.user_for(request.headers.get("Authorization"))
    replies = state.inbox.visible(user, time.monotonic())[:_NOTIFICATION_COUNT]
    kinds = ("mention", "favourite", "reblog", "follow")
    others = (post for post in state.posts.seeds if post.author != user)
    items = [notice.to_json() for notice in replies]
    items += [
        {
            "id": f"n{post.id}",
            "type": kinds[index % len(kinds)],
            "account": post.author,
            "status_id": post.id,
            "created_at": post.created_at,
            "read": index >= _UNREAD_COUNT,
        }
        for index, post in enumerate(itertools.islice(others, _NOTIFICATION_COUNT))
    ]
    wanted = request.query.get("status_id")
    if wanted is not None:  # one notice, as a client deep-linking to it asks
        items = [item for item in items if item["status_id"] == wanted]
    unread = sum(1 for item in items if not item["read"])
    return Reply({"items": items, "unread_count": unread})


async def no_account(request: web.Request, state: SimState) -> None:
    """Public endpoints serve no account, so account-scoped faults spare them."""
    return None


async def login_account(request: web.Request, state: SimState) -> str | None:
    """The `username` of a login body, or None when it names nobody (the login is a 400)."""
    try:
        data = await request.json()  # aiohttp keeps the body, so the endpoint reads it again
    except ValueError:
        return None
    name = data.get("username") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


async def token_account(request: web.Request, state: SimState) -> str | None:
    """The bearer token's user, or None for a missing, unknown or expired token (a 401)."""
    return state.tokens.peek(request.headers.get("Authorization"))


async def _answer(endpoint: Endpoint, request: web.Request, state: SimState) -> Reply:
    """Run the endpoint, turning its refusals into replies."""
    try:
        return await endpoint(request, state)
    except Rejected as rejected:
        return rejected.reply


def _json_response(reply: Reply) -> web.Response:
    return web.json_response(reply.payload, status=reply.status, headers=reply.headers)


async def _send_failure(request: web.Request, plan: Plan, state: SimState) -> web.StreamResponse:
    """Carry out a hang, a reset or an injected error status."""
    if plan.failure is Outcome.HANG:
        return await hang(request, state.closing)
    if plan.failure is Outcome.RESET:
        reset_connection(request)
        return web.Response(status=502)
    payload = {"error": "injected_fault", "status": plan.status, "message": "injected fault"}
    return web.json_response(payload, status=plan.status)


def _outcome(plan: Plan, reply: Reply | None) -> Outcome:
    """What the platform did: the injected failure, the body fault, or the endpoint's answer."""
    if reply is None:
        return plan.failure or Outcome.ERROR_STATUS
    if _shaped(plan, reply):
        return plan.body.outcome
    return reply.outcome


def _shaped(plan: Plan, reply: Reply) -> bool:
    """Body faults shape successful answers only; a 401 or 400 is sent as is."""
    return reply.status < 300 and plan.body.outcome is not Outcome.OK


def platform_route(
    component: Component, endpoint: Endpoint, account_of: AccountOf = no_account
) -> Handler:
    """Wrap an endpoint so its component's faults, latency and stats apply to every request.

    The account comes first, so that a fault scoped to a share of accounts can spare the rest.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[SIM_STATE]
        account = await account_of(request, state)
        plan = state.faults.plan(component, state.rng, account)
        reply = None if plan.failure else await _answer(endpoint, request, state)
        state.stats.count(
            component, _outcome(plan, reply), account if state.knows(account) else None
        )
        delay = state.base_delay_s() + plan.delay_s
        if delay > 0:
            await pause(delay, state.closing)
        if reply is None:
            return await _send_failure(request, plan, state)
        if _shaped(plan, reply):
            body = json.dumps(reply.payload).encode()
            return await send_body(request, body, plan.body, state.closing)
        return _json_response(reply)

    handle.__name__ = f"{component.value}_{endpoint.__name__}"
    return handle


def add_platform_routes(app: web.Application) -> None:
    """Every platform endpoint, under the component whose faults it suffers."""
    router = app.router
    api, timeline = Component.API, Component.TIMELINE
    router.add_get("/api/v1/health", platform_route(api, health))
    router.add_get("/api/v1/status", platform_route(api, status))
    router.add_post("/api/v1/posts", platform_route(api, create_post, token_account))
    router.add_get("/api/v1/posts/{post_id}", platform_route(api, get_post, token_account))
    router.add_post(
        "/api/v1/posts/{post_id}/replies", platform_route(api, create_reply, token_account)
    )
    router.add_post("/api/v1/login", platform_route(Component.LOGIN, login, login_account))
    router.add_get("/api/v1/timeline/home", platform_route(timeline, home_timeline, token_account))
    router.add_get(
        "/api/v1/notifications",
        platform_route(Component.NOTIFICATIONS, notifications, token_account),
    )
    # A WebSocket, so it draws its faults itself (sim/stream.py) rather than through a Reply.
    router.add_get("/api/v1/notifications/stream", notification_stream)
