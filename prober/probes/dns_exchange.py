"""One DNS exchange with a server, over UDP (retried over TCP when truncated) or TCP.

The UDP socket is *connected* to the server, as miekg/dns's is in blackbox_exporter: the
kernel then hands the ICMP "port unreachable" of a closed port back to the socket, asyncio
calls `error_received(ConnectionRefusedError)`, and the query fails at once as refused
instead of waiting out the timeout. dnspython's asyncio backend connects its socket when it
is given a destination, so the socket is made here and passed to dnspython's query.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message

from prober.probes.context import out_of_descriptors
from prober.probes.single_step import ProbeFailure
from prober.result import Reason


@dataclass
class ExchangeClock:
    """When the socket was ready and when the response came (perf_counter; 0: not yet)."""

    connected: float = 0.0
    answered: float = 0.0


@dataclass(frozen=True, slots=True)
class Server:
    """Where the query goes: the server's address, port and family, and our own address."""

    address: str
    port: int
    family: socket.AddressFamily
    source: str | None = None

    @property
    def shown(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


async def exchange(
    query: dns.message.Message, server: Server, tcp: bool, seconds_left: float, clock: ExchangeClock
) -> dns.message.Message:
    """Send the query and return the response; failures are ProbeFailures with a reason."""
    try:
        if tcp:
            return await _over_tcp(query, server, seconds_left, clock)
        return await _over_udp(query, server, seconds_left, clock)
    except dns.exception.Timeout:  # dnspython's own timeout is the attempt's deadline
        raise ProbeFailure(Reason.TIMEOUT, f"deadline reached waiting for {server.shown}") from None
    except ConnectionRefusedError as exc:
        raise ProbeFailure(Reason.CONNECT_REFUSED, f"{server.shown} refused: {exc}") from None
    except OSError as exc:
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.CONNECT_ERROR
        raise ProbeFailure(reason, f"cannot reach {server.shown}: {exc}") from None
    except dns.exception.DNSException as exc:
        raise ProbeFailure(Reason.PROTOCOL, f"bad answer from {server.shown}: {exc}") from None


async def _over_udp(
    query: dns.message.Message, server: Server, seconds_left: float, clock: ExchangeClock
) -> dns.message.Message:
    backend = dns.asyncbackend.get_backend("asyncio")
    source = (server.source, 0) if server.source else None
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]  # dnspython: untyped
        server.family, socket.SOCK_DGRAM, 0, source, (server.address, server.port)
    )
    clock.connected = time.perf_counter()
    try:
        response, _ = await dns.asyncquery.udp_with_fallback(
            query,
            server.address,
            timeout=seconds_left,
            port=server.port,
            source=server.source,
            udp_sock=sock,
            backend=backend,
        )
    finally:
        await sock.close()
    clock.answered = time.perf_counter()
    return response


async def _over_tcp(
    query: dns.message.Message, server: Server, seconds_left: float, clock: ExchangeClock
) -> dns.message.Message:
    backend = dns.asyncbackend.get_backend("asyncio")
    source = (server.source, 0) if server.source else None
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]  # dnspython: untyped
        server.family, socket.SOCK_STREAM, 0, source, (server.address, server.port), seconds_left
    )
    clock.connected = time.perf_counter()
    try:
        response = await dns.asyncquery.tcp(
            query, server.address, seconds_left, server.port, sock=sock
        )
    finally:
        await sock.close()
    clock.answered = time.perf_counter()
    return response
