"""`kind: grpc` through `run_check`, against the simulated platform's gRPC health service:
SERVING passes; a fault, an unknown service, a hang and a refused port fail with their
reason, their gRPC status and the phases reached; the series are blackbox_exporter's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from prober.config.model import GrpcCheck
from prober.config.secrets import Secret
from prober.engine.runner import RunEnvironment, run_check
from prober.probes.grpc import context_for as grpc_context_for
from prober.probes.net.tls import TlsBlock, tls_blocks
from prober.result import GrpcFacts, Reason, Result
from prober.sim import RunningSim, SimOptions, start_sim
from tests.support.certs import CertFactory
from tests.support.checks import facts_of, run_environment
from tests.support.samples import exported_samples
from tests.support.servers import free_port

FAST = SimOptions(latency_ms=0, latency_jitter_ms=0, seed=3)
HANG = 0.5  # the timeout of checks that are meant to hang


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(options=FAST, grpc_listen=("127.0.0.1", 0))
    yield running
    await running.stop()


def grpc_check(target: str, **fields: Any) -> GrpcCheck:
    settings: dict[str, Any] = {
        "name": "g",
        "kind": "grpc",
        "component": "api",
        "target": target,
        "interval": 10.0,
        "timeout": 5.0,
    }
    return GrpcCheck.model_validate({**settings, **fields})


def target_of(sim: RunningSim) -> str:
    assert sim.grpc is not None
    return sim.grpc.address


async def put_fault(sim: RunningSim, component: str, fault: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.put(f"{sim.url}/-/faults/{component}", json=fault) as resp,
    ):
        assert resp.status == 200, await resp.text()


def grpc_facts(result: Result) -> GrpcFacts:
    (step,) = result.steps
    return facts_of(step, GrpcFacts)


async def test_serving_service_passes_with_its_phases(sim: RunningSim, env: RunEnvironment) -> None:
    result = await run_check(grpc_check(target_of(sim), service="login"), env)
    assert result.success, result.message
    facts = grpc_facts(result)
    assert (facts.serving_status, facts.status_code, facts.tls) == ("SERVING", 0, None)
    assert facts.phases.connect > 0 and facts.phases.processing > 0 and facts.phases.tls == 0
    exported = exported_samples(result, "api")
    samples = {(n, dict(labels).get("phase")): v for n, labels, v in exported}
    assert samples[("probe_grpc_status_code", None)] == 0
    assert samples[("probe_grpc_ssl", None)] == 0
    assert {p for n, p in samples if n == "probe_grpc_duration_seconds"} == {
        "resolve",
        "connect",
        "tls",
        "check",
    }
    assert ("probe_grpc_healthcheck_response", None) not in samples  # detail: full only


async def test_full_detail_shows_one_series_per_serving_status(
    sim: RunningSim, env: RunEnvironment
) -> None:
    await put_fault(sim, "timeline", {"status": 503})
    result = await run_check(grpc_check(target_of(sim), service="timeline"), env)
    samples = exported_samples(result, "api", full=True)
    statuses = {
        dict(labels)["serving_status"]: value
        for name, labels, value in samples
        if name == "probe_grpc_healthcheck_response"
    }
    assert statuses == {"UNKNOWN": 0, "SERVING": 0, "NOT_SERVING": 1, "SERVICE_UNKNOWN": 0}


async def test_fault_makes_the_service_not_serving(sim: RunningSim, env: RunEnvironment) -> None:
    await put_fault(sim, "login", {"status": 503})
    result = await run_check(grpc_check(target_of(sim), service="login"), env)
    assert not result.success
    assert result.reason is Reason.STATUS
    assert "NOT_SERVING" in result.message
    facts = grpc_facts(result)
    assert (facts.serving_status, facts.status_code) == ("NOT_SERVING", 0)


async def test_unknown_service_fails_with_not_found(sim: RunningSim, env: RunEnvironment) -> None:
    result = await run_check(grpc_check(target_of(sim), service="nope"), env)
    assert result.reason is Reason.STATUS
    assert "NOT_FOUND" in result.message
    facts = grpc_facts(result)
    assert (facts.serving_status, facts.status_code) == (None, 5)


async def test_hung_service_times_out_naming_the_check_phase(
    sim: RunningSim, env: RunEnvironment
) -> None:
    await put_fault(sim, "api", {"hang": True})
    result = await run_check(grpc_check(target_of(sim), timeout=HANG), env)
    assert result.reason is Reason.TIMEOUT
    assert "check" in result.message
    facts = grpc_facts(result)
    assert facts.status_code == 4  # DEADLINE_EXCEEDED, as blackbox_exporter should report it
    assert facts.phases.processing > 0


async def test_refused_port_fails_in_connect(env: RunEnvironment) -> None:
    result = await run_check(grpc_check(f"127.0.0.1:{free_port()}"), env)
    assert result.reason is Reason.CONNECT_REFUSED
    assert grpc_facts(result).status_code == 14  # UNAVAILABLE


async def test_tls_call_shows_the_certificate(certs: CertFactory, env: RunEnvironment) -> None:
    server = certs.issue().server_context()
    server.set_alpn_protocols(["h2"])
    running = await start_sim(options=FAST, grpc_listen=("127.0.0.1", 0), grpc_tls=server)
    try:
        tls = {"ca_file": str(certs.ca_file)}
        target = target_of(running).replace("127.0.0.1", "localhost")
        result = await run_check(grpc_check(target, use_tls=True, tls=tls), env)
        assert result.success, result.message
        facts = grpc_facts(result)
        assert facts.tls is not None and facts.tls.expiry is not None
        assert facts.phases.tls > 0
        samples = {n: v for n, _, v in exported_samples(result, "api")}
        assert samples["probe_grpc_ssl"] == 1
        assert samples["probe_ssl_earliest_cert_expiry"] == facts.tls.expiry
        untrusted = await run_check(grpc_check(target, use_tls=True), env)
        assert untrusted.reason is Reason.TLS_CERT_INVALID
    finally:
        await running.stop()


async def test_a_tls_checks_context_is_the_one_built_at_load(
    certs: CertFactory, env: RunEnvironment
) -> None:
    """The daemon builds `tls_blocks` at load; a run must use that very context (ALPN h2),
    not build its own inside its clock."""
    check = grpc_check("127.0.0.1:9", use_tls=True, tls={"ca_file": str(certs.ca_file)})
    (block,) = tls_blocks(check)
    assert block == TlsBlock(check.tls, ("h2",))
    env.clients.prepare_tls([block])
    built = await env.clients.ssl_for(*block)
    assert await grpc_context_for(env.clients, check.tls) is built
    assert tls_blocks(grpc_check("127.0.0.1:9")) == frozenset()


async def test_secret_metadata_is_sent_and_never_shown(sim: RunningSim) -> None:
    token = "s3cr3t-value"
    check = grpc_check(target_of(sim), metadata={"Authorization": "Bearer ${token}"})
    assert list(check.metadata) == ["authorization"]  # names are lower-cased at load
    async with run_environment({"token": Secret(token)}, frozenset({token})) as env:
        assert (await run_check(check, env)).success
    missing = await _run_without_values(check)
    assert missing.reason is Reason.TEMPLATE
    assert token not in missing.message


async def _run_without_values(check: GrpcCheck) -> Result:
    async with run_environment() as env:
        return await run_check(check, env)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target": "localhost"}, "HOST:PORT"),
        ({"metadata": {"grpc-timeout": "1"}}, "gRPC's or HTTP/2's own"),
        ({"metadata": {"key-bin": "1"}}, "binary"),
        ({"metadata": {"bad name": "1"}}, "a name is"),
    ],
)
def test_bad_keys_are_refused_at_load(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        grpc_check(**{"target": "127.0.0.1:50051", **fields})
