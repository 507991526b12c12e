"""TLS facts next to blackbox_exporter: expiry over the served chain, the verified chain's
expiry, the leaf's info labels, min/max versions, SSL contexts built outside the run."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from prober.engine.runner import RunEnvironment, run_check
from prober.probes.net.certs import go_name
from prober.result import HttpFacts, Reason
from tests.support.certs import CertFactory, Leaf
from tests.support.checks import facts_of, http_check
from tests.support.samples import exported_samples
from tests.support.servers import serve_app

Serve = Callable[[ssl.SSLContext], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(context: ssl.SSLContext) -> str:
        async def ok(request: web.Request) -> web.StreamResponse:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/ok", ok)
        runner, url = await serve_app(app, "127.0.0.1", context)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


def _tls(certs: CertFactory, **more: object) -> dict[str, object]:
    return {"ca_file": str(certs.ca_file), **more}


async def test_intermediate_expiring_first_is_the_earliest_expiry(
    certs: CertFactory, serve: Serve, env: RunEnvironment
) -> None:
    intermediate = certs.intermediate(days=20)
    leaf = certs.issue(days=200, via=intermediate)
    url = await serve(leaf.server_context())
    result = await run_check(http_check(url + "/ok", tls=_tls(certs)), env)
    assert result.success, result.message
    tls = facts_of(result.steps[0], HttpFacts).tls
    assert tls is not None and tls.leaf is not None
    assert tls.expiry == intermediate.not_after.timestamp()
    assert tls.chain_expiry == intermediate.not_after.timestamp()
    assert tls.leaf.subject == "CN=localhost"
    assert tls.leaf.issuer == intermediate.cert.subject.rfc4514_string()
    assert tls.leaf.subjectalternative == "localhost"  # DNS names only, as blackbox
    values = {
        name: (labels, value) for name, labels, value in exported_samples(result, "edge", True)
    }
    assert values["probe_ssl_earliest_cert_expiry"][1] == intermediate.not_after.timestamp()
    assert values["probe_http_ssl"][1] == 1
    labels, _ = values["probe_ssl_last_chain_info"]
    assert ("subject", "CN=localhost") in labels
    assert ("serialnumber", tls.leaf.serialnumber) in labels


async def test_insecure_skip_verify_has_no_verified_chain(
    certs: CertFactory, serve: Serve, env: RunEnvironment
) -> None:
    leaf = certs.issue(days=30)
    url = await serve(leaf.server_context())
    check = http_check(url + "/ok", tls={"insecure_skip_verify": True})
    result = await run_check(check, env)
    assert result.success, result.message
    tls = facts_of(result.steps[0], HttpFacts).tls
    assert tls is not None
    assert tls.expiry == leaf.not_after.timestamp()
    assert tls.chain_expiry is None


def _tls12_only(leaf: Leaf) -> ssl.SSLContext:
    context = leaf.server_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def test_max_version_caps_and_min_version_refuses(
    certs: CertFactory, serve: Serve, env: RunEnvironment
) -> None:
    leaf = certs.issue()
    url = await serve(leaf.server_context())
    capped = await run_check(http_check(url + "/ok", tls=_tls(certs, max_version="TLS12")), env)
    assert capped.success, capped.message
    tls = facts_of(capped.steps[0], HttpFacts).tls
    assert tls is not None and tls.version == "TLS 1.2"
    old_url = await serve(_tls12_only(leaf))
    refused = await run_check(
        http_check(old_url + "/ok", tls=_tls(certs, min_version="TLS13")), env
    )
    # The server answers a TLS 1.3-only hello with an alert or by dropping the connection.
    assert refused.reason in (Reason.TLS_HANDSHAKE, Reason.CONNECT_ERROR), refused.message
    assert "object at 0x" not in refused.message


async def test_first_run_does_not_pay_for_the_ssl_context(
    certs: CertFactory, serve: Serve, env: RunEnvironment, tmp_path: Path
) -> None:
    # A CA bundle that takes a while to load: the run's own clock must not include it.
    bundle = tmp_path / "big-bundle.pem"
    bundle.write_bytes(certs.ca_file.read_bytes() * 20000)
    url = await serve(certs.issue().server_context())
    started = time.perf_counter()
    result = await run_check(http_check(url + "/ok", tls={"ca_file": str(bundle)}), env)
    whole = time.perf_counter() - started
    assert result.success, result.message
    assert result.duration < whole / 2


def test_go_name_orders_and_escapes_like_go() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "a, b"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "a"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "x@y"),
        ]
    )
    # Unknown attributes go last; `@` is not PrintableString, so UTF8String (0x0c).
    expected = "CN=a\\, b,OU=a+OU=b,O=Org,C=US,1.2.840.113549.1.9.1=#0c03784079"
    assert go_name(name) == expected
