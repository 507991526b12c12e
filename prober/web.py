"""The daemon's web endpoints; the only module that builds the aiohttp web app."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from prober.config import Config, ConfigError
from prober.daemon import Daemon
from prober.exposition import negotiate
from prober.listen import ListenAddress, bind
from prober.status_page import render_status_page

_MAX_REQUEST_BYTES = 64 * 1024


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


@web.middleware
async def _bounded_body(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse bodies over the cap (413) even on routes that never read them."""
    if request.body_exists:
        await request.read()  # raises 413 past client_max_size; our routes take no body
    return await handler(request)


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
    app = web.Application(
        client_max_size=_MAX_REQUEST_BYTES, middlewares=[_bounded_body, *middlewares]
    )
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


# A client gets this long to send each request head (and to finish a TLS handshake); a
# slow client trickling bytes (slowloris) is cut off instead of holding a connection forever.
REQUEST_HEAD_SECONDS = 10.0
_HEAD_END = b"\r\n\r\n"


class _HeadDeadline(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: each request head must arrive in time.

    The clock starts when the connection opens and again after each complete head, so an
    idle keep-alive connection is closed after the same bound.
    """

    def __init__(self, inner: asyncio.Protocol, limit: float) -> None:
        self._inner = inner
        self._limit = limit
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._limit, self._expire)

    def _expire(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        window = self._tail + data
        if _HEAD_END in window:
            self._arm()
        self._tail = window[-(len(_HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


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
    head_seconds: float = REQUEST_HEAD_SECONDS,
) -> WebServer:
    """Listen on host:port (port 0 picks a free one; "" every interface), over TLS if given."""
    return await serve_on(app, [bind(ListenAddress(host, port))], ssl_context, head_seconds)


async def serve_on(
    app: web.Application,
    sockets: Sequence[socket.socket],
    ssl_context: ssl.SSLContext | None = None,
    head_seconds: float = REQUEST_HEAD_SECONDS,
) -> WebServer:
    """Serve the app on sockets already bound and listening (`prober.listen.bind_all`).

    The sockets belong to the returned server from here on, even if this raises.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    handler_factory = runner.server
    assert handler_factory is not None
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        for sock in sockets:
            server = await loop.create_server(
                lambda: _HeadDeadline(handler_factory(), head_seconds),
                sock=sock,
                ssl=ssl_context,
                ssl_handshake_timeout=head_seconds if ssl_context else None,
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
