"""The simulated social platform: its JSON API, per-component faults and the `/-/` admin API.

Every platform endpoint belongs to one component (api, login, timeline, notifications). A
request first names its account (the login's username, the token's user, or none), then draws
its fault plan for that account, then is answered (or not) as the plan says, and its outcome
is counted so tests can compare what the prober saw with what the platform did.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prober.sim.accounts import MAX_ACCOUNTS, AccountTally, Population
from prober.sim.faults import (
    INJECTED_OUTCOMES,
    PLATFORM_COMPONENTS,
    Component,
    FaultError,
    FaultSpec,
    FaultTable,
    Outcome,
    Plan,
    describe_validation_error,
    hang,
    parse_component,
    parse_fault_spec,
    pause,
    refuse_misplaced_fields,
    reset_connection,
    send_body,
)
from prober.sim.posts import Inbox, Notice, Post, PostStore
from prober.sim.scenarios import ScenarioError, ScenarioRunner, load_scenario

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # a documented demo credential, not a secret
_TOKEN_CAPACITY = 100_000
_POST_CAPACITY = 1000
_NOTICES_PER_ACCOUNT = 50
_NOTICE_RECIPIENTS = 10_000
# Distinct accounts counted per component in the stats; beyond it the counts are lower bounds.
_TALLY_CAPACITY = 10_000
_MAX_TIMELINE_LIMIT = 100
_DEFAULT_TIMELINE_LIMIT = 20
_NOTIFICATION_COUNT = 8
_UNREAD_COUNT = 3


class SimOptions(BaseModel):
    """How the simulated platform starts: users, token lifetime, base latency, initial faults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: dict[str, str] = Field(default_factory=lambda: {DEMO_USER: DEMO_PASSWORD})
    # The population `user-0001` ... besides `users` (a name in both takes its `users` password).
    accounts: int = Field(default=100, ge=0, le=MAX_ACCOUNTS)
    accounts_password: str = Field(default=DEMO_PASSWORD, min_length=1, repr=False)
    token_ttl_s: float = Field(default=3600.0, gt=0.0)
    latency_ms: float = Field(default=2.0, ge=0.0)
    latency_jitter_ms: float = Field(default=3.0, ge=0.0)
    seed: int | None = None
    faults: dict[str, FaultSpec] = Field(default_factory=dict)
    scenario: str | None = None
    speed: float = Field(default=1.0, gt=0.0)

    @field_validator("faults")
    @classmethod
    def _known_components(cls, faults: dict[str, FaultSpec]) -> dict[str, FaultSpec]:
        """Fault keys must name a component (or `all`), caught at start rather than per request."""
        checked = {}
        for name, spec in faults.items():
            component = parse_component(name)
            refuse_misplaced_fields(component, spec)
            checked[component.value] = spec
        return checked


class _Rejected(Exception):
    """An endpoint refuses the request (401, 400); carries the reply to send instead."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.payload.get("message", ""))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Reply:
    """An endpoint's answer before faults shape it."""

    payload: dict[str, Any]
    status: int = 200
    outcome: Outcome = Outcome.OK
    headers: Mapping[str, str] = field(default_factory=dict)


def _unauthorized(message: str) -> _Rejected:
    """A 401 with the RFC 6750 challenge, so clients know to (re)authenticate."""
    challenge = f'Bearer error="invalid_token", error_description="{message}"'
    payload = {"error": "unauthorized", "message": message}
    return _Rejected(Reply(payload, 401, Outcome.UNAUTHORIZED, {"WWW-Authenticate": challenge}))


def _bad_request(message: str) -> _Rejected:
    return _Rejected(Reply({"error": "bad_request", "message": message}, 400, Outcome.BAD_REQUEST))


class TokenStore:
    """Bearer tokens with one TTL; bounded, and since the TTL is shared, oldest expires first."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    def issue(self, username: str) -> str:
        """A new token for `username`, valid for the TTL."""
        now = self._clock()
        self._evict(now)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (username, now + self._ttl_s)
        return token

    def peek(self, header: str | None) -> str | None:
        """The user behind a valid `Authorization` header, or None (the endpoint says why)."""
        try:
            return self.user_for(header)
        except _Rejected:
            return None

    def user_for(self, header: str | None) -> str:
        """The user behind an `Authorization: Bearer` header, or raise a 401."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("missing bearer token")
        entry = self._tokens.get(token.strip())
        if entry is None:
            raise _unauthorized("unknown token")
        if entry[1] <= self._clock():
            raise _unauthorized("token expired")
        return entry[0]

    def _evict(self, now: float) -> None:
        """Drop expired tokens from the front, then the oldest if still full."""
        while self._tokens:
            oldest = next(iter(self._tokens))
            if self._tokens[oldest][1] > now and len(self._tokens) < _TOKEN_CAPACITY:
                return
            del self._tokens[oldest]


