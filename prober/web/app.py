"""The daemon's web endpoints; the only module that builds the aiohttp web app."""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import hdrs, web, web_response
from aiohttp.typedefs import Handler, Middleware

from prober.config.load import Config, ConfigError
from prober.engine.daemon import Daemon
from prober.sinks.log import Throttled
from prober.web.exposition import negotiate
from prober.web.listen import ListenAddress, bind
from prober.web.status_page import render_status_page

log = logging.getLogger("prober.web.app")

_MAX_REQUEST_BYTES = 64 * 1024
# aiohttp names itself and Python with their versions in every response's Server header,
# its own 400s for malformed requests included (no app hook sees those): say only "prober".
setattr(web_response, "SERVER_SOFTWARE", "prober")  # noqa: B010 (not re-exported: mypy)


class _Handlers:
    """Request handlers; they only read the daemon's sinks or ask it to reload."""

    def __init__(
        self, daemon: Daemon, enable_lifecycle: bool, reload: Callable[[], Awaitable[Config]]
    ) -> None:
        self.daemon = daemon
        self.enable_lifecycle = enable_lifecycle
        self.reload_config = reload

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        """Stream the exposition in the format asked for, yielding to the loop between pieces.

        At 10,000 checks the text is tens of megabytes; sending it in one go would stall
        every probe in flight for the whole join and write.
        """
        exposition = negotiate(
            request.headers.get(hdrs.ACCEPT), request.headers.get(hdrs.ACCEPT_ENCODING)
        )
        response = web.StreamResponse(
            headers={"Content-Type": exposition.content_type, "Vary": "Accept, Accept-Encoding"}
        )
        if exposition.gzip:
            # aiohttp compresses each piece off the event loop (in its executor).
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        for chunk in self.daemon.metrics.render_chunks(openmetrics=exposition.openmetrics):
            await response.write(chunk)
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def healthy(self, _: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _: web.Request) -> web.Response:
        if self.daemon.ready:
            return web.Response(text="Ready\n")
        return web.Response(text="Not ready\n", status=503)

    def _snapshot(self) -> dict[str, Any]:
        """The status snapshot with the config's global labels (the vantage point)."""
        config = self.daemon.config
        return self.daemon.status.snapshot(config.settings.labels if config else None)

    async def api_status(self, _: web.Request) -> web.Response:
        return web.json_response(self._snapshot())

    async def status_page(self, _: web.Request) -> web.Response:
        html = render_status_page(self._snapshot())
        return web.Response(text=html, content_type="text/html")

    async def reload(self, _: web.Request) -> web.Response:
        if not self.enable_lifecycle:
            return web.Response(
                status=403, text="lifecycle API is disabled; start with --web.enable-lifecycle\n"
            )
        try:
            config = await self.reload_config()
        except ConfigError as exc:
            return web.Response(status=400, text=f"reload failed:\n{exc}\n")
        return web.Response(text=f"reloaded: {len(config.checks)} checks\n")

    async def index(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/status")


def build_app(
    daemon: Daemon,
    enable_lifecycle: bool = False,
    middlewares: Iterable[Middleware] = (),
    reload: Callable[[], Awaitable[Config]] | None = None,
    response_headers: Callable[[], Mapping[str, str]] | None = None,
) -> web.Application:
    """Routes: /metrics, /status, /api/status, /-/healthy, /-/ready and /-/reload (if enabled).

    `reload` is what /-/reload calls (default: the daemon's reload); `middlewares` wrap every
    route (basic auth from the web config); `response_headers` gives the headers to add to
    every response, streamed ones included (read per response, so a reload takes effect).
    """
    app = web.Application(client_max_size=_MAX_REQUEST_BYTES, middlewares=list(middlewares))
    if response_headers is not None:
        headers_now = response_headers

        async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers_now())

        app.on_response_prepare.append(add_headers)
    handlers = _Handlers(daemon, enable_lifecycle, reload or daemon.reload)
    app.router.add_get("/", handlers.index)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/status", handlers.status_page)
    app.router.add_get("/api/status", handlers.api_status)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_post("/-/reload", handlers.reload)
    app.router.add_put("/-/reload", handlers.reload)
    return app


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
