"""The web endpoints read only their narrow sources: served over loopback from a stand-in
that is no Daemon (tests/support/web.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from prober.engine.daemon import Daemon
from prober.web.app import MetricsSource, Reload, StatusSource, build_app
from prober.web.exposition import OPENMETRICS_CONTENT_TYPE
from prober.web.server import WebServer, start_web
from tests.support.processes import wait_for
from tests.support.web import METRICS, SAMPLE, StandIn

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve apps on free loopback ports; returns each one's base URL; all stopped after."""
    servers: list[WebServer] = []

    async def start(app: web.Application) -> str:
        server = await start_web(app, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.cleanup()


async def test_every_endpoint_answers_from_a_stand_in_that_is_no_daemon(serve: Serve) -> None:
    stand_in = StandIn()
    base = await serve(build_app(stand_in, stand_in))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert await response.read() == b"".join([*METRICS, SAMPLE])
        headers = {"Accept": OPENMETRICS_CONTENT_TYPE}
        async with session.get(f"{base}/metrics", headers=headers) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.read()).endswith(b"# EOF\n")
        async with session.get(f"{base}/api/status") as response:
            assert await response.json() == stand_in.snapshot
        async with session.get(f"{base}/status") as response:
            page = await response.text()
        async with session.get(f"{base}/", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (302, "/status")
        async with session.get(f"{base}/-/healthy") as response:
            assert await response.text() == "OK\n"
    assert stand_in.formats == [False, True]
    assert 'data-verdict="component_down"' in page
    assert 'data-check="stand-in-check" data-state="failing"' in page


async def test_ready_follows_the_status_source(serve: Serve) -> None:
    stand_in = StandIn(ready=False)
    base = await serve(build_app(stand_in, stand_in))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/-/ready") as response:
            assert (response.status, await response.text()) == (503, "Not ready\n")
        stand_in.ready = True
        async with session.get(f"{base}/-/ready") as response:
            assert (response.status, await response.text()) == (200, "Ready\n")


async def test_reload_counts_the_checks_or_answers_the_located_errors(serve: Serve) -> None:
    stand_in = StandIn()
    base = await serve(build_app(stand_in, stand_in, stand_in.reload))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/-/reload") as response:
            assert (response.status, await response.text()) == (200, "reloaded: 3 checks\n")
        stand_in.broken = True
        async with session.put(f"{base}/-/reload") as response:
            assert response.status == 400
            assert "stand-in.yml:3: check 'c': interval: not a duration" in await response.text()
    assert stand_in.reloads == 2


async def test_without_a_reload_the_lifecycle_api_is_off(serve: Serve) -> None:
    stand_in = StandIn()
    base = await serve(build_app(stand_in, stand_in))
    async with aiohttp.ClientSession() as session, session.post(f"{base}/-/reload") as response:
        assert response.status == 403
        assert "--web.enable-lifecycle" in await response.text()
    assert stand_in.reloads == 0


async def test_response_headers_are_read_per_response_streamed_ones_too(serve: Serve) -> None:
    stand_in = StandIn()
    headers = {"X-Frame-Options": "DENY"}
    base = await serve(build_app(stand_in, stand_in, response_headers=lambda: headers))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as response:
            assert response.headers["X-Frame-Options"] == "DENY"
        headers["X-Frame-Options"] = "SAMEORIGIN"  # as a reload of the web config would
        async with session.get(f"{base}/api/status") as response:
            assert response.headers["X-Frame-Options"] == "SAMEORIGIN"


async def test_a_reload_in_flight_does_not_hold_other_requests(serve: Serve) -> None:
    stand_in = StandIn(release=asyncio.Event())
    base = await serve(build_app(stand_in, stand_in, stand_in.reload))
    async with aiohttp.ClientSession() as session:
        reloading = asyncio.create_task(session.post(f"{base}/-/reload"))
        await wait_for(lambda: stand_in.reloads == 1)
        async with session.get(f"{base}/-/ready") as response:
            assert response.status == 200
        assert stand_in.release is not None
        stand_in.release.set()
        async with await reloading as response:
            assert response.status == 200


def test_the_daemon_is_such_a_source(tmp_path: Path) -> None:
    """The wiring cli/serve.py does, checked by mypy: the daemon, its metrics sink and its
    reload satisfy the web app's interfaces."""
    daemon = Daemon(tmp_path / "prober.yml")
    status: StatusSource = daemon
    metrics: MetricsSource = daemon.metrics
    reload: Reload = daemon.reload
    assert build_app(metrics, status, reload) is not None
