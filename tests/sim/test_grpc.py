"""The simulated platform's gRPC health service, called with grpclib's own client (apart
from the probe's), and `prober sim --grpc-listen` as a process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from prober.probes.net.grpc_wire import (
    HEALTH_CHECK_PATH,
    ServingStatus,
    decode_response,
    encode_request,
)
from prober.sim import DEMO_API_TOKEN, FaultSpec, RunningSim, SimOptions, start_sim
from prober.sim.grpc import BytesCodec
from tests.support.processes import REPO

FAST: dict[str, Any] = {"latency_ms": 0.0, "latency_jitter_ms": 0.0, "seed": 11}
SERVICES = ["", "api", "login", "timeline", "notifications"]


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(options=SimOptions(**FAST), grpc_listen=("127.0.0.1", 0))
    yield running
    await running.stop()


async def call(
    port: int,
    service: str = "",
    method: str = HEALTH_CHECK_PATH,
    within: float = 5.0,
    metadata: dict[str, str] | None = None,
) -> int:
    """One health call with grpclib's client; the serving status (or GRPCError)."""
    async with (
        Channel("127.0.0.1", port, codec=BytesCodec()) as channel,
        channel.request(
            method, Cardinality.UNARY_UNARY, bytes, bytes, timeout=within, metadata=metadata
        ) as stream,
    ):
        await stream.send_message(encode_request(service), end=True)
        answer = await stream.recv_message()
    return decode_response(answer or b"")


def grpc_port(sim: RunningSim) -> int:
    assert sim.grpc is not None
    return sim.grpc.port


async def stats(sim: RunningSim) -> dict[str, Any]:
    async with aiohttp.ClientSession() as client, client.get(f"{sim.url}/-/stats") as resp:
        data = await resp.json()
    components: dict[str, Any] = data["components"]
    return components


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s or "whole-platform")
async def test_every_service_serves_when_healthy(sim: RunningSim, service: str) -> None:
    assert await call(grpc_port(sim), service) == ServingStatus.SERVING


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"login": {"status": 503}}, {"login": ServingStatus.NOT_SERVING}),
        ({"login": {"status": 429}}, {"login": ServingStatus.SERVING}),
        ({"login": {"error_rate": 1.0}}, {"login": ServingStatus.NOT_SERVING}),
        ({"login": {"latency_ms": 20}}, {"login": ServingStatus.SERVING}),
        ({"login": {"status": 503, "accounts": 1.0}}, {"login": ServingStatus.SERVING}),
        ({"login": {"malformed": "json"}}, {"login": ServingStatus.SERVING}),
        ({"api": {"status": 500}}, {"": ServingStatus.NOT_SERVING, "login": ServingStatus.SERVING}),
        (
            {"all": {"status": 503}},
            {service: ServingStatus.NOT_SERVING for service in SERVICES},
        ),
    ],
    ids=[
        "5xx", "4xx-still-up", "error-rate", "latency", "account-scoped-spares-it", "body-fault",
        "api-is-the-whole", "all",
    ],
)  # fmt: skip
async def test_faults_decide_the_serving_status(
    faults: dict[str, dict[str, Any]], expected: dict[str, ServingStatus]
) -> None:
    options = SimOptions(**FAST, faults={k: FaultSpec(**v) for k, v in faults.items()})
    sim = await start_sim(options=options, grpc_listen=("127.0.0.1", 0))
    try:
        for service, status in expected.items():
            assert await call(grpc_port(sim), service) == status, service
    finally:
        await sim.stop()


async def test_a_call_with_a_token_is_drawn_for_its_account() -> None:
    """A pulled rack holding demo's shard (0.837) fails demo's call; an anonymous one, an
    unknown token and another account's (user-0002 at 0.106 is spared at 0.05) pass."""
    fault = FaultSpec(status=503, accounts=0.9)
    spared = FaultSpec(status=503, accounts=0.05)
    options = SimOptions(**FAST, faults={"notifications": fault, "login": spared})
    sim = await start_sim(options=options, grpc_listen=("127.0.0.1", 0))
    demo = {"authorization": f"Bearer {DEMO_API_TOKEN}"}
    try:
        assert (
            await call(grpc_port(sim), "notifications", metadata=demo) == ServingStatus.NOT_SERVING
        )
        assert await call(grpc_port(sim), "notifications") == ServingStatus.SERVING
        unknown = {"authorization": "Bearer nobody"}
        assert (
            await call(grpc_port(sim), "notifications", metadata=unknown) == ServingStatus.SERVING
        )
        assert await call(grpc_port(sim), "login", metadata=demo) == ServingStatus.SERVING
        counted = await stats(sim)
        assert counted["notifications"]["outcomes"]["error_status"] == 1
        assert counted["notifications"]["accounts"] == {"seen": 1, "hit": 1, "capped": False}
    finally:
        await sim.stop()


