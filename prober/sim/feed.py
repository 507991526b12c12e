"""Live fan-out of new reply notices to the notification streams that are open, bounded.

`SimState.publish` pushes each notice to its recipient's open streams as it files it in the
inbox; each stream (sim/stream.py) takes them from its own `Subscription`, oldest first.
"""

from __future__ import annotations

import asyncio
from collections import deque

from prober.sim.posts import Notice

# Open streams across all accounts; a stream beyond it is refused (503).
MAX_SUBSCRIPTIONS = 1000
# Notices a stream may fall behind by; past it the oldest unsent ones are dropped.
BACKLOG = 64


class Subscription:
    """One open stream's queue of notices; `next` waits for one, None once the feed closes."""

    def __init__(self, account: str) -> None:
        self.account = account
        self._notices: deque[Notice] = deque(maxlen=BACKLOG)
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, notice: Notice) -> None:
        self._notices.append(notice)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def next(self) -> Notice | None:
        """The oldest notice not yet taken, waiting for one; None when the feed is closing."""
        while not self._notices and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            return None
        return self._notices.popleft()


class NoticeFeed:
    """The open streams by account."""

    def __init__(self) -> None:
        self._streams: dict[str, set[Subscription]] = {}
        self._count = 0
        self._closed = False

    def subscribe(self, account: str) -> Subscription | None:
        """A new stream for `account`; None when the sim is closing or has too many open."""
        if self._closed or self._count >= MAX_SUBSCRIPTIONS:
            return None
        subscription = Subscription(account)
        self._streams.setdefault(account, set()).add(subscription)
        self._count += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        streams = self._streams.get(subscription.account)
        if streams is None or subscription not in streams:
            return
        streams.discard(subscription)
        self._count -= 1
        if not streams:
            del self._streams[subscription.account]

    def push(self, recipient: str, notice: Notice) -> None:
        """Hand `notice` to every open stream of `recipient` (none open: nothing to do)."""
        for subscription in self._streams.get(recipient, ()):
            subscription.offer(notice)

    def close(self) -> None:
        """Shutdown: every stream's `next` returns None, and no new one opens."""
        self._closed = True
        for streams in self._streams.values():
            for subscription in streams:
                subscription.close()
