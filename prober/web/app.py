"""The daemon's web endpoints; the only module that builds the aiohttp web app.

The app reads what it serves through three narrow interfaces, so it knows nothing of the
daemon: something that renders the metrics, something that reports readiness and status,
and a reload callable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from prober.config.load import ConfigError
from prober.web.exposition import negotiate
from prober.web.status_page import render_status_page

_MAX_REQUEST_BYTES = 64 * 1024


class MetricsSource(Protocol):
    """Renders the exposition in pieces, for /metrics (the daemon's metrics sink)."""

    def render_chunks(self, *, openmetrics: bool) -> Iterable[bytes]: ...


class StatusSource(Protocol):
    """Says whether probing has started (/-/ready) and what the checks say: the plain JSON
    of /api/status and /status (verdict, components, checks; see StatusSink.snapshot)."""

    @property
    def ready(self) -> bool: ...

    def status_snapshot(self) -> dict[str, Any]: ...


class Reloaded(Protocol):
    """What a reload gives back: the config now running, whose checks /-/reload counts."""

    @property
    def checks(self) -> Sequence[object]: ...


# Loads the config again and applies it; raises ConfigError (the running one stays).
Reload = Callable[[], Awaitable[Reloaded]]


class _Handlers:
    """Request handlers; they only read the sources or ask for a reload."""

    def __init__(self, metrics: MetricsSource, status: StatusSource, reload: Reload | None) -> None:
        self._metrics = metrics
        self._status = status
        self._reload = reload

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
        for chunk in self._metrics.render_chunks(openmetrics=exposition.openmetrics):
            await response.write(chunk)
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def healthy(self, _: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(self, _: web.Request) -> web.Response:
        if self._status.ready:
            return web.Response(text="Ready\n")
        return web.Response(text="Not ready\n", status=503)

    async def api_status(self, _: web.Request) -> web.Response:
        return web.json_response(self._status.status_snapshot())

    async def status_page(self, _: web.Request) -> web.Response:
        html = render_status_page(self._status.status_snapshot())
        return web.Response(text=html, content_type="text/html")

    async def reload(self, _: web.Request) -> web.Response:
        if self._reload is None:
            return web.Response(
                status=403, text="lifecycle API is disabled; start with --web.enable-lifecycle\n"
            )
        try:
            config = await self._reload()
        except ConfigError as exc:
            return web.Response(status=400, text=f"reload failed:\n{exc}\n")
        return web.Response(text=f"reloaded: {len(config.checks)} checks\n")

    async def index(self, _: web.Request) -> web.Response:
        raise web.HTTPFound("/status")


def build_app(
    metrics: MetricsSource,
    status: StatusSource,
    reload: Reload | None = None,
    *,
    middlewares: Iterable[Middleware] = (),
    response_headers: Callable[[], Mapping[str, str]] | None = None,
) -> web.Application:
    """Routes: /metrics, /status, /api/status, /-/healthy, /-/ready and /-/reload.

    `reload` is what /-/reload calls; without one the lifecycle API is off (403, as without
    --web.enable-lifecycle). `middlewares` wrap every route (basic auth from the web config);
    `response_headers` gives the headers to add to every response, streamed ones included
    (read per response, so a reload takes effect).
    """
    app = web.Application(client_max_size=_MAX_REQUEST_BYTES, middlewares=list(middlewares))
    if response_headers is not None:
        headers_now = response_headers

        async def add_headers(_: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers_now())

        app.on_response_prepare.append(add_headers)
    handlers = _Handlers(metrics, status, reload)
    app.router.add_get("/", handlers.index)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/status", handlers.status_page)
    app.router.add_get("/api/status", handlers.api_status)
    app.router.add_get("/-/healthy", handlers.healthy)
    app.router.add_get("/-/ready", handlers.ready)
    app.router.add_post("/-/reload", handlers.reload)
    app.router.add_put("/-/reload", handlers.reload)
    return app
