"""Shared fixtures: loopback servers, run environments, certificates, a DNS zone, config
writers, the canary reference, a metrics sink. Helpers they use live in tests/support/."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from prober.engine.runner import RunEnvironment
from prober.sim.reference import create_reference_app
from prober.sinks.metrics import MetricsSink, SeriesPlan
from tests.support.certs import CertFactory
from tests.support.checks import (
    WriteConfig,
    login_result,
    run_environment,
)
from tests.support.servers import (
    DnsServers,
    StartDnsServer,
    StartRawServer,
    StreamHandler,
    Target,
    serve_app,
    target_app,
)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    state = Target()
    runner, state.url = await serve_app(target_app(state))
    yield state
    state.hang.set()
    await runner.cleanup()


@pytest.fixture
async def env() -> AsyncIterator[RunEnvironment]:
    """A run environment with no template values and no secrets."""
    async with run_environment() as environment:
        yield environment


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def dns_server() -> AsyncIterator[StartDnsServer]:
    """Start servers of ZONE on loopback UDP and TCP (`silent`: never answer): HOST:PORT each."""
    servers = DnsServers()
    yield servers.start
    await servers.close()


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


@pytest.fixture
async def reference(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The canary's reference endpoint on a free port, apart from any sim; CANARY_URL set."""
    runner = web.AppRunner(create_reference_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setenv("CANARY_URL", url)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
def sink() -> MetricsSink:
    """A MetricsSink with two checks (quotes and backslashes in labels, the second with
    `detail: full`) after three runs."""
    sink = MetricsSink()
    sink.apply(
        {
            "a": SeriesPlan((("component", "api"),)),
            'b "q"': SeriesPlan((("component", "login"), ("team", "x\\y")), full=True),
        },
        {"vantage": "eu"},
    )
    sink.record(login_result("a", True, 0.02))
    sink.record(login_result("a", False, 0.3))
    sink.record(login_result('b "q"', True, 7.5))
    return sink


@pytest.fixture
async def raw_server() -> AsyncIterator[StartRawServer]:
    """Raw asyncio servers on 127.0.0.1, one per handler started: HOST:PORT of each. Every
    connection is aborted and its task cancelled at teardown."""
    servers: list[asyncio.Server] = []
    connections: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    def tracked(handler: StreamHandler) -> StreamHandler:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.append((task, writer))
            # The prober hanging up mid-answer is what should happen.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handler(reader, writer)

        return run

    async def start(handler: StreamHandler) -> str:
        server = await asyncio.start_server(tracked(handler), "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
    for task, writer in connections:
        task.cancel()
        writer.transport.abort()
    await asyncio.gather(*(task for task, _ in connections), return_exceptions=True)
    for server in servers:
        await server.wait_closed()
