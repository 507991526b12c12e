"""What one simulated platform owns at run time: its options, accounts, tokens, faults,
posts, open notification streams, scenario replay and the counts of what it served."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prober.sim.accounts import MAX_ACCOUNTS, AccountTally, Population
from prober.sim.faults import (
    INJECTED_OUTCOMES,
    PLATFORM_COMPONENTS,
    Component,
    FaultSpec,
    FaultTable,
    Outcome,
    parse_component,
    refuse_misplaced_fields,
)
from prober.sim.feed import NoticeFeed
from prober.sim.posts import Inbox, Notice, Post, PostStore
from prober.sim.reply import Rejected, unauthorized
from prober.sim.scenarios import ScenarioRunner

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"  # a documented demo credential, not a secret
# The demo user's API token, which never expires: for checks that cannot log in first (the
# shipped websocket and grpc checks), as a service account's key would be. Documented too.
DEMO_API_TOKEN = "demo-api-token"
_TOKEN_CAPACITY = 100_000
_POST_CAPACITY = 1000
_NOTICES_PER_ACCOUNT = 50
_NOTICE_RECIPIENTS = 10_000
# Distinct accounts counted per component in the stats; beyond it the counts are lower bounds.
_TALLY_CAPACITY = 10_000


class SimOptions(BaseModel):
    """How the simulated platform starts: users, token lifetime, base latency, initial faults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: dict[str, str] = Field(default_factory=lambda: {DEMO_USER: DEMO_PASSWORD})
    # The population `user-0001` ... besides `users` (a name in both takes its `users` password).
    accounts: int = Field(default=100, ge=0, le=MAX_ACCOUNTS)
    accounts_password: str = Field(default=DEMO_PASSWORD, min_length=1, repr=False)
    token_ttl_s: float = Field(default=3600.0, gt=0.0)
    # Bearer tokens that never expire, token -> user (a user of `users` or the population).
    api_tokens: dict[str, str] = Field(
        default_factory=lambda: {DEMO_API_TOKEN: DEMO_USER}, repr=False
    )
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


class TokenStore:
    """Bearer tokens with one TTL; bounded, and since the TTL is shared, oldest expires first."""

    def __init__(
        self,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        api_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._api_tokens = dict(api_tokens or {})

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
        except Rejected:
            return None

    def user_for(self, header: str | None) -> str:
        """The user behind an `Authorization: Bearer` header, or raise a 401."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("missing bearer token")
        api_user = self._api_tokens.get(token.strip())
        if api_user is not None:
            return api_user
        entry = self._tokens.get(token.strip())
        if entry is None:
            raise unauthorized("unknown token")
        if entry[1] <= self._clock():
            raise unauthorized("token expired")
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
        self.tokens = TokenStore(options.token_ttl_s, api_tokens=options.api_tokens)
        self.runner = ScenarioRunner(self.faults.replace)
        self.closing = asyncio.Event()
        self.started = time.monotonic()
        self.posts = PostStore(_POST_CAPACITY)
        self.inbox = Inbox(_NOTICES_PER_ACCOUNT, _NOTICE_RECIPIENTS)
        self.feed = NoticeFeed()  # the open notification streams (sim/stream.py)

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
            notice = Notice(post, now + lag)
            self.inbox.deliver(parent.author, notice)
            self.feed.push(parent.author, notice)
        return post

    def base_delay_s(self) -> float:
        """The platform's normal latency; no RNG call when it is off, so benchmarks stay cheap."""
        latency, jitter = self.options.latency_ms, self.options.latency_jitter_ms
        if jitter > 0:
            latency += self.rng.uniform(0.0, jitter)
        return latency / 1000.0


SIM_STATE = web.AppKey("sim_state", SimState)
