"""The listening web server: our own sockets, aiohttp's per-connection protocol held to
per-connection limits (head deadline, idle, response, connection cap)."""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from aiohttp import web, web_response
from aiohttp.typedefs import Handler, Middleware

from prober.sinks.log import Throttled
from prober.web.listen import ListenAddress, bind

log = logging.getLogger("prober.web.server")

# aiohttp names itself and Python with their versions in every response's Server header,
# its own 400s for malformed requests included (no app hook sees those): say only "prober".
setattr(web_response, "SERVER_SOFTWARE", "prober")  # noqa: B010 (not re-exported: mypy)


@dataclass(frozen=True, slots=True)
class WebLimits:
    """What a web client may hold: time per request head, idle and response, and slots.

    Each request's head (and body) gets one deadline from its first byte (or the connect);
    nothing the client sends extends it, so trickling bytes (slowloris, a `\r\n` every
    second) is cut off. A keep-alive connection may sit idle between requests for
    `idle_seconds`; a handler has `response_seconds` to send its answer to a client that
    stops reading. Past `max_connections`, a new connection closes the oldest one that is not
    in a request (a scraper's connect is always served), and is refused only when all are.
    """

    head_seconds: float = 10.0
    idle_seconds: float = 75.0
    response_seconds: float = 120.0
    max_connections: int = 256


class _State(enum.Enum):
    HEAD = "waiting for a request head"
    BUSY = "in a request"
    IDLE = "idle between requests"


class _Connections:
    """The listener's open connections, oldest first, held to its limits."""

    def __init__(self, limits: WebLimits) -> None:
        self.limits = limits
        self.open: dict[asyncio.BaseTransport, _Connection] = {}
        self.full = Throttled(
            log, f"web connection limit ({limits.max_connections}) reached: closing idle ones"
        )

    def admit(self) -> bool:
        """Make room for one more connection; False when every slot is in a request."""
        if len(self.open) < self.limits.max_connections:
            return True
        self.full.note()
        for connection in self.open.values():
            if connection.state is not _State.BUSY:
                connection.shut()
                return True
        return False


class _Connection(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol and holds it to the listener's limits."""

    def __init__(self, inner: asyncio.Protocol, connections: _Connections) -> None:
        self._inner = inner
        self._connections = connections
        self._limits = connections.limits
        self.state = _State.HEAD
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._admitted = False

    def _wait(self, state: _State, seconds: float) -> None:
        """Enter `state`; the connection is cut off if it is still in it after `seconds`."""
        self.state = state
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self.shut)

    def shut(self) -> None:
        """Close now, dropping unsent data: a client that does not read must not hold it."""
        if self._transport is not None:
            self._connections.open.pop(self._transport, None)
            self._transport.abort()

    def request_started(self) -> None:
        self._wait(_State.BUSY, self._limits.response_seconds)

    def request_finished(self) -> None:
        self._wait(_State.IDLE, self._limits.idle_seconds)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream server's transport
        if not self._connections.admit():
            self._transport.abort()  # aiohttp never sees it
            return
        self._admitted = True
        self._connections.open[transport] = self
        self._wait(_State.HEAD, self._limits.head_seconds)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state is _State.IDLE:  # the next request begins: its one head deadline
            self._wait(_State.HEAD, self._limits.head_seconds)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._connections.open.pop(self._transport, None)
        if self._admitted:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _track(connections: _Connections) -> Middleware:
    """Tell each connection when its request starts and ends, for its deadlines."""

    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            # Read under the head deadline; 413 past client_max_size (our routes take no body).
            await request.read()
        connection = connections.open.get(request.transport) if request.transport else None
        if connection is None:
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_finished()

    return track


class WebServer:
    """The listening web server: aiohttp's runner behind our own listening sockets."""

    def __init__(self, runner: web.AppRunner, servers: Sequence[asyncio.Server]) -> None:
        self.runner = runner
        self.servers = tuple(servers)
        self.sockets = [sock for server in servers for sock in server.sockets]
        self.port = int(self.sockets[0].getsockname()[1])

    async def cleanup(self) -> None:
        """Stop listening, then let aiohttp finish in-flight requests and shut the app down."""
        for server in self.servers:
            server.close()
        await self.runner.cleanup()
        for server in self.servers:
            await server.wait_closed()


async def start_web(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    limits: WebLimits = WebLimits(),
) -> WebServer:
    """Listen on host:port (port 0 picks a free one; "" every interface), over TLS if given."""
    return await serve_on(app, [bind(ListenAddress(host, port))], ssl_context, limits)


async def serve_on(
    app: web.Application,
    sockets: Sequence[socket.socket],
    ssl_context: ssl.SSLContext | None = None,
    limits: WebLimits = WebLimits(),
) -> WebServer:
    """Serve the app on sockets already bound and listening (`prober.web.listen.bind_all`),
    within `limits` (shared by all the sockets).

    The sockets belong to the returned server from here on, even if this raises.
    """
    connections = _Connections(limits)
    app.middlewares.insert(0, _track(connections))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    handler_factory = runner.server
    assert handler_factory is not None
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        for sock in sockets:
            server = await loop.create_server(
                lambda: _Connection(handler_factory(), connections),
                sock=sock,
                ssl=ssl_context,
                ssl_handshake_timeout=limits.head_seconds if ssl_context else None,
            )
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        for sock in sockets[len(servers) :]:
            sock.close()
        await runner.cleanup()
        raise
    return WebServer(runner, servers)
