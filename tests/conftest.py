"""Shared fixtures: a controllable HTTP target on loopback, config writers, tool lookup."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """Path of a Prometheus tool: in CI a missing tool fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package: prometheus); .ci/run installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


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


def _target_app(target: Target) -> web.Application:
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


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    state = Target()
    runner = web.AppRunner(_target_app(state), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    state.hang.set()
    await runner.cleanup()


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write prober.yml (and optional check files) into tmp_path; return prober.yml's path."""

    def write(main: str, **check_files: str) -> Path:
        for name, text in check_files.items():
            (tmp_path / "checks").mkdir(exist_ok=True)
            (tmp_path / "checks" / f"{name}.yml").write_text(textwrap.dedent(text))
        path = tmp_path / "prober.yml"
        path.write_text(textwrap.dedent(main))
        return path

    return write


async def wait_for(condition: Callable[[], object], limit: float = 10.0) -> None:
    """Wait until condition() (plain or async) is truthy, or fail after `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {limit}s")
        await asyncio.sleep(0.05)


REPO = Path(__file__).resolve().parent.parent


def fast_shipped_config(
    directory: Path, interval: str = "1s", timeout: str = "0.8s", extra: str = ""
) -> Path:
    """The shipped prober.yml and checks/, with short intervals, written into `directory`.

    `extra` is appended to prober.yml (e.g. a looser `loop_lag_budget` where a test runs the
    simulated platform in the daemon's own event loop).
    """
    text = (REPO / "prober.yml").read_text()
    text = text.replace("checks/*.yml", str(REPO / "checks" / "*.yml"))
    text = text.replace("interval: 15s", f"interval: {interval}")
    text = text.replace("timeout: 5s", f"timeout: {timeout}")
    path = directory / "prober.yml"
    path.write_text(text + extra)
    return path
