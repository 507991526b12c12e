"""The simulated social platform: its JSON API, per-component faults and the `/-/` admin API.

Every platform endpoint belongs to one component (api, login, timeline, notifications). A
request first draws its fault plan, then is answered (or not) as the plan says, and its
outcome is counted so tests can compare what the prober saw with what the platform did.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prober.sim.faults import (
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
    reset_connection,
    send_body,
)
from prober.sim.scenarios import ScenarioError, ScenarioRunner, load_scenario

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # a documented demo credential, not a secret
_TOKEN_CAPACITY = 100_000
_POST_CAPACITY = 200
_MAX_TIMELINE_LIMIT = 100
_DEFAULT_TIMELINE_LIMIT = 20
_NOTIFICATION_COUNT = 8
_UNREAD_COUNT = 3


class SimOptions(BaseModel):
    """How the simulated platform starts: users, token lifetime, base latency, initial faults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: dict[str, str] = Field(default_factory=lambda: {DEMO_USER: DEMO_PASSWORD})
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
        return {parse_component(name).value: spec for name, spec in faults.items()}


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


class Stats:
    """Requests served per component and outcome, for `GET /-/stats`."""

    def __init__(self) -> None:
        self._counts: dict[Component, Counter[Outcome]] = {
            c: Counter() for c in PLATFORM_COMPONENTS
        }

    def count(self, component: Component, outcome: Outcome) -> None:
        self._counts[component][outcome] += 1

    def reset(self) -> None:
        for counter in self._counts.values():
            counter.clear()

    def snapshot(self) -> dict[str, Any]:
        """Every component and every outcome, zeros included, so readers need no defaults."""
        components = {
            c.value: {
                "total": counter.total(),
                "outcomes": {o.value: counter[o] for o in Outcome},
            }
            for c, counter in self._counts.items()
        }
        return {"total": sum(c["total"] for c in components.values()), "components": components}


@dataclass(frozen=True, slots=True)
class Post:
    """One post on the platform."""

    id: str
    author: str
    text: str
    created_at: str

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "author": self.author,
            "text": self.text,
            "created_at": self.created_at,
        }


_SEED_TEXTS = (
    ("alice", "Morning! Coffee first, then the on-call handover."),
    ("bob", "Deployed the new timeline cache, p99 looks happier."),
    ("carol", "Does anyone else get a blank notifications tab?"),
    ("dave", "Reminder: the status page is not a monitoring system."),
    ("erin", "Rate limits doubled for the holidays, enjoy."),
    ("alice", "Lunch. Pager stays on the desk this time."),
    ("bob", "Canary checks green across all regions."),
    ("carol", "Writing a runbook is a gift to your 3 a.m. self."),
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class SimState:
    """Everything one simulated platform owns at run time; one per app, none global."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.faults = FaultTable(options.faults)
        self.stats = Stats()
        self.tokens = TokenStore(options.token_ttl_s)
        self.runner = ScenarioRunner(self.faults.replace)
        self.closing = asyncio.Event()
        self.started = time.monotonic()
        self._post_ids = itertools.count(100_001)
        self.posts: deque[Post] = deque(maxlen=_POST_CAPACITY)
        now = datetime.now(UTC)
        for minutes, (author, text) in reversed(list(enumerate(_SEED_TEXTS * 3))):
            self.add_post(author, text, now - timedelta(minutes=7 * minutes))

    def add_post(self, author: str, text: str, moment: datetime | None = None) -> Post:
        """Publish a post; the oldest drop off once the store is full."""
        post = Post(str(next(self._post_ids)), author, text, _iso(moment or datetime.now(UTC)))
        self.posts.appendleft(post)
        return post

    def base_delay_s(self) -> float:
        """The platform's normal latency; no RNG call when it is off, so benchmarks stay cheap."""
        latency, jitter = self.options.latency_ms, self.options.latency_jitter_ms
        if jitter > 0:
            latency += self.rng.uniform(0.0, jitter)
        return latency / 1000.0


SIM_STATE = web.AppKey("sim_state", SimState)
Endpoint = Callable[[web.Request, SimState], Awaitable[Reply]]
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
    known = state.options.users.get(creds.username)
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


async def create_post(request: web.Request, state: SimState) -> Reply:
    """Publish a post as the token's user."""
    user = state.tokens.user_for(request.headers.get("Authorization"))
    try:
        new = _NewPost.model_validate(await _read_json(request))
    except ValidationError as exc:
        raise _bad_request("; ".join(describe_validation_error(exc))) from None
    return Reply(state.add_post(user, new.text).to_json(), status=201)


def _timeline_limit(request: web.Request) -> int:
    """The `limit` query parameter, 1..100, default 20."""
    raw = request.query.get("limit", str(_DEFAULT_TIMELINE_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_TIMELINE_LIMIT:
        raise _bad_request(f"limit must be an integer from 1 to {_MAX_TIMELINE_LIMIT}")
    return int(raw)


async def home_timeline(request: web.Request, state: SimState) -> Reply:
    """The newest posts, newest first."""
    state.tokens.user_for(request.headers.get("Authorization"))
    limit = _timeline_limit(request)
    return Reply({"posts": [post.to_json() for post in itertools.islice(state.posts, limit)]})


async def notifications(request: web.Request, state: SimState) -> Reply:
    """Recent activity of others, the first few unread."""
    user = state.tokens.user_for(request.headers.get("Authorization"))
    kinds = ("mention", "favourite", "reblog", "follow")
    others = (post for post in state.posts if post.author != user)
    items = [
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
    unread = sum(1 for item in items if not item["read"])
    return Reply({"items": items, "unread_count": unread})


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


def platform_route(component: Component, endpoint: Endpoint) -> Handler:
    """Wrap an endpoint so its component's faults, latency and stats apply to every request."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[SIM_STATE]
        plan = state.faults.plan(component, state.rng)
        reply = None if plan.failure else await _answer(endpoint, request, state)
        shaped = reply is not None and reply.status < 300 and plan.body.outcome is not Outcome.OK
        if reply is None:
            state.stats.count(component, plan.failure or Outcome.ERROR_STATUS)
        else:
            state.stats.count(component, plan.body.outcome if shaped else reply.outcome)
        delay = state.base_delay_s() + plan.delay_s
        if delay > 0:
            await pause(delay, state.closing)
        if reply is None:
            return await _send_failure(request, plan, state)
        if shaped:
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
        spec = parse_fault_spec(data, component.value)
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
    router.add_get("/api/v1/health", platform_route(Component.API, health))
    router.add_get("/api/v1/status", platform_route(Component.API, status))
    router.add_post("/api/v1/posts", platform_route(Component.API, create_post))
    router.add_post("/api/v1/login", platform_route(Component.LOGIN, login))
    router.add_get("/api/v1/timeline/home", platform_route(Component.TIMELINE, home_timeline))
    router.add_get("/api/v1/notifications", platform_route(Component.NOTIFICATIONS, notifications))


def _add_admin_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/-/healthy", healthy)
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
