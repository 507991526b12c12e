"""The dial every lean net/ client shares: resolve the host, connect to each address in turn,
TLS through the loop's own `create_connection(ssl=...)`, the handshake's stamps collected.

It resolves with `loop.getaddrinfo` (IP literals skip it: no resolve phase, as aiohttp
reports it), stamps `resolved` on the protocol, and leaves it connected: the protocol takes
its own stamps in its transport callbacks. Connect and TLS are told apart by the handshake's
own stamp (`tls.TimedSSLObject`, which `tls.build_context` installs). Failures are raised as
the client's own classes (`failures.Failures`), with one wording for all clients.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache

from prober.probes.net.failures import Failures
from prober.probes.net.tls import TimedSSLObject, collect_handshakes

_FAMILY_NAMES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


class Dialed(asyncio.Protocol):
    """A protocol the dial can connect: its start, the stamp the dial sets, and the list the
    handshakes go to (the subclass's own)."""

    started: float
    resolved: float
    handshakes: list[TimedSSLObject]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: `host` without brackets and IDNA-encoded, the addresses' `family`,
    and with `ssl_context` the TLS `server_hostname` (SNI and the name the certificate must
    match)."""

    host: str
    port: int
    family: socket.AddressFamily = socket.AF_UNSPEC
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None


async def dial(
    loop: asyncio.AbstractEventLoop, protocol: Dialed, endpoint: Endpoint, failures: Failures
) -> None:
    """Resolve, stamp `resolved`, then connect `protocol` to the first address that answers."""
    literal = literal_family(endpoint.host)
    if literal is None:
        addresses = await _lookup(loop, endpoint, failures)
        protocol.resolved = time.perf_counter()
    else:
        addresses = [_literal_address(endpoint, literal, failures)]
        protocol.resolved = protocol.started
    await _connect(loop, protocol, addresses, endpoint, failures)


@lru_cache(maxsize=4096)
def literal_family(host: str) -> socket.AddressFamily | None:
    """The family of an IP-address host; None for a name (cached: a check dials the same
    host run after run)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def host_port(host: str, port: int) -> str:
    """host:port as messages show it, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ssl_text(exc: OSError) -> str:
    """An SSL error as text: the verify message when there is one, else its reason (a plain
    OSError: its strerror)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc)


def _literal_address(
    endpoint: Endpoint, literal: socket.AddressFamily, failures: Failures
) -> tuple[socket.AddressFamily, str]:
    """An IP-literal host as the one address to try, if it is of the family asked for."""
    family = endpoint.family
    if family not in (socket.AF_UNSPEC, literal):
        raise failures.resolve_failed(
            f"{endpoint.host} is an {_FAMILY_NAMES[literal]} address"
            f" but {_FAMILY_NAMES.get(family, family.name)} was asked for"
        )
    return (literal, endpoint.host)


async def _lookup(
    loop: asyncio.AbstractEventLoop, endpoint: Endpoint, failures: Failures
) -> list[tuple[socket.AddressFamily, str]]:
    """The host's addresses of the family asked for, in the resolver's order."""
    host = endpoint.host
    try:
        infos = await loop.getaddrinfo(
            host, endpoint.port, family=endpoint.family, type=socket.SOCK_STREAM
        )
    except OSError as exc:  # socket.gaierror, or EMFILE from the resolver's own socket
        raise failures.resolve_failed(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    addresses: list[tuple[socket.AddressFamily, str]] = []
    for info_family, _, _, _, sockaddr in infos:
        address = (info_family, str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise failures.resolve_failed(f"cannot resolve {host}: no address")
    return addresses


async def _connect(
    loop: asyncio.AbstractEventLoop,
    protocol: Dialed,
    addresses: list[tuple[socket.AddressFamily, str]],
    endpoint: Endpoint,
    failures: Failures,
) -> None:
    """Connect to each address in turn until one answers; the protocol starts on it."""
    context = endpoint.ssl_context
    server_hostname = (endpoint.server_hostname or endpoint.host) if context else None
    handshakes, port = protocol.handshakes, endpoint.port
    failure: OSError | None = None
    for family, address in addresses:
        try:
            if context is None:  # no handshake to collect
                await loop.create_connection(lambda: protocol, address, port, family=family)
                return
            with collect_handshakes(handshakes):
                await loop.create_connection(
                    lambda: protocol,
                    address,
                    port,
                    family=family,
                    ssl=context,
                    server_hostname=server_hostname,
                )
            return
        except ssl.SSLError as exc:
            raise failures.tls_failed(f"tls handshake failed: {ssl_text(exc)}", exc) from exc
        except OSError as exc:
            if handshakes:  # connected: the handshake is what failed
                raise failures.tls_failed(f"tls handshake failed: {ssl_text(exc)}", exc) from exc
            failure = exc.with_traceback(None)  # kept without the frames: no cycle
    assert failure is not None
    where = host_port(endpoint.host, endpoint.port)
    error = failure.strerror or failure
    if isinstance(failure, ConnectionRefusedError):
        message = failures.refusal.format(where=where, error=error)
        raise failures.refused(message) from failure
    raise failures.connect_failed(f"cannot connect to {where}: {error}") from failure
