"""`kind: tcp`: connect, optionally over TLS, then send lines and expect replies in turn.

Round i sends `send[i]` (skipped when empty, for a server that speaks first) followed by a
newline, then reads lines until one matches `expect[i]`. Phases: resolve, connect, tls, and
processing for the whole exchange of lines.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from prober.config_model import TcpCheck
from prober.probes.context import FAMILIES, ProbeContext, family_mismatch
from prober.probes.tls_client import TlsSetupError, peer_facts, tls_reason
from prober.result import AssertionOutcome, Phases, Reason, Result, StepResult

STEP_NAME = "connect"
_LINE_LIMIT = 64 * 1024
_MAX_READ_BYTES = 1 << 20
_SHOWN_CHARS = 64
_T = TypeVar("_T")
# (family, sockaddr) as getaddrinfo gives them.
_Address = tuple[
    socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
]


class _Failed(Exception):
    """Ends the run with a reason; raised where the failure is understood."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Run:
    """Timestamps (perf_counter) and findings of one run, read back into a StepResult."""

    start: float
    stage: str = "resolving the target"
    resolved: float = 0.0
    connected: float = 0.0
    tls_started: bool = False
    secured: float = 0.0
    tls_version: str | None = None
    tls_expiry: float | None = None
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


async def run(check: TcpCheck, ctx: ProbeContext) -> Result:
    """Connect to the target, optionally shake hands over TLS, and hold the line dialogue."""
    started_at = time.time()
    state = _Run(time.perf_counter())
    ctx.current_step = STEP_NAME
    reason: Reason | None = None
    message = ""
    try:
        async with asyncio.timeout_at(ctx.deadline):
            await _converse(check, ctx, state)
    except TimeoutError:
        reason, message = Reason.TIMEOUT, f"deadline reached while {state.stage}"
    except _Failed as exc:
        reason, message = exc.reason, str(exc)
    end = time.perf_counter()
    tls = " over TLS" if check.use_tls else ""
    step = StepResult(
        name=STEP_NAME,
        success=reason is None,
        duration=end - state.start,
        reason=reason,
        message=message,
        phases=state.phases(end),
        assertions=tuple(state.outcomes),
        request_line=f"TCP {check.target}{tls}",
        tls_expiry=state.tls_expiry,
        tls_version=state.tls_version,
        protocol="tcp",
        dns_lookup_time=(state.resolved - state.start) if state.resolved else None,
    )
    ctx.progress.append(step)
    ctx.current_step = ""
    return Result(
        check=check.name,
        success=step.success,
        duration=step.duration,
        started_at=started_at,
        reason=reason,
        message=message,
        failed_step="" if step.success else STEP_NAME,
        steps=tuple(ctx.progress),
    )


async def _converse(check: TcpCheck, ctx: ProbeContext, state: _Run) -> None:
    host, port = split_target(check.target)
    addresses = await _resolve(host, port, check, state)
    reader, writer = await _connect(addresses, state)
    try:
        if check.use_tls:
            state.stage = "in the TLS handshake"
            try:
                context = await ctx.clients.ssl_for(check.tls)
            except TlsSetupError as exc:
                raise _Failed(Reason.TLS, str(exc)) from None
            state.tls_started = True
            try:
                await writer.start_tls(context, server_hostname=check.tls.server_name or host)
            except (ssl.SSLError, OSError) as exc:
                raise _Failed(tls_reason(exc), f"TLS handshake: {exc}") from None
            state.secured = time.perf_counter()
            ssl_object = writer.get_extra_info("ssl_object")
            if isinstance(ssl_object, ssl.SSLObject):
                facts = peer_facts(ssl_object)
                state.tls_version, state.tls_expiry = facts.version, facts.expiry
        for index in range(max(len(check.send), len(check.expect))):
            if index < len(check.send) and check.send[index]:
                state.stage = f"sending line {index + 1}"
                writer.write(check.send[index].encode() + b"\n")
                await _io(writer.drain())
            if index < len(check.expect):
                await _expect(reader, check.expect[index], state)
    finally:
        # Abort, not close: a TLS close would wait in the background for the peer's reply.
        writer.transport.abort()


async def _resolve(host: str, port: int, check: TcpCheck, state: _Run) -> list[_Address]:
    mismatch = family_mismatch(host, check.ip_protocol)
    if mismatch:
        raise _Failed(Reason.DNS, mismatch)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, family=FAMILIES[check.ip_protocol], type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise _Failed(Reason.DNS, f"cannot resolve {host}: {exc.strerror}") from None
    state.resolved = time.perf_counter()
    return [(info[0], info[4]) for info in infos]


async def _connect(
    addresses: list[_Address],
    state: _Run,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Try each resolved address in order; the first that accepts wins."""
    state.stage = "connecting"
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
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
        raise _Failed(Reason.CONNECT_REFUSED, f"connection refused: {last}")
    raise _Failed(Reason.CONNECT_ERROR, f"cannot connect: {last}")


async def _expect(reader: asyncio.StreamReader, pattern: re.Pattern[str], state: _Run) -> None:
    """Read lines until one matches; the connection closing first fails the expectation."""
    state.stage = f"waiting for a line matching {pattern.pattern!r}"
    text = f"expect {pattern.pattern!r}"
    last = ""
    while True:
        try:
            raw = await _io(reader.readline())
        except ValueError:  # a line longer than the stream's limit
            raise _Failed(Reason.PROTOCOL, f"a line longer than {_LINE_LIMIT} bytes") from None
        if not raw:
            state.outcomes.append(AssertionOutcome(text, False, _shown(last) or "<closed>"))
            raise _Failed(
                Reason.ASSERTION, f"connection closed before a line matched {pattern.pattern!r}"
            )
        state.read_bytes += len(raw)
        if state.read_bytes > _MAX_READ_BYTES:
            raise _Failed(Reason.BODY_TOO_LARGE, f"more than {_MAX_READ_BYTES} bytes read")
        last = raw.decode("utf-8", "replace").rstrip("\r\n")
        if pattern.search(last):
            state.outcomes.append(AssertionOutcome(text, True, _shown(last)))
            return


async def _io(awaitable: Awaitable[_T]) -> _T:
    """Await a read or write; a peer that resets the connection gives Reason.RESET."""
    try:
        return await awaitable
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _Failed(Reason.RESET, f"connection reset: {exc}") from None
    except ssl.SSLError as exc:
        raise _Failed(Reason.TLS, f"TLS error: {exc}") from None


def _shown(line: str) -> str:
    return line if len(line) <= _SHOWN_CHARS else line[:_SHOWN_CHARS] + "..."