@dataclass(slots=True)
class _ComponentStats:
    """One component's counts: outcomes, and the distinct accounts served and hit by a fault."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)
    seen: AccountTally = field(default_factory=lambda: AccountTally(_TALLY_CAPACITY))
    hit: AccountTally = field(default_factory=lambda: AccountTally(_TALLY_CAPACITY))

    def snapshot(self) -> dict[str, Any]:
        """Every outcome, zeros included, so readers need no defaults."""
        return {
            "total": self.outcomes.total(),
            "outcomes": {o.value: self.outcomes[o] for o in Outcome},
            "accounts": {
                "seen": len(self.seen),
                "hit": len(self.hit),
                "capped": self.seen.capped or self.hit.capped,
            },
        }


class Stats:
    """Requests served per component and outcome, and accounts per component: `GET /-/stats`."""

    def __init__(self) -> None:
        self._components = {c: _ComponentStats() for c in PLATFORM_COMPONENTS}

    def count(self, component: Component, outcome: Outcome, account: str | None = None) -> None:
        """Count one request; `account` is a known user's name or None."""
        stats = self._components[component]
        stats.outcomes[outcome] += 1
        if account is not None:
            stats.seen.add(account)
            if outcome in INJECTED_OUTCOMES:
                stats.hit.add(account)

    def reset(self) -> None:
        self._components = {c: _ComponentStats() for c in PLATFORM_COMPONENTS}

    def snapshot(self) -> dict[str, Any]:
        """Every component and every outcome, zeros included, so readers need no defaults."""
        components = {c.value: stats.snapshot() for c, stats in self._components.items()}
        return {"total": sum(c["total"] for c in components.values()), "components": components}


class SimState:
    """Everything one simulated platform owns at run time; one per app, none global."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.population = Population(options.accounts, options.accounts_password)
        self.rng = random.Random(options.seed)
        self.faults = FaultTable(options.faults)
        self.stats = Stats()
        self.tokens = TokenStore(options.token_ttl_s)
        self.runner = ScenarioRunner(self.faults.replace)
        self.closing = asyncio.Event()
        self.started = time.monotonic()
        self.posts = PostStore(_POST_CAPACITY)
        self.inbox = Inbox(_NOTICES_PER_ACCOUNT, _NOTICE_RECIPIENTS)

    def password_of(self, username: str) -> str | None:
        """The password of a configured user or of one of the population, else None."""
        known = self.options.users.get(username)
        return known if known is not None else self.population.password_for(username)

    def knows(self, username: str | None) -> bool:
        """True for a name that can log in, the only names the stats remember."""
        return username is not None and self.password_of(username) is not None

    def publish(self, author: str, text: str, parent: Post | None = None) -> Post:
        """Store a post (a reply when `parent` is given), visible once the timeline catches up.

        A reply to another account's post notifies that account, once its own notifications
        catch up: each lag is the propagation fault that hits the account whose data it is.
        """
        now = time.monotonic()
        lag = self.faults.propagation_delay_s(Component.TIMELINE, author)
        in_reply_to = parent.id if parent is not None else None
        post = self.posts.add(author, text, in_reply_to=in_reply_to, visible_at=now + lag)
        if parent is not None and parent.author != author:
            lag = self.faults.propagation_delay_s(Component.NOTIFICATIONS, parent.author)
            self.inbox.deliver(parent.author, Notice(post, now + lag))
        return post

    def base_delay_s(self) -> float:
        """The platform's normal latency; no RNG call when it is off, so benchmarks stay cheap."""
        latency, jitter = self.options.latency_ms, self.options.latency_jitter_ms
        if jitter > 0:
            latency += self.rng.uniform(0.0, jitter)
        return latency / 1000.0


