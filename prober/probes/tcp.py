"""`kind: tcp`: connect, optionally over TLS, then send lines and expect replies in turn.

Round i sends `send[i]` (skipped when empty, for a server that speaks first) followed by a
newline, then reads lines until one matches `expect[i]`. Phases: resolve, connect, tls, and
processing for the whole exchange of lines.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from prober.config.model import TcpCheck
from prober.config.templates import Regex
from prober.probes.context import ProbeContext, out_of_descriptors
from prober.probes.net.tls import TlsSetupError, peer_facts, tls_reason
from prober.probes.single_step import Address, ProbeFailure, resolve, run_one_step
from prober.result import (
    AssertionOutcome,
    Outcome,
    Phases,
    Reason,
    StepResult,
    TcpFacts,
    TlsFacts,
    shown,
)

STEP_NAME = "connect"
FACTS = TcpFacts
_LINE_LIMIT = 64 * 1024
_MAX_READ_BYTES = 1 << 20
_T = TypeVar("_T")


@dataclass
class _Run:
    """Timestamps (perf_counter) and findings of one run, read back into a StepResult."""

    start: float
    stage: str = "resolving the target"
    resolved: float = 0.0
    connected: float = 0.0
    tls_started: bool = False
    secured: float = 0.0
    tls: TlsFacts | None = None
    outcomes: list[AssertionOutcome] = field(default_factory=list)
    read_bytes: int = 0

    def phases(self, end: float) -> Phases:
        """Each phase from its start to its end; one cut short by a failure ends at `end`."""
        resolved = self.resolved or end
        connected = self.connected or (end if self.resolved else resolved)
        if not self.connected:
            secured = connected
        else:
            secured = self.secured or (end if self.tls_started else connected)
        return Phases(
            resolve=resolved - self.start,
            connect=connected - resolved,
            tls=secured - connected,
            processing=end - secured,
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
    reader, writer = await _connect(addresses, state)
    try:
        if check.use_tls:
            await _secure(writer, check, ctx, state, host)
        for index in range(max(len(check.send), len(check.expect))):
            if index < len(check.send) and check.send[index]:
                state.stage = f"sending line {index + 1}"
                writer.write(check.send[index].encode() + b"\n")
                await _io(writer.drain())
            if index < len(check.expect):
                await _expect(reader, check.expect[index], state, ctx)
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
    state.tls_started = True
    try:
        await writer.start_tls(context, server_hostname=check.tls.server_name or host)
    except (ssl.SSLError, OSError) as exc:
        raise ProbeFailure(tls_reason(exc), f"TLS handshake: {exc}") from None
    state.secured = time.perf_counter()
    ssl_object = writer.get_extra_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject):
        facts = peer_facts(ssl_object)
        state.tls = facts.tls


async def _connect(
    addresses: list[Address],
    state: _Run,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Try each resolved address in order; the first that accepts wins."""
    state.stage = "connecting"
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, address in addresses:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.CONNECT_ERROR
            raise ProbeFailure(reason, f"cannot open a socket: {exc}") from None
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        state.connected = time.perf_counter()
        return await asyncio.open_connection(sock=sock, limit=_LINE_LIMIT)
    if isinstance(last, ConnectionRefusedError):
        raise ProbeFailure(Reason.CONNECT_REFUSED, f"connection refused: {last}")
    raise ProbeFailure(Reason.CONNECT_ERROR, f"cannot connect: {last}")


async def _expect(
    reader: asyncio.StreamReader, pattern: Regex, state: _Run, ctx: ProbeContext
) -> None:
    """Read lines until one matches; the connection closing first fails the expectation.

    RE2 matches in time linear in the line, so a hostile line cannot stall the loop.
    """
    state.stage = f"waiting for a line matching {pattern.pattern!r}"
    text = f"expect {pattern.pattern!r}"
    last = ""
    while True:
        try:
            raw = await _io(reader.readline())
        except ValueError:  # a line longer than the stream's limit
            raise ProbeFailure(Reason.PROTOCOL, f"a line longer than {_LINE_LIMIT} bytes") from None
        if not raw:
            seen = shown(last, ctx.redactor) or "<closed>"
            state.outcomes.append(AssertionOutcome(text, False, seen))
            raise ProbeFailure(
                Reason.ASSERTION, f"connection closed before a line matched {pattern.pattern!r}"
            )
        state.read_bytes += len(raw)
        if state.read_bytes > _MAX_READ_BYTES:
            raise ProbeFailure(Reason.BODY_TOO_LARGE, f"more than {_MAX_READ_BYTES} bytes read")
        last = raw.decode("utf-8", "replace").rstrip("\r\n")
        if pattern.found_in(last):
            state.outcomes.append(AssertionOutcome(text, True, shown(last, ctx.redactor)))
            return


async def _io(awaitable: Awaitable[_T]) -> _T:
    """Await a read or write; a peer that resets the connection gives Reason.RESET."""
    try:
        return await awaitable
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise ProbeFailure(Reason.RESET, f"connection reset: {exc}") from None
    except ssl.SSLError as exc:
        raise ProbeFailure(Reason.TLS, f"TLS error: {exc}") from None
