"""One DNS exchange with a server, over UDP (retried over TCP when truncated), TCP or TLS
(DNS over TLS, RFC 7858: the TCP exchange inside a TLS session, its handshake timed apart).

The UDP socket is *connected* to the server, as miekg/dns's is in blackbox_exporter: the
kernel then hands the ICMP "port unreachable" of a closed port back to the socket, asyncio
calls `error_received(ConnectionRefusedError)`, and the query fails at once as refused
instead of waiting out the timeout. dnspython's asyncio backend connects its socket when it
is given a destination, so the socket is made here and passed to dnspython's query.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.message

from prober.probes.context import out_of_descriptors
from prober.probes.net.tls import TimedSSLObject, collect_handshakes, peer_facts, tls_reason
from prober.probes.single_step import ProbeFailure
from prober.result import Reason, TlsFacts


@dataclass
class ExchangeClock:
    """When the socket was connected, its TLS handshake done (DoT) and the response came
    (perf_counter; 0: not yet), and what the handshake showed."""

    connected: float = 0.0
    secured: float = 0.0
    answered: float = 0.0
    over_tls: bool = False
    tls: TlsFacts | None = None

    @property
    def in_handshake(self) -> bool:
        """Connected over TLS, the handshake not done: time so far is the tls phase's."""
        return self.over_tls and bool(self.connected) and not self.secured


@dataclass(frozen=True, slots=True)
class Secured:
    """DNS over TLS: the check's SSL context and the name its certificate must have."""

    context: ssl.SSLContext
    server_hostname: str


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
    query: dns.message.Message,
    server: Server,
    tcp: bool,
    seconds_left: float,
    clock: ExchangeClock,
    secured: Secured | None = None,
) -> dns.message.Message:
    """Send the query (over TLS when `secured`) and return the response; failures are
    ProbeFailures with a reason."""
    try:
        if tcp or secured is not None:
            return await _over_stream(query, server, seconds_left, clock, secured)
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


async def _over_stream(
    query: dns.message.Message,
    server: Server,
    seconds_left: float,
    clock: ExchangeClock,
    secured: Secured | None,
) -> dns.message.Message:
    """Connect over TCP, shake hands when `secured` (timed by the context's
    `TimedSSLObject`), then the TCP exchange, inside the session for DNS over TLS as
    dnspython's `asyncquery.tls` does with a socket of its own."""
    backend = dns.asyncbackend.get_backend("asyncio")
    source = (server.source, 0) if server.source else None
    tls = () if secured is None else (secured.context, secured.server_hostname)
    clock.over_tls = secured is not None
    handshakes: list[TimedSSLObject] = []
    try:
        with collect_handshakes(handshakes):
            sock = await backend.make_socket(  # type: ignore[no-untyped-call]  # untyped
                server.family, socket.SOCK_STREAM, 0, source, (server.address, server.port),
                seconds_left, *tls,
            )  # fmt: skip
    except ssl.SSLError as exc:  # an OSError: told apart before exchange() sees it
        raise ProbeFailure(tls_reason(exc), f"TLS handshake with {server.shown}: {exc}") from None
    finally:
        _stamp_handshake(clock, handshakes)
    try:
        if secured is None:
            clock.connected = time.perf_counter()
        else:
            _note_session(clock, sock.writer.get_extra_info("ssl_object"))
        response = await dns.asyncquery.tcp(
            query, server.address, seconds_left, server.port, sock=sock
        )
    finally:
        await sock.close()
    clock.answered = time.perf_counter()
    return response


def _note_session(clock: ExchangeClock, ssl_object: object) -> None:
    """What the TLS handshake showed, and its stamps where the context did not time it."""
    if isinstance(ssl_object, ssl.SSLObject):
        clock.tls = peer_facts(ssl_object).tls
    clock.secured = clock.secured or time.perf_counter()
    clock.connected = clock.connected or clock.secured


def _stamp_handshake(clock: ExchangeClock, handshakes: list[TimedSSLObject]) -> None:
    """The TCP connection was made when the handshake started; it ended when it was done."""
    if handshakes:
        clock.connected = handshakes[0].handshake_started
        clock.secured = handshakes[0].handshake_done
