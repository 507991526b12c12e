"""Fixtures for the simulated platform's tests: sims started with fast options and a
fresh-connection client (no mocks: real HTTP over 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from prober.sim import RunningSim, SimOptions, start_sim
from tests.support.sim import FAST, StartSim


@pytest.fixture
async def start() -> AsyncIterator[StartSim]:
    """Start sims with FAST options plus overrides; every one is stopped at teardown."""
    running: list[RunningSim] = []

    async def _start(**overrides: Any) -> RunningSim:
        sim = await start_sim(options=SimOptions(**{**FAST, **overrides}))
        running.append(sim)
        return sim

    yield _start
    for sim in running:
        await sim.stop()


@pytest.fixture
async def sim(start: StartSim) -> RunningSim:
    return await start()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A fresh connection per request, so a reset or hang never spills into the next request."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
