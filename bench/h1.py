"""CPU per request: the lean HTTP/1.1 client (`prober.probes.net.h1`) next to aiohttp.

A bounded micro-benchmark: N GETs over fresh connections against a local aiohttp server,
first through an aiohttp `ClientSession` with a `force_close` connector (what prober's http
checks use today), then through `h1.fetch`, in rounds that alternate. The server runs in a
child process on the other core when there are two, so this process's CPU
(`time.process_time`) is the client's own. Both clients run on uvloop when it is installed.
It prints figures and asserts nothing; it is not part of `make bench`.

    python -m bench.h1 [--requests 2000] [--concurrency 10] [--rounds 3] [--loop auto|on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.procs import Child, cores
from prober.engine.loop import use_event_loop
from prober.probes.net.h1 import H1Request, fetch

_BODY = b"ok\n"
Client = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Round:
    """One client's run of N requests: CPU and wall time per request, in seconds."""

    cpu: float
    wall: float


def _serve(port: int) -> None:
    """The child: a small aiohttp app that answers GET /ok at once."""

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(body=_BODY, content_type="text/plain")

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/ok", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print(f"listening {runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    use_event_loop("auto")
    asyncio.run(run())


async def _measure(client: Client, url: str, requests: int, concurrency: int) -> Round:
    """Run `requests` through `client` with `concurrency` in flight; CPU and wall per request."""
    await asyncio.gather(*(client(url) for _ in range(concurrency)))  # warm-up
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await client(url)
            if status != 200:
                raise RuntimeError(f"status {status}")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Round((time.process_time() - cpu) / requests, (time.perf_counter() - wall) / requests)


async def _aiohttp_round(url: str, requests: int, concurrency: int) -> Round:
    connector = aiohttp.TCPConnector(
        force_close=True, limit=0, use_dns_cache=False, enable_cleanup_closed=False
    )
    async with aiohttp.ClientSession(
        connector=connector, headers={"User-Agent": "prober-bench"}
    ) as session:

        async def client(target: str) -> int:
            async with session.get(target) as response:
                await response.read()
                return response.status

        return await _measure(client, url, requests, concurrency)


async def _h1_round(url: str, requests: int, concurrency: int) -> Round:
    loop = asyncio.get_running_loop()
    headers = (("User-Agent", "prober-bench"),)

    async def client(target: str) -> int:
        response = await fetch(H1Request("GET", target, headers), loop.time() + 5.0)
        return response.status

    return await _measure(client, url, requests, concurrency)


def _run_rounds(args: argparse.Namespace, url: str) -> dict[str, list[Round]]:
    rounds: dict[str, list[Round]] = {"aiohttp force_close": [], "h1": []}
    for _ in range(args.rounds):  # alternating, so drift on a shared machine hits both
        for name, make in (("aiohttp force_close", _aiohttp_round), ("h1", _h1_round)):
            rounds[name].append(asyncio.run(make(url, args.requests, args.concurrency)))
    return rounds


def _report(rounds: dict[str, list[Round]], loop_name: str, args: argparse.Namespace) -> None:
    print(
        f"{args.requests} GETs x {args.rounds} rounds, {args.concurrency} in flight, "
        f"event loop {loop_name}, Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}"
    )
    print(f"{'client':<22}{'CPU/request (median)':>22}{'min':>10}{'wall/request':>16}")
    medians: dict[str, float] = {}
    for name, runs in rounds.items():
        cpu = [r.cpu for r in runs]
        medians[name] = statistics.median(cpu)
        wall = statistics.median(r.wall for r in runs)
        print(
            f"{name:<22}{medians[name] * 1e3:>19.3f} ms{min(cpu) * 1e3:>7.3f} ms"
            f"{wall * 1e3:>13.3f} ms"
        )
    ratio = medians["h1"] / medians["aiohttp force_close"]
    print(f"h1 / aiohttp CPU per request: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        _serve(args.serve)
        return
    two_cores = cores() >= 2
    with tempfile.TemporaryDirectory(prefix="bench-h1-") as workdir:
        server = Child(
            "aiohttp server",
            [sys.executable, "-m", "bench.h1", "--serve", "0"],
            core=1 if two_cores else 0,
            log=Path(workdir) / "server.log",
        )
        try:
            port = server.wait_line("listening").split()[1]
            if two_cores:
                os.sched_setaffinity(0, {0})
            loop_name = use_event_loop(args.loop)
            rounds = _run_rounds(args, f"http://127.0.0.1:{port}/ok")
        finally:
            server.stop()
    _report(rounds, loop_name, args)


if __name__ == "__main__":
    main()
