"""What the simulated platform stores: posts, replies and reply notifications, all bounded.

Every write carries the time it becomes visible where it is read (the home timeline and
`GET /api/v1/posts/{id}` for a post, the recipient's notifications for a reply notice), so a
`propagation_delay_ms` fault makes writes lag behind as a lagging replica or fan-out queue
would, and reads simply filter by the clock. Times are `time.monotonic()` seconds.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

_FIRST_POST_ID = 100_001

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
_SEED_REPEATS = 3
_SEED_SPACING = timedelta(minutes=7)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Post:
    """One post, or a reply when `in_reply_to` names its parent; visible from `visible_at` on."""

    id: str
    author: str
    text: str
    created_at: str
    in_reply_to: str | None = None
    visible_at: float = 0.0

    def to_json(self) -> dict[str, str]:
        """The post as the API shows it; only a reply has `in_reply_to`."""
        data = {
            "id": self.id,
            "author": self.author,
            "text": self.text,
            "created_at": self.created_at,
        }
        if self.in_reply_to is not None:
            data["in_reply_to"] = self.in_reply_to
        return data


@dataclass(frozen=True, slots=True)
class Notice:
    """A reply notification for the author of the post replied to."""

    reply: Post
    visible_at: float

    def to_json(self) -> dict[str, Any]:
        """Shaped like the other notifications, plus the post replied to."""
        return {
            "id": f"n{self.reply.id}",
            "type": "reply",
            "account": self.reply.author,
            "status_id": self.reply.id,
            "in_reply_to": self.reply.in_reply_to,
            "created_at": self.reply.created_at,
            "read": False,
        }


class PostStore:
    """The newest posts, newest first and findable by id; the oldest drop off once full."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids = itertools.count(_FIRST_POST_ID)
        self._order: deque[Post] = deque()
        self._by_id: dict[str, Post] = {}
        now = datetime.now(UTC)
        seeds = list(enumerate(_SEED_TEXTS * _SEED_REPEATS))
        for age, (author, text) in reversed(seeds):
            self.add(author, text, moment=now - age * _SEED_SPACING)
        # The synthetic notifications come from these, so a user's writes never pose as them.
        self.seeds: tuple[Post, ...] = tuple(self._order)

    def add(
        self,
        author: str,
        text: str,
        *,
        in_reply_to: str | None = None,
        visible_at: float = 0.0,
        moment: datetime | None = None,
    ) -> Post:
        """Store a new post with the next id; the oldest is dropped when the store is full."""
        created = _iso(moment or datetime.now(UTC))
        post = Post(str(next(self._ids)), author, text, created, in_reply_to, visible_at)
        if len(self._order) >= self._capacity:
            del self._by_id[self._order.pop().id]
        self._order.appendleft(post)
        self._by_id[post.id] = post
        return post

    def visible(self, now: float) -> Iterator[Post]:
        """The posts already visible at `now`, newest first."""
        return (post for post in self._order if post.visible_at <= now)

    def get(self, post_id: str, now: float) -> Post | None:
        """The post with this id if it is stored and visible at `now`, else None."""
        post = self._by_id.get(post_id)
        return post if post is not None and post.visible_at <= now else None


class Inbox:
    """Reply notices per recipient, newest first; bounded per recipient and in recipients."""

    def __init__(self, per_recipient: int, recipients: int) -> None:
        self._per_recipient = per_recipient
        self._recipients = recipients
        self._boxes: dict[str, deque[Notice]] = {}

    def deliver(self, recipient: str, notice: Notice) -> None:
        """File `notice` for `recipient`; the recipient unheard from longest is dropped first."""
        box = self._boxes.pop(recipient, None) or deque(maxlen=self._per_recipient)
        box.appendleft(notice)
        self._boxes[recipient] = box
        if len(self._boxes) > self._recipients:
            del self._boxes[next(iter(self._boxes))]

    def visible(self, recipient: str, now: float) -> list[Notice]:
        """The recipient's notices already visible at `now`, newest first."""
        return [n for n in self._boxes.get(recipient, ()) if n.visible_at <= now]
