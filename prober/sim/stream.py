"""`GET /api/v1/notifications/stream`: a WebSocket that says hello, then pushes each new
reply notification of the token's account as it becomes visible.

Component `notifications`: its faults apply as to any of its requests, drawn once when the
stream opens. An error status refuses the upgrade with that status; `hang` accepts it and
never sends a word; `reset` accepts it and then drops the connection (RST); latency delays
the upgrade. Body faults do not apply. A missing, unknown or expired token is a 401 before
any upgrade. Messages from the client are read and ignored; shutdown closes every stream
with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, web

from prober.sim.faults import Component, Outcome, pause, reset_connection
from prober.sim.feed import Subscription
from prober.sim.reply import Rejected, Reply
from prober.sim.state import SIM_STATE, SimState

HELLO = {"type": "hello"}
# The client only ever closes; anything bigger than this from it ends the stream.
_MAX_CLIENT_MESSAGE = 4096
_SHUTDOWN = b"the platform is shutting down"

Sender = Callable[[web.WebSocketResponse], Coroutine[Any, Any, None]]


def _refusal(state: SimState, header: str | None) -> Reply | None:
    """The 401 for a request without a valid bearer token, else None."""
    try:
        state.tokens.user_for(header)
    except Rejected as rejected:
        return rejected.reply
    return None


async def notification_stream(request: web.Request) -> web.StreamResponse:
    """Open one account's notification stream, as its faults allow."""
    state = request.app[SIM_STATE]
    header = request.headers.get("Authorization")
    account = state.tokens.peek(header)
    plan = state.faults.plan(Component.NOTIFICATIONS, state.rng, account)
    refusal = None if plan.failure else _refusal(state, header)
    outcome = plan.failure or (refusal.outcome if refusal is not None else Outcome.OK)
    known = account if state.knows(account) else None
    state.stats.count(Component.NOTIFICATIONS, outcome, known)
    delay = state.base_delay_s() + plan.delay_s
    if delay > 0 and await pause(delay, state.closing):
        return web.Response(status=503)
    if refusal is not None:
        return web.json_response(refusal.payload, status=refusal.status, headers=refusal.headers)
    if plan.failure is Outcome.ERROR_STATUS:
        payload = {"error": "injected_fault", "status": plan.status, "message": "injected fault"}
        return web.json_response(payload, status=plan.status)
    assert account is not None  # no refusal: the token was valid
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=_MAX_CLIENT_MESSAGE)
    if not ws.can_prepare(request).ok:
        payload = {"error": "bad_request", "message": "expected a WebSocket upgrade"}
        return web.json_response(payload, status=400)
    if plan.failure is Outcome.RESET:
        await ws.prepare(request)
        reset_connection(request)
        return ws
    if plan.failure is Outcome.HANG:
        return await _serve(request, ws, _silence(state))
    subscription = state.feed.subscribe(account)
    if subscription is None:
        payload = {"error": "unavailable", "message": "too many open streams"}
        return web.json_response(payload, status=503)
    try:
        return await _serve(request, ws, _notices(subscription, state))
    finally:
        state.feed.unsubscribe(subscription)


async def _serve(
    request: web.Request, ws: web.WebSocketResponse, sender: Sender
) -> web.WebSocketResponse:
    """Upgrade, then read (and ignore) the client until it closes while `sender` sends."""
    await ws.prepare(request)
    sending = asyncio.create_task(sender(ws))
    try:
        async for _ in ws:
            pass  # the client has nothing to say; aiohttp answers its pings and close
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
    return ws


def _silence(state: SimState) -> Sender:
    """A `hang` stream: nothing is sent until shutdown closes it."""

    async def send(ws: web.WebSocketResponse) -> None:
        await state.closing.wait()
        await ws.close(code=WSCloseCode.GOING_AWAY, message=_SHUTDOWN)

    return send


def _notices(subscription: Subscription, state: SimState) -> Sender:
    """The hello, then each notice once it is visible (after its propagation delay)."""

    async def send(ws: web.WebSocketResponse) -> None:
        await ws.send_json(HELLO)
        while (notice := await subscription.next()) is not None:
            wait = notice.visible_at - time.monotonic()
            if wait > 0 and await pause(wait, state.closing):
                break
            await ws.send_json({"type": "notification", "notification": notice.to_json()})
        await ws.close(code=WSCloseCode.GOING_AWAY, message=_SHUTDOWN)

    return send
