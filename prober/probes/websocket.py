"""`kind: websocket`: open a WebSocket (net/ws.py) on a fresh connection, optionally send one
text message, then wait for a message matching `expect` within `within` (else until the
deadline): "a notification arrives in time".

Phases: resolve, connect, tls, processing (the `handshake`: the HTTP upgrade) and transfer
(`first_message`: the send and the wait). The client enforces the attempt's deadline, so a
timeout names its phase. Reasons: dns, connect_refused, connect_error, tls*, status (the
upgrade refused, its status kept), timeout (no message in time), assertion (messages came
but none matched, or the server closed first), reset (dropped), protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from prober.config.model import WebsocketCheck
from prober.config.templates import TemplateError
from prober.probes.context import FAMILIES, ProbeContext, out_of_descriptors
from prober.probes.net.tls import TlsSetupError, tls_reason
from prober.probes.net.ws import (
    Closed,
    ConnectFailed,
    ConnectRefused,
    DeadlineReached,
    HandshakeRefused,
    InvalidRequest,
    MessageTimeout,
    NoMatchingMessage,
    ProtocolError,
    ResolveFailed,
    Timeline,
    TlsFailed,
    WsError,
    WsRequest,
    WsResponse,
    exchange,
)
from prober.probes.peer_tls import session_facts
from prober.probes.single_step import ProbeFailure, run_one_step
from prober.result import Outcome, Phases, Reason, StepResult, WsFacts

STEP_NAME = "stream"
FACTS = WsFacts
_UPGRADED = 101


@dataclass
class _Exchange:
    """What the exchange got to, read back into a StepResult."""

    start: float
    request_line: str
    stage: str = "opening the WebSocket"
    timeline: Timeline | None = None
    response: WsResponse | None = None
    status_code: int | None = None
    messages: int = 0

    def phases(self) -> Phases:
        t = self.timeline
        if t is None:
            return Phases()
        return Phases(t.resolve, t.connect, t.tls, t.handshake, t.first_message)


async def run(check: WebsocketCheck, ctx: ProbeContext) -> Outcome:
    """Open the stream, send, and wait for the expected message."""
    state = _Exchange(time.perf_counter(), f"WS {check.url.source}")

    def end(reason: Reason | None, message: str) -> StepResult:
        response = state.response
        return StepResult(
            name=STEP_NAME,
            success=reason is None,
            duration=time.perf_counter() - state.start,
            reason=reason,
            message=message,
            facts=WsFacts(
                phases=state.phases(),
                status_code=state.status_code,
                messages=state.messages,
                tls=session_facts(response.tls) if response is not None else None,
            ),
            request_line=ctx.redactor(state.request_line),
        )

    work = _exchange(check, ctx, state)
    return await run_one_step(ctx, STEP_NAME, work, end, lambda: state.stage)


async def _exchange(check: WebsocketCheck, ctx: ProbeContext, state: _Exchange) -> None:
    try:
        url = check.url.render(ctx.values)
        headers = tuple((name, value.render(ctx.values)) for name, value in check.headers.items())
        send = check.send.render(ctx.values) if check.send is not None else None
    except TemplateError as exc:
        raise ProbeFailure(Reason.TEMPLATE, str(exc)) from None
    state.request_line = f"WS {_shown(url)}"
    context = None
    if urlsplit(url).scheme.lower() == "wss":
        try:
            context = await ctx.clients.ssl_for(check.tls)
        except TlsSetupError as exc:
            reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS
            raise ProbeFailure(reason, str(exc)) from None
    request = WsRequest(
        url=url,
        headers=headers,
        send=send,
        expect=check.expect,
        within=check.within,
        ssl_context=context,
        server_hostname=check.tls.server_name,
        family=FAMILIES[check.ip_protocol],
    )
    try:
        response = await exchange(request, ctx.deadline)
    except WsError as exc:
        state.timeline = exc.timeline
        if isinstance(exc, HandshakeRefused):
            state.status_code = exc.status
        elif exc.timeline is not None and exc.timeline.upgraded:
            state.status_code = _UPGRADED
        if isinstance(exc, MessageTimeout):
            state.messages = exc.messages
        raise ProbeFailure(_reason(exc), _message(exc)) from None
    state.timeline, state.response = response.timeline, response
    state.status_code, state.messages = response.status, response.messages


def _shown(url: str) -> str:
    """The URL without its userinfo and query (which may hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # the client refuses it, saying why
        port = ""
    return f"{parts.scheme}://{shown}{port}{parts.path}"


# The reason of each failure the client names, the first class that matches winning.
_REASONS: tuple[tuple[type[WsError], Reason], ...] = (
    (ResolveFailed, Reason.DNS),
    (ConnectRefused, Reason.CONNECT_REFUSED),
    (HandshakeRefused, Reason.STATUS),
    (NoMatchingMessage, Reason.ASSERTION),
    (MessageTimeout, Reason.TIMEOUT),
    (DeadlineReached, Reason.TIMEOUT),
    (InvalidRequest, Reason.INVALID_URL),
    (ProtocolError, Reason.PROTOCOL),
)


def _reason(exc: WsError) -> Reason:
    """The bounded reason of a failed exchange."""
    if isinstance(exc, TlsFailed):
        return tls_reason(exc.error)
    if isinstance(exc, Closed):  # dropped, or closed before the expected message
        return Reason.RESET if exc.code is None else Reason.ASSERTION
    if isinstance(exc, ConnectFailed) and out_of_descriptors(exc.__cause__):
        return Reason.RESOURCE
    for failure, reason in _REASONS:
        if isinstance(exc, failure):
            return reason
    return Reason.CONNECT_ERROR  # the connection failed below the WebSocket


def _message(exc: WsError) -> str:
    """The client's message; a wait that ran out says it was in first_message."""
    if isinstance(exc, MessageTimeout):
        return f"{exc} (in first_message)"
    return str(exc)
