"""The reference endpoint: a known-good target for the prober's canary, apart from the platform.

A canary must not share fate with what it vouches for: if it probed the platform's own host,
stopping that host would read as "the prober is impaired" and silence every alert. `prober
reference` (its own process, started beside the sim by `prober demo`) answers `/-/healthy`
and `/` with 200 and nothing else, so its failure can only mean the prober's own network or
event loop is in trouble. In a real deployment point `CANARY_URL` at an endpoint like it that
lives beside the prober, not beside the platform.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from prober.sim.server import parse_listen

DEFAULT_REFERENCE_LISTEN = "127.0.0.1:8181"


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_reference_app() -> web.Application:
    """The reference app: GET / and /-/healthy answer 200 `{"status": "ok"}`."""
    app = web.Application()
    app.router.add_get("/", _ok)
    app.router.add_get("/-/healthy", _ok)
    return app


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=DEFAULT_REFERENCE_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_REFERENCE_LISTEN}; port 0 picks one)",
    )


def run_reference(args: argparse.Namespace) -> int:
    """`prober reference`: serve until SIGINT/SIGTERM; a bad address returns 2."""
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"prober reference: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(host, port))


async def _serve(host: str, port: int) -> int:
    runner = web.AppRunner(create_reference_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        print(f"prober reference: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    print(f"prober reference: serving http://{shown}:{bound[1]}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
    return 0
