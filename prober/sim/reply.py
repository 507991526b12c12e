"""An endpoint's answer before faults shape it, and the refusals (401, 400, 404) it raises
instead of answering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prober.sim.faults import Outcome


class Rejected(Exception):
    """An endpoint refuses the request (401, 400, 404); carries the reply to send instead."""

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


def unauthorized(message: str) -> Rejected:
    """A 401 with the RFC 6750 challenge, so clients know to (re)authenticate."""
    challenge = f'Bearer error="invalid_token", error_description="{message}"'
    payload = {"error": "unauthorized", "message": message}
    return Rejected(Reply(payload, 401, Outcome.UNAUTHORIZED, {"WWW-Authenticate": challenge}))


def bad_request(message: str) -> Rejected:
    return Rejected(Reply({"error": "bad_request", "message": message}, 400, Outcome.BAD_REQUEST))


def not_found(message: str) -> Rejected:
    return Rejected(Reply({"error": "not_found", "message": message}, 404, Outcome.NOT_FOUND))
