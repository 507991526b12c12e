"""`kind: grpc`: one `grpc.health.v1.Health/Check` call (net/grpc_health.py) over a fresh
HTTP/2 connection, optionally over TLS; it passes when the call returns OK and SERVING.

Phases: resolve, connect, tls, and processing for the call itself (the `check` phase:
HTTP/2 setup, request, answer). The client enforces the attempt's deadline, so a timeout
names the phase it hung in. Reasons: dns, connect_refused, connect_error, reset, tls*,
timeout, protocol, and status for an answer other than SERVING or a non-OK gRPC status.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

from prober.config.model import GrpcCheck, TlsOptions
from prober.config.templates import TemplateError
from prober.probes.context import FAMILIES, HttpClients, ProbeContext, out_of_descriptors
from prober.probes.net.grpc_health import (
    CallFailed,
    ConnectFailed,
    ConnectRefused,
    DeadlineReached,
    GrpcError,
    HealthRequest,
    HealthResponse,
    InvalidRequest,
    PeerClosed,
    ProtocolError,
    ResolveFailed,
    Timeline,
    TlsFailed,
    check_health,
)
from prober.probes.net.tls import GRPC_ALPN, TlsSetupError, tls_reason
from prober.probes.peer_tls import session_facts
from prober.probes.single_step import ProbeFailure, run_one_step
from prober.probes.tcp import split_target
from prober.result import GrpcFacts, Outcome, Phases, Reason, StepResult

STEP_NAME = "check"
FACTS = GrpcFacts


@dataclass
class _Call:
    """What the call got to, read back into a StepResult."""

    start: float
    stage: str = "calling the health service"
    timeline: Timeline | None = None
    response: HealthResponse | None = None
    status_code: int | None = None

    def phases(self) -> Phases:
        t = self.timeline
        if t is None:
            return Phases()
        return Phases(resolve=t.resolve, connect=t.connect, tls=t.tls, processing=t.check)


async def run(check: GrpcCheck, ctx: ProbeContext) -> Outcome:
    """Ask the target's health service about `service`; SERVING passes."""
    state = _Call(time.perf_counter())
    over = " over TLS" if check.use_tls else ""
    service = check.service or '""'

    def end(reason: Reason | None, message: str) -> StepResult:
        response = state.response
        return StepResult(
            name=STEP_NAME,
            success=reason is None,
            duration=time.perf_counter() - state.start,
            reason=reason,
            message=message,
            facts=GrpcFacts(
                phases=state.phases(),
                serving_status=response.status_name if response is not None else None,
                status_code=state.status_code,
                tls=session_facts(response.tls) if response is not None else None,
            ),
            request_line=f"GRPC {check.target} Health/Check service {service}{over}",
        )

    return await run_one_step(ctx, STEP_NAME, _call(check, ctx, state), end, lambda: state.stage)


async def _call(check: GrpcCheck, ctx: ProbeContext, state: _Call) -> None:
    host, port = split_target(check.target)
    try:
        metadata = tuple((name, value.render(ctx.values)) for name, value in check.metadata.items())
    except TemplateError as exc:
        raise ProbeFailure(Reason.TEMPLATE, f"metadata: {exc}") from None
    context = await context_for(ctx.clients, check.tls) if check.use_tls else None
    request = HealthRequest(
        host=host,
        port=port,
        service=check.service,
        ssl_context=context,
        server_hostname=check.tls.server_name,
        metadata=metadata,
        family=FAMILIES[check.ip_protocol],
    )
    try:
        response = await check_health(request, ctx.deadline)
    except GrpcError as exc:
        state.timeline = exc.timeline
        state.status_code = None if exc.timeline is None else int(exc.grpc_status)
        raise ProbeFailure(_reason(exc), _message(exc)) from None
    state.timeline, state.response = response.timeline, response
    state.status_code = int(response.grpc_status)
    if not response.serving:
        raise ProbeFailure(Reason.STATUS, f"the service is {response.status_name}")


def _reason(exc: GrpcError) -> Reason:
    """The bounded reason of a failed call."""
    cause = exc.__cause__
    if isinstance(exc, ResolveFailed):
        return Reason.RESOURCE if out_of_descriptors(cause) else Reason.DNS
    if isinstance(exc, ConnectRefused):
        return Reason.CONNECT_REFUSED
    if isinstance(exc, ConnectFailed):
        return Reason.RESOURCE if out_of_descriptors(cause) else Reason.CONNECT_ERROR
    if isinstance(exc, PeerClosed):
        return Reason.RESET
    if isinstance(exc, TlsFailed):
        return tls_reason(exc.error)
    if isinstance(exc, DeadlineReached):
        return Reason.TIMEOUT
    if isinstance(exc, CallFailed):
        return Reason.STATUS
    if isinstance(exc, InvalidRequest):
        return Reason.INVALID_URL
    if isinstance(exc, ProtocolError):
        return Reason.PROTOCOL
    return Reason.CONNECT_ERROR  # NetworkError: the connection failed below gRPC


def _message(exc: GrpcError) -> str:
    if isinstance(exc, CallFailed):
        return f"grpc status {exc.grpc_status.name}: {exc}"
    return str(exc)


async def context_for(clients: HttpClients, options: TlsOptions) -> ssl.SSLContext:
    """The gRPC SSL context for these options (ALPN h2), built once until a reload, as the
    http ones are: a load error is kept until then too."""
    try:
        return await clients.ssl_for(options, GRPC_ALPN)
    except TlsSetupError as exc:
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS
        raise ProbeFailure(reason, str(exc)) from None