SIM_STATE = web.AppKey("sim_state", SimState)
Endpoint = Callable[[web.Request, SimState], Awaitable[Reply]]
AccountOf = Callable[[web.Request, SimState], Awaitable[str | None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _read_json(request: web.Request) -> Any:
    """The request's JSON body, or raise a 400 saying why not."""
    try:
        return await request.json()
    except ValueError:
        raise _bad_request("body is not valid JSON") from None


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
        raise _bad_request("; ".join(describe_validation_error(exc))) from None
    known = state.password_of(creds.username)
    if known is None or not hmac.compare_digest(known.encode(), creds.password.encode()):
        raise _Rejected(
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


def _not_found(message: str) -> _Rejected:
    return _Rejected(Reply({"error": "not_found", "message": message}, 404, Outcome.NOT_FOUND))


async def _new_post_text(request: web.Request) -> str:
    """The `text` of a post or reply body, or raise a 400 saying why not."""
    try:
        return _NewPost.model_validate(await _read_json(request)).text
    except ValidationError as exc:
        raise _bad_request("; ".join(describe_validation_error(exc))) from None


def _visible_post(request: web.Request, state: SimState) -> Post:
    """The post named in the path, if stored and already visible, or raise a 404."""
    post = state.posts.get(request.match_info["post_id"], time.monotonic())
    if post is None:
        raise _not_found("no such post (unknown, or not visible yet)")
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
        raise _bad_request(f"limit must be an integer from 1 to {_MAX_TIMELINE_LIMIT}")
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
    except _Rejected as rejected:
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


def _admin_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def get_faults(request: web.Request) -> web.Response:
    """The injected faults, per component."""
    components = [c.value for c in Component]
    return web.json_response(
        {"faults": request.app[SIM_STATE].faults.snapshot(), "components": components}
    )


async def put_fault(request: web.Request) -> web.Response:
    """Replace one component's fault with the JSON body (an empty object clears it)."""
    state = request.app[SIM_STATE]
    try:
        component = parse_component(request.match_info["component"])
    except FaultError as exc:
        return _admin_error(404, str(exc))
    try:
        data = await request.json()
    except ValueError:
        return _admin_error(400, "body is not valid JSON")
    try:
        spec = parse_fault_spec(data, component.value, component)
    except FaultError as exc:
        return _admin_error(400, str(exc))
    state.faults.set(component, spec)
    return web.json_response(
        {"component": component.value, "fault": spec.model_dump(exclude_defaults=True)}
    )


async def delete_fault(request: web.Request) -> web.Response:
    """Clear one component's fault."""
    try:
        component = parse_component(request.match_info["component"])
    except FaultError as exc:
        return _admin_error(404, str(exc))
    request.app[SIM_STATE].faults.clear(component)
    return web.json_response({"faults": request.app[SIM_STATE].faults.snapshot()})


async def delete_faults(request: web.Request) -> web.Response:
    """Clear every fault."""
    request.app[SIM_STATE].faults.clear()
    return web.json_response({"faults": {}})


async def get_accounts(request: web.Request) -> web.Response:
    """The population: how many accounts, the first names and the pattern of the rest."""
    return web.json_response(request.app[SIM_STATE].population.describe())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].stats.snapshot())


async def delete_stats(request: web.Request) -> web.Response:
    request.app[SIM_STATE].stats.reset()
    return web.json_response(request.app[SIM_STATE].stats.snapshot())


async def healthy(request: web.Request) -> web.Response:
    """Liveness of the simulator itself: never faulted, never counted."""
    return web.json_response({"status": "ok"})


class _ScenarioRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    speed: float = Field(default=1.0, gt=0.0)


async def get_scenario(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].runner.status())


async def start_scenario(request: web.Request) -> web.Response:
    """Start replaying a shipped scenario (or a file the sim can read), replacing any other."""
    state = request.app[SIM_STATE]
    try:
        wanted = _ScenarioRequest.model_validate(await request.json())
    except ValueError as exc:  # ValidationError is a ValueError too
        detail = (
            "; ".join(describe_validation_error(exc))
            if isinstance(exc, ValidationError)
            else "body is not valid JSON"
        )
        return _admin_error(400, detail)
    try:
        scenario = await asyncio.to_thread(load_scenario, wanted.name)
    except ScenarioError as exc:
        return _admin_error(400, str(exc))
    await state.runner.start(scenario, wanted.speed)
    return web.json_response(state.runner.status())


async def stop_scenario(request: web.Request) -> web.Response:
    """Stop the replay and clear every fault, back to a healthy platform."""
    state = request.app[SIM_STATE]
    await state.runner.stop()
    state.faults.clear()
    return web.json_response(state.runner.status())


def _add_platform_routes(app: web.Application) -> None:
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


def _add_admin_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/-/healthy", healthy)
    router.add_get("/-/accounts", get_accounts)
    router.add_get("/-/faults", get_faults)
    router.add_delete("/-/faults", delete_faults)
    router.add_put("/-/faults/{component}", put_fault)
    router.add_delete("/-/faults/{component}", delete_fault)
    router.add_get("/-/stats", get_stats)
    router.add_delete("/-/stats", delete_stats)
    router.add_get("/-/scenario", get_scenario)
    router.add_post("/-/scenario", start_scenario)
    router.add_delete("/-/scenario", stop_scenario)


def create_app(options: SimOptions | None = None) -> web.Application:
    """Build the simulated platform; a bad `options.scenario` raises ScenarioError here."""
    options = options or SimOptions()
    scenario = load_scenario(options.scenario) if options.scenario else None
    state = SimState(options)
    app = web.Application()
    app[SIM_STATE] = state
    _add_platform_routes(app)
    _add_admin_routes(app)

    async def start_replay(app: web.Application) -> None:
        if scenario is not None:
            await state.runner.start(scenario, options.speed)

    async def release_waiters(app: web.Application) -> None:
        # Hung and slow responses wait on this, so shutdown never waits for them.
        state.closing.set()

    async def stop_replay(app: web.Application) -> None:
        await state.runner.stop()

    app.on_startup.append(start_replay)
    app.on_shutdown.append(release_waiters)
    app.on_cleanup.append(stop_replay)
    return app