async def test_reset_fault_fails_the_call_unavailable(sim: RunningSim) -> None:
    async with aiohttp.ClientSession() as client:
        await client.put(f"{sim.url}/-/faults/timeline", json={"reset": True})
    with pytest.raises(GRPCError) as raised:
        await call(grpc_port(sim), "timeline")
    assert raised.value.status is Status.UNAVAILABLE


async def test_hung_call_waits_until_the_client_gives_up_and_is_counted(sim: RunningSim) -> None:
    async with aiohttp.ClientSession() as client:
        await client.put(f"{sim.url}/-/faults/notifications", json={"hang": True})
    with pytest.raises((asyncio.TimeoutError, GRPCError)):
        await call(grpc_port(sim), "notifications", within=0.3)
    counted = await stats(sim)
    assert counted["notifications"]["outcomes"]["hang"] == 1


async def test_stop_releases_a_hung_call() -> None:
    options = SimOptions(**FAST, faults={"api": FaultSpec(hang=True)})
    sim = await start_sim(options=options, grpc_listen=("127.0.0.1", 0))
    hung = asyncio.create_task(call(grpc_port(sim), "api", within=30.0))
    async with asyncio.timeout(10):
        while not (await stats(sim))["api"]["outcomes"]["hang"]:  # noqa: ASYNC110 (the counts over HTTP)
            await asyncio.sleep(0.01)
        await sim.stop()  # within the bound: it does not wait out the call
        with pytest.raises(GRPCError) as raised:
            await hung
    assert raised.value.status is Status.UNAVAILABLE


async def test_unknown_service_and_method(sim: RunningSim) -> None:
    with pytest.raises(GRPCError) as unknown:
        await call(grpc_port(sim), "billing")
    assert unknown.value.status is Status.NOT_FOUND
    with pytest.raises(GRPCError) as watch:
        await call(grpc_port(sim), "", method="/grpc.health.v1.Health/Watch")
    assert watch.value.status is Status.UNIMPLEMENTED


async def test_calls_are_counted_under_their_component(sim: RunningSim) -> None:
    async with aiohttp.ClientSession() as client:
        await client.put(f"{sim.url}/-/faults/login", json={"status": 503})
    await call(grpc_port(sim), "")
    await call(grpc_port(sim), "login")
    counted = await stats(sim)
    assert counted["api"]["outcomes"]["ok"] == 1
    assert counted["login"]["outcomes"]["error_status"] == 1


async def test_no_grpc_unless_asked() -> None:
    sim = await start_sim(options=SimOptions(**FAST))
    try:
        assert sim.grpc is None
    finally:
        await sim.stop()


_SIM_CODE = (
    "import argparse, sys\n"
    "from prober.sim.server import add_sim_arguments, run_sim\n"
    "p = argparse.ArgumentParser(); add_sim_arguments(p)\n"
    "sys.exit(run_sim(p.parse_args(sys.argv[1:])))\n"
)


async def test_sim_command_prints_and_serves_the_grpc_address() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIM_CODE, "--listen", "127.0.0.1:0",
        "--grpc-listen", "127.0.0.1:0", "--fault", "login:status=503",
        stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("prober sim: serving http://127.0.0.1:")
        found = re.search(r"gRPC health 127\.0\.0\.1:(\d+)$", line.strip())
        assert found is not None, line
        port = int(found.group(1))
        assert await call(port, "api") == ServingStatus.SERVING
        assert await call(port, "login") == ServingStatus.NOT_SERVING
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_grpc_listen_is_one_line_and_exit_2() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIM_CODE, "--grpc-listen", "nowhere",
        stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert err.decode() == (
        "prober sim: bad --grpc-listen 'nowhere': expected HOST:PORT, e.g. 127.0.0.1:50051\n"
    )
