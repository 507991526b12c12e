"""Login sessions shared across runs and checks: extracted variables cached until they expire."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedLogin:
    variables: dict[str, str]
    expires_at: float


# Logins kept at most (pooled flows keep one per account): the oldest go first.
MAX_LOGINS = 10_000


def session_name(key: str) -> str:
    """The configured session name of a key: `demo@user-0001` (a pool's account) -> `demo`."""
    return key.split("@", 1)[0]


class SessionStore:
    """Daemon-owned cache of login results, keyed by session name (and account, in pools).

    The lock per session makes concurrent checks of one session log in once, not N times.
    Event counts are kept per configured session name, so a pool adds no label values.
    """

    def __init__(self) -> None:
        self._logins: dict[str, CachedLogin] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.events: Counter[tuple[str, str]] = Counter()

    def lock(self, session: str) -> asyncio.Lock:
        return self._locks.setdefault(session, asyncio.Lock())

    def get(self, session: str) -> CachedLogin | None:
        cached = self._logins.get(session)
        if cached is None:
            return None
        if cached.expires_at <= time.monotonic():
            del self._logins[session]
            self.events[(session_name(session), "expired")] += 1
            return None
        return cached

    def put(self, session: str, variables: dict[str, str], ttl: float) -> None:
        self._logins.pop(session, None)
        while len(self._logins) >= MAX_LOGINS:
            oldest = next(iter(self._logins))
            del self._logins[oldest]
            self._locks.pop(oldest, None)
        self._logins[session] = CachedLogin(dict(variables), time.monotonic() + ttl)

    def invalidate(self, session: str) -> None:
        self._logins.pop(session, None)

    def record(self, session: str, result: str) -> None:
        """Count a session event: success/failure of a login, reused, expired, rejected."""
        self.events[(session_name(session), result)] += 1

    def forget_unused(self, sessions: set[str]) -> None:
        """Drop sessions no check names any more (after a reload): logins, locks, counts."""
        for name in list(self._logins):
            if session_name(name) not in sessions:
                del self._logins[name]
        for name in list(self._locks):
            if session_name(name) not in sessions and not self._locks[name].locked():
                del self._locks[name]
        for key in list(self.events):
            if key[0] not in sessions:
                del self.events[key]
