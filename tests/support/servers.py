"""Loopback servers the probes are tested against: an HTTP target, a DNS zone."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import dns.message
import dns.rcode
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


# A DNS zone served over loopback UDP (tests of dns checks).
ZONE: dict[tuple[str, str], list[str]] = {
    ("api.example.test.", "A"): ["10.0.0.1", "10.0.0.2"],
    ("api.example.test.", "AAAA"): ["2001:db8::1"],
    ("api.example.test.", "TXT"): ['"v=prober1 ok"'],
    ("www.example.test.", "CNAME"): ["api.example.test."],
}


NAMES = {name for name, _ in ZONE} | {"broken.example.test."}


StartDnsServer = Callable[..., Awaitable[str]]


class DnsZone(asyncio.DatagramProtocol):
    """Answers from ZONE; NXDOMAIN for unknown names; SERVFAIL for broken.*; or never."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.silent or self.transport is None:
            return
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if name not in NAMES:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif name.startswith("broken."):
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            values = ZONE.get((name, rdtype), [])
            if values:
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", rdtype, values))
        self.transport.sendto(response.to_wire(), addr)
