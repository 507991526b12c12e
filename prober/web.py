"""The daemon's web endpoints; the only module that builds the aiohttp web app."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from prober.config import Config, ConfigError
from prober.daemon import Daemon
from prober.metrics import CONTENT_TYPE
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

    async def metrics(self, _: web.Request) -> web.Response:
        body = self.daemon.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthy(self, _: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _: web.Request) -> web.Response:
        if self.daemon.ready:
            return web.Response(text="Ready\n")
        return web.Response(text="Not ready\n", status=503)

    async def api_status(self, _: web.Request) -> web.Response:
        return web.json_response(self.daemon.status.snapshot())

    async def status_page(self, _: web.Request) -> web.Response:
        html = render_status_page(self.daemon.status.snapshot())
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
) -> web.Application:
    """Routes: /metrics, /status, /api/status, /-/healthy, /-/ready and /-/reload (if enabled).

    `reload` is what /-/reload calls (default: the daemon's reload); `middlewares` wrap every
    route (basic auth and response headers from the web config).
    """
    app = web.Application(client_max_size=_MAX_REQUEST_BYTES, middlewares=list(middlewares))
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


async def start_web(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Listen on host:port (port 0 picks a free one), over TLS if given; return the runner."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner actually listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("web server is not listening")
