"""The listening web server holds every connection to its limits: one head deadline,
an idle limit, a connection cap that closes idle ones first, and a Server header that names
no versions. Served over loopback from a stand-in (tests/support/web.py)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web

from prober.web.app import build_app
from prober.web.server import WebLimits
from tests.support.processes import wait_for
from tests.support.web import METRICS, SAMPLE, StandIn, serving


def app(stand_in: StandIn) -> web.Application:
    return build_app(stand_in, stand_in)


async def closed_by_server(reader: asyncio.StreamReader, limit: float = 15.0) -> bool:
    """Whether the server ends the connection (EOF or reset) within `limit` seconds."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout=limit):
            pass
    except (ConnectionError, TimeoutError) as exc:
        return not isinstance(exc, TimeoutError)
    return True


async def test_crlf_trickle_cannot_re_arm_the_head_deadline() -> None:
    async with serving(app(StandIn()), WebLimits(head_seconds=0.5)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        trickled = 0
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 15
        # A `\r\n` every 50 ms: each pair of them used to re-arm the old deadline.
        while not reader.at_eof() and loop.time() < give_up:
            with contextlib.suppress(ConnectionError):
                writer.write(b"\r\n")
                await writer.drain()
                trickled += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), timeout=0.05)
        writer.close()
        assert reader.at_eof(), f"still open after {trickled} CRLFs"


async def test_idle_keep_alive_connection_is_closed_after_the_idle_limit() -> None:
    async with serving(app(StandIn()), WebLimits(idle_seconds=0.5)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"OK\n"), timeout=15)
        assert head.startswith(b"HTTP/1.1 200")
        assert await closed_by_server(reader)
        writer.close()


# Long enough that a connection admitted by mistake outlives `closed_by_server`'s wait.
CAPPED = WebLimits(max_connections=3, head_seconds=60, idle_seconds=60)


async def test_connection_cap_closes_the_oldest_idle_one_so_a_scrape_is_served() -> None:
    async with serving(app(StandIn()), CAPPED) as server:
        # Three connections that never send a byte take every slot ...
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        url = f"http://127.0.0.1:{server.port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200  # ... yet a scrape is served: the oldest idle one went
            assert await resp.read() == b"".join([*METRICS, SAMPLE])
        assert await closed_by_server(idle[0][0])
        for _, writer in idle:
            writer.close()


async def test_connection_cap_refuses_a_connection_only_when_all_are_in_a_request() -> None:
    release = asyncio.Event()
    stand_in = StandIn(release=release)
    async with serving(build_app(stand_in, stand_in, stand_in.reload), CAPPED) as server:
        busy = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for _, writer in busy:
            writer.write(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await wait_for(lambda: stand_in.reloads == 3)
        refused, refused_writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await closed_by_server(refused)
        refused_writer.close()
        release.set()
        for reader, writer in busy:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=15)
            assert head.startswith(b"HTTP/1.1 200"), head
            writer.close()
        url = f"http://127.0.0.1:{server.port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200


async def test_server_header_names_no_versions() -> None:
    async with serving(app(StandIn()), WebLimits()) as server:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/metrics") as resp,
        ):
            assert resp.headers["Server"] == "prober"
        # aiohttp answers a malformed request itself, outside every app hook.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=15)
        writer.close()
    assert answer.startswith(b"HTTP/1.0 400")
    assert b"\r\nServer: prober\r\n" in answer
    assert b"aiohttp" not in answer and b"Python" not in answer
