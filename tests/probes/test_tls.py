"""HTTPS checks against real local TLS servers with certificates made in the test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from prober.config.assertions import AssertionSyntaxError, parse_assertion
from prober.config.model import HttpCheck, TlsOptions
from prober.engine.runner import RunEnvironment, run_check
from prober.result import HttpFacts, Reason, Result
from tests.support.certs import CertFactory, Leaf
from tests.support.checks import facts_of, http_check
from tests.support.samples import exported_samples
from tests.support.servers import Target, serve_app


@dataclass
class HttpsServer:
    """A TLS server on loopback that remembers the SNI names and Host headers it saw."""

    url: str = ""
    sni: list[str | None] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


StartServer = Callable[..., Awaitable[HttpsServer]]


@pytest.fixture
async def https() -> AsyncIterator[StartServer]:
    runners: list[web.AppRunner] = []

    async def start(leaf: Leaf, host: str = "127.0.0.1", client_ca: Path | None = None) -> Any:
        server = HttpsServer()

        async def ok(request: web.Request) -> web.StreamResponse:
            server.hosts.append(request.host)
            return web.json_response({"status": "ok"})

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("/ok")

        app = web.Application()
        app.router.add_get("/ok", ok)
        app.router.add_get("/redirect", redirect)
        context = leaf.server_context(client_ca)
        context.sni_callback = lambda _obj, name, _ctx: server.sni.append(name)
        runner, server.url = await serve_app(app, host, context)
        runners.append(runner)
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


def https_check(url: str, **settings: Any) -> HttpCheck:
    return http_check(url, **{"name": "tls", "timeout": 3.0, **settings})


async def test_valid_certificate_reports_version_expiry_and_split_phases(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    leaf = certs.issue(days=30)
    server = await https(leaf)
    result = await run_check(
        https_check(server.url + "/ok", tls={"ca_file": str(certs.ca_file)}), env
    )
    assert result.success, result.message
    step = result.steps[0]
    facts = facts_of(step, HttpFacts)
    assert facts.tls is not None
    assert (facts.tls.version, facts.tls.expiry) == ("TLS 1.3", leaf.not_after.timestamp())
    assert result.tls_expiry == leaf.not_after.timestamp()
    assert facts.phases.tls > 0
    assert facts.phases.connect > 0
    assert facts.http_version == "1.1"


async def test_redirect_over_tls_counts_both_handshakes(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    server = await https(certs.issue())
    check = https_check(server.url + "/redirect", tls={"ca_file": str(certs.ca_file)})
    result = await run_check(check, env)
    assert result.success, result.message
    assert facts_of(result.steps[0], HttpFacts).redirects == 1
    assert len(server.sni) == 2  # a fresh connection, so a fresh handshake, per round trip


@dataclass(frozen=True)
class Case:
    id: str
    names: tuple[str, ...] = ("localhost", "127.0.0.1")
    days: float = 30
    starts_in_days: float = -1
    self_signed: bool = False
    trust_ca: bool = True
    reason: Reason | None = None


FAILURES = [
    Case("expired", days=2, starts_in_days=-10, reason=Reason.TLS_CERT_EXPIRED),
    Case("not-yet-valid", starts_in_days=2, reason=Reason.TLS_CERT_INVALID),
    Case("wrong-host", names=("other.example",), reason=Reason.TLS_CERT_INVALID),
    Case("unknown-ca", trust_ca=False, reason=Reason.TLS_CERT_INVALID),
    Case("self-signed-untrusted", self_signed=True, trust_ca=False, reason=Reason.TLS_CERT_INVALID),
]


@pytest.mark.parametrize("case", FAILURES, ids=[c.id for c in FAILURES])
async def test_certificate_failures_are_told_apart(
    certs: CertFactory, https: StartServer, env: RunEnvironment, case: Case
) -> None:
    leaf = certs.issue(
        case.names, days=case.days, starts_in_days=case.starts_in_days, self_signed=case.self_signed
    )
    server = await https(leaf)
    tls = {"ca_file": str(certs.ca_file)} if case.trust_ca else {}
    result = await run_check(https_check(server.url + "/ok", tls=tls), env)
    assert result.reason == case.reason, result.message
    assert result.failed_step == "request"


async def test_self_signed_certificate_trusted_as_its_own_ca(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    leaf = certs.issue(("127.0.0.1",), self_signed=True)
    server = await https(leaf)
    result = await run_check(https_check(server.url + "/ok", tls={"ca_file": str(leaf.cert)}), env)
    assert result.success, result.message


async def test_insecure_skip_verify_still_reports_expiry(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    leaf = certs.issue(("other.example",), days=2, starts_in_days=-10, self_signed=True)
    server = await https(leaf)
    check = https_check(server.url + "/ok", tls={"insecure_skip_verify": True})
    result = await run_check(check, env)
    assert result.success, result.message
    assert result.tls_expiry == leaf.not_after.timestamp()
    assert result.tls_expiry < time.time()


@pytest.mark.parametrize(
    ("days", "success"), [(5, False), (60, True)], ids=["expires-soon", "expires-later"]
)
async def test_days_left_assertion(
    certs: CertFactory, https: StartServer, env: RunEnvironment, days: float, success: bool
) -> None:
    server = await https(certs.issue(days=days, starts_in_days=0))
    check = https_check(
        server.url + "/ok",
        tls={"ca_file": str(certs.ca_file)},
        **{"assert": ["tls.days_left > 14", 'tls.version == "TLS 1.3"']},
    )
    result = await run_check(check, env)
    assert result.success is success, result.message
    if not success:
        assert result.reason == Reason.ASSERTION
        assert float(result.steps[0].assertions[0].actual) == pytest.approx(5, abs=0.01)


async def test_plain_http_server_fails_the_handshake(target: Target, env: RunEnvironment) -> None:
    url = target.url.replace("http://", "https://") + "/ok"
    result = await run_check(https_check(url), env)
    assert result.reason == Reason.TLS_HANDSHAKE, result.message


async def test_server_name_overrides_sni_and_verification_name(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    server = await https(certs.issue(("api.example.test",)))
    ca = str(certs.ca_file)
    plain = await run_check(https_check(server.url + "/ok", tls={"ca_file": ca}), env)
    assert plain.reason == Reason.TLS_CERT_INVALID
    named = https_check(server.url + "/ok", tls={"ca_file": ca, "server_name": "api.example.test"})
    result = await run_check(named, env)
    assert result.success, result.message
    assert server.sni[-1] == "api.example.test"


async def test_hostname_sets_host_header_and_sni(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    server = await https(certs.issue(("api.example.test",)))
    check = https_check(
        server.url + "/ok", hostname="api.example.test", tls={"ca_file": str(certs.ca_file)}
    )
    result = await run_check(check, env)
    assert result.success, result.message
    assert server.sni[-1] == "api.example.test"
    assert server.hosts[-1] == "api.example.test"


async def test_client_certificate_is_presented(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    server = await https(certs.issue(), client_ca=certs.ca_file)
    client = certs.issue(("prober-client",))
    tls = {
        "ca_file": str(certs.ca_file),
        "cert_file": str(client.cert),
        "key_file": str(client.key),
    }
    result = await run_check(https_check(server.url + "/ok", tls=tls), env)
    assert result.success, result.message
    without = await run_check(https_check(server.url + "/ok", tls={"ca_file": tls["ca_file"]}), env)
    assert not without.success


async def test_unreadable_ca_file_fails_with_tls_reason(
    tmp_path: Path, certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    server = await https(certs.issue())
    check = https_check(server.url + "/ok", tls={"ca_file": str(tmp_path / "missing.pem")})
    result = await run_check(check, env)
    assert result.reason == Reason.TLS
    assert "cannot load the tls files" in result.message


async def test_ssl_context_is_built_once_per_options(
    certs: CertFactory, env: RunEnvironment
) -> None:
    options = TlsOptions(ca_file=str(certs.ca_file))
    first = await env.clients.ssl_for(options)
    again = await env.clients.ssl_for(TlsOptions(ca_file=str(certs.ca_file)))
    assert first is again
    env.clients.forget_tls()
    assert await env.clients.ssl_for(options) is not first


async def test_tls_done_says_whether_a_checks_contexts_are_built_without_waiting(
    tmp_path: Path, certs: CertFactory, env: RunEnvironment
) -> None:
    """A run asks `tls_done` before its clock starts and waits in `tls_ready` only when it
    says no: before the build, after a reload dropped the contexts, while a load error is
    kept (the probe reports it)."""
    check = https_check("https://127.0.0.1:9/", tls={"ca_file": str(certs.ca_file)})
    blocks = env.tls_blocks_of(check)
    assert blocks is env.tls_blocks_of(check)  # worked out once per check value
    assert not env.clients.tls_done(blocks)
    assert await env.clients.tls_ready(blocks)
    assert env.clients.tls_done(blocks)
    assert env.clients.tls_done(())  # a check without TLS has nothing to wait for
    env.clients.forget_tls()
    assert not env.clients.tls_done(blocks)
    broken = https_check("https://127.0.0.1:9/", tls={"ca_file": str(tmp_path / "missing.pem")})
    assert env.tls_blocks_of(broken) != blocks  # the same name, another check value
    assert not await env.clients.tls_ready(env.tls_blocks_of(broken))
    assert not env.clients.tls_done(env.tls_blocks_of(broken))


async def test_tls_series_are_exported(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    leaf = certs.issue()
    server = await https(leaf)
    result: Result = await run_check(
        https_check(server.url + "/ok", tls={"ca_file": str(certs.ca_file)}), env
    )
    samples = {
        (name, tuple(sorted(labels))): value
        for name, labels, value in exported_samples(result, "api", full=True)
    }
    base = (("check", "tls"), ("component", "api"))
    step = (*base, ("step", "request"))
    assert samples[("probe_ssl_earliest_cert_expiry", base)] == leaf.not_after.timestamp()
    assert samples[("probe_tls_version_info", (*step, ("version", "TLS 1.3")))] == 1.0
    tls_phase = tuple(sorted((*step, ("phase", "tls"))))
    assert samples[("probe_http_duration_seconds", tls_phase)] > 0
    assert samples[("probe_http_version", step)] == 1.1


@pytest.mark.parametrize(
    "text", ["tls.days_left > soon", "tls.days_left >", "tls.days_left ~= 3"], ids=str
)
def test_bad_tls_assertion_is_a_load_error(text: str) -> None:
    with pytest.raises(AssertionSyntaxError):
        parse_assertion(text)


async def test_keep_alive_reused_connection_keeps_certificate_facts(
    certs: CertFactory, https: StartServer, env: RunEnvironment
) -> None:
    leaf = certs.issue(days=60)
    server = await https(leaf)
    check = https_check(
        server.url + "/ok",
        keep_alive=True,
        tls={"ca_file": str(certs.ca_file)},
        **{"assert": ["tls.days_left > 14"]},
    )
    first = await run_check(check, env)
    second = await run_check(check, env)
    assert first.success and second.success, second.message
    assert len(server.sni) == 1  # the second run reused the connection: no new handshake
    facts = facts_of(second.steps[0], HttpFacts)
    assert facts.phases.tls == 0
    assert second.tls_expiry == leaf.not_after.timestamp()
    assert facts.tls is not None and facts.tls.version == "TLS 1.3"
