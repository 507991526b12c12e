"""`kind: tcp`: connect (from `source_ip_address` if set), optionally over TLS, then hold the
line dialogue (tcp_dialogue.py), which may start TLS midway (`starttls`).

Phases: resolve, connect, tls (every handshake), and processing for the rest of the
exchange of lines. The TLS facts are those of the last handshake.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field

from prober.config.model import TcpCheck
from prober.probes.context import ProbeContext, out_of_descriptors
from prober.probes.net.tls import TlsSetupError, peer_facts, tls_reason
from prober.probes.single_step import Address, ProbeFailure, resolve, run_one_step
from prober.probes.tcp_dialogue import LINE_LIMIT, hold_dialogue
from prober.result import (
    AssertionOutcome,
    Outcome,
    Phases,
    Reason,
    StepResult,
    TcpFacts,
    TlsFacts,
)

STEP_NAME = "connect"
FACTS = TcpFacts


@dataclass
class _Run:
    """Timestamps (perf_counter) and findings of one run, read back into a StepResult."""

    start: float
    stage: str = "resolving the target"
    resolved: float = 0.0
    connected: float = 0.0
    handshake_started: float = 0.0  # of the handshake under way (0: none)
    handshakes: float = 0.0  # seconds spent in finished handshakes
    tls: TlsFacts | None = None
    outcomes: list[AssertionOutcome] = field(default_factory=list)
    read_bytes: int = 0

    def phases(self, end: float) -> Phases:
        """Each phase from its start to its end; one cut short by a failure ends at `end`.
        `tls` is every handshake, `processing` the rest of the time since the connect."""
        resolved = self.resolved or end
        connected = self.connected or (end if self.resolved else resolved)
        tls = 0.0
        if self.connected:
            under_way = end - self.handshake_started if self.handshake_started else 0.0
            tls = self.handshakes + under_way
        return Phases(
            resolve=resolved - self.start,
            connect=connected - resolved,
            tls=tls,
            processing=end - connected - tls,
        )


def split_target(target: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


async def run(check: TcpCheck, ctx: ProbeContext) -> Outcome:
    """Connect to the target, optionally shake hands over TLS, and hold the line dialogue."""
    state = _Run(time.perf_counter())
    over = " over TLS" if check.use_tls else ""

    def end(reason: Reason | None, message: str) -> StepResult:
        now = time.perf_counter()
        return StepResult(
            name=STEP_NAME,
            success=reason is None,
            duration=now - state.start,
            reason=reason,
            message=message,
            facts=TcpFacts(
                phases=state.phases(now),
                lookup_time=(state.resolved - state.start) if state.resolved else None,
                tls=state.tls,
            ),
            assertions=tuple(state.outcomes),
            request_line=f"TCP {check.target}{over}",
        )

    work = _converse(check, ctx, state)
    return await run_one_step(ctx, STEP_NAME, work, end, lambda: state.stage)


async def _converse(check: TcpCheck, ctx: ProbeContext, state: _Run) -> None:
    host, port = split_target(check.target)
    addresses = await resolve(host, port, check.ip_protocol, socket.SOCK_STREAM, host)
    state.resolved = time.perf_counter()
    reader, writer = await _connect(addresses, check.source_ip_address, state)

    async def start_tls() -> None:
        await _secure(writer, check, ctx, state, host)

    try:
        if check.use_tls:
            await start_tls()
        await hold_dialogue(check.dialogue, reader, writer, start_tls, state, ctx)
    finally:
        # Abort, not close: a TLS close would wait in the background for the peer's reply.
        writer.transport.abort()


async def _secure(
    writer: asyncio.StreamWriter, check: TcpCheck, ctx: ProbeContext, state: _Run, host: str
) -> None:
    """Upgrade the connection to TLS and note what the peer's certificate says."""
    state.stage = "in the TLS handshake"
    try:
        context = await ctx.clients.ssl_for(check.tls)
    except TlsSetupError as exc:
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS
        raise ProbeFailure(reason, str(exc)) from None
    state.handshake_started = time.perf_counter()
    try:
        await writer.start_tls(context, server_hostname=check.tls.server_name or host)
    except (ssl.SSLError, OSError) as exc:
        raise ProbeFailure(tls_reason(exc), f"TLS handshake: {exc}") from None
    state.handshakes += time.perf_counter() - state.handshake_started
    state.handshake_started = 0.0
    ssl_object = writer.get_extra_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject):
        facts = peer_facts(ssl_object)
        state.tls = facts.tls


async def _connect(
    addresses: list[Address],
    source: str | None,
    state: _Run,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Try each resolved address in order (of the source address's family, if one is given,
    bound before connecting); the first that accepts wins."""
    state.stage = "connecting"
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, address in _of_source_family(addresses, source):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.CONNECT_ERROR
            raise ProbeFailure(reason, f"cannot open a socket: {exc}") from None
        sock.setblocking(False)
        try:
            if source is not None:
                sock.bind((source, 0))
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        state.connected = time.perf_counter()
        return await asyncio.open_connection(sock=sock, limit=LINE_LIMIT)
    if isinstance(last, ConnectionRefusedError):
        raise ProbeFailure(Reason.CONNECT_REFUSED, f"connection refused: {last}")
    raise ProbeFailure(Reason.CONNECT_ERROR, f"cannot connect: {last}")


def _of_source_family(addresses: list[Address], source: str | None) -> list[Address]:
    """The addresses a socket bound to `source` can reach; none is a failure saying why."""
    if source is None:
        return addresses
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    usable = [a for a in addresses if a[0] == family]
    if not usable:
        raise ProbeFailure(
            Reason.CONNECT_ERROR, "the target has no address of source_ip_address's family"
        )
    return usable
