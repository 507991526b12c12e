"""Loopback servers the probes are tested against: an HTTP target, a DNS zone (UDP, TCP)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aiohttp import web


@dataclass
class Target:
    """A local HTTP server whose behaviour a test can change while the daemon probes it."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    body: bytes = b'{"status": "ok", "items": [1, 2, 3]}'
    hits: int = 0
    recover_after: int | None = None
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    def at(self, path: str) -> str:
        return self.url + path


def target_app(target: Target) -> web.Application:
    async def main(request: web.Request) -> web.StreamResponse:
        target.hits += 1
        if target.recover_after is not None and target.hits > target.recover_after:
            target.status = 200
        if target.delay:
            await asyncio.sleep(target.delay)
        return web.Response(status=target.status, body=target.body, content_type="application/json")

    async def hang(request: web.Request) -> web.StreamResponse:
        await target.hang.wait()
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * int(request.query.get("n", "100000")))

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "headers": dict(request.headers),
                "body": await request.text(),
                "query": dict(request.query),
            }
        )

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ok")

    app = web.Application()
    app.router.add_route("*", "/ok", main)
    app.router.add_get("/hang", hang)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/redirect", redirect)
    return app


async def serve_app(
    app: web.Application, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free port of `host`; returns the runner (the caller cleans it up) and
    the base URL (`https` with an SSL context, IPv6 hosts in brackets)."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, 0, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def free_port() -> int:
    """A loopback port nothing listens on (a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A DNS zone served over loopback UDP and TCP on the same port (tests of dns checks).
SOA_SERIAL = 2024010101
_SOA = f"ns1.example.test. hostmaster.example.test. {SOA_SERIAL} 3600 600 86400 60"
ZONE: dict[tuple[str, str], list[str]] = {
    ("api.example.test.", "A"): ["10.0.0.1", "10.0.0.2"],
    ("api.example.test.", "AAAA"): ["2001:db8::1"],
    ("api.example.test.", "TXT"): ['"v=prober1 ok"'],
    ("www.example.test.", "CNAME"): ["api.example.test."],
    ("example.test.", "SOA"): [_SOA],
    ("example.test.", "NS"): ["ns1.example.test."],
    ("example.test.", "MX"): ["10 mail.example.test."],
    ("_api._tcp.example.test.", "SRV"): ["10 5 443 api.example.test."],
    ("1.0.0.10.in-addr.arpa.", "PTR"): ["api.example.test."],
    ("ns1.example.test.", "A"): ["10.0.0.53"],
    ("mail.example.test.", "A"): ["10.0.0.25"],
    # Too big for a 512-byte UDP answer: the server sets TC and the client asks over TCP.
    ("big.example.test.", "TXT"): [f'"{i:02d} {"x" * 40}"' for i in range(20)],
}
# Answers of these types name hosts whose addresses go in the additional section (glue).
_GLUED = {"NS", "MX", "SRV"}
# Class CH, as servers tell their version.
CHAOS_ZONE = {("version.bind.", "TXT"): ['"prober-test"']}
# Answers with how it was asked: `"udp 127.0.0.1 rd=1"` (transport, client address, RD bit).
WHOAMI = "whoami.example.test."
NAMES = {name for name, _ in ZONE} | {"broken.example.test.", WHOAMI, "version.bind."}
UDP_LIMIT = 512  # without EDNS, as the dns probe asks


StartDnsServer = Callable[..., Awaitable[str]]


def zone_response(query: dns.message.Message, transport: str, client: str) -> dns.message.Message:
    """The zone's answer: NXDOMAIN (SOA in authority) for unknown names, SERVFAIL for
    broken.*, NODATA (SOA in authority) for a known name without records of the type."""
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text()
    rdtype = dns.rdatatype.to_text(question.rdtype)
    rdclass = dns.rdataclass.to_text(question.rdclass)
    if name not in NAMES:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif name.startswith("broken."):
        response.set_rcode(dns.rcode.SERVFAIL)
        return response
    elif name == WHOAMI:
        rd = 1 if query.flags & dns.flags.RD else 0
        values = [f'"{transport} {client} rd={rd}"']
        response.answer.append(dns.rrset.from_text_list(name, 0, "IN", "TXT", values))
        return response
    zone = CHAOS_ZONE if rdclass == "CH" else ZONE
    types = [t for n, t in zone if n == name] if rdtype == "ANY" else [rdtype]
    for found in types:
        values = zone.get((name, found), [])
        if values:
            response.answer.append(dns.rrset.from_text_list(name, 60, rdclass, found, values))
        if values and found in _GLUED:
            _add_glue(response, values)
    if not response.answer:
        response.authority.append(
            dns.rrset.from_text_list("example.test.", 60, "IN", "SOA", [_SOA])
        )
    return response


def _add_glue(response: dns.message.Message, values: list[str]) -> None:
    for value in values:
        host = value.split()[-1]
        if (host, "A") in ZONE:
            response.additional.append(
                dns.rrset.from_text_list(host, 60, "IN", "A", ZONE[(host, "A")])
            )


def _client(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) else "?"


class DnsZone(asyncio.DatagramProtocol):
    """The zone over UDP (truncated, TC set, where the answer is over 512 bytes), or never."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.silent or self.transport is None:
            return
        query = dns.message.from_wire(data)
        wire = zone_response(query, "udp", _client(addr)).to_wire()
        if len(wire) > UDP_LIMIT:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            wire = truncated.to_wire()
        self.transport.sendto(wire, addr)


async def _serve_tcp(
    silent: bool,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    transport: str = "tcp",
) -> None:
    """The zone over TCP (or TLS): length-prefixed messages until the client closes."""
    client = _client(writer.get_extra_info("peername"))
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            query = dns.message.from_wire(await reader.readexactly(size))
            if silent:
                continue
            wire = zone_response(query, transport, client).to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@dataclass
class DnsServers:
    """Servers of the zone on loopback, each on one port for UDP and TCP; closed at the end."""

    transports: list[asyncio.DatagramTransport] = field(default_factory=list)
    servers: list[asyncio.Server] = field(default_factory=list)

    async def start(self, host: str = "127.0.0.1", silent: bool = False) -> str:
        """A server of ZONE (`silent`: one that never answers); returns HOST:PORT."""
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the UDP port's TCP twin may be taken: try another
            transport, _ = await loop.create_datagram_endpoint(
                lambda: DnsZone(silent), local_addr=(host, 0)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                server = await asyncio.start_server(
                    lambda r, w: _serve_tcp(silent, r, w), host, port
                )
            except OSError:
                transport.close()
                continue
            self.transports.append(transport)
            self.servers.append(server)
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise RuntimeError("no port free for both UDP and TCP")

    async def start_tls(self, context: ssl.SSLContext, host: str = "127.0.0.1") -> str:
        """A DNS-over-TLS server of ZONE (RFC 7858: TCP framing inside TLS, `context` a
        server context); whoami answers `tls CLIENT rd=N`. Returns HOST:PORT."""
        server = await asyncio.start_server(
            lambda r, w: _serve_tcp(False, r, w, "tls"), host, 0, ssl=context
        )
        self.servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def close(self) -> None:
        for transport in self.transports:
            transport.close()
        for server in self.servers:
            server.close()
            await server.wait_closed()


def free_udp_port() -> int:
    """A loopback UDP port nothing listens on (a datagram to it gets port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What a raw loopback server runs per connection (the `raw_server` fixture).
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
StartRawServer = Callable[[StreamHandler], Awaitable[str]]
