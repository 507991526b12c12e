"""HTTP/2 for http checks and flow steps (`http2: true`, blackbox_exporter's `enable_http2`),
and `fail_if_ssl` / `fail_if_not_ssl`, against real loopback servers: an HTTP/2 server on
`h2` offering ALPN h2 and http/1.1 (tests/support/h2_server.py), an HTTP/1.1-only TLS server
and a plain one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from prober.cli.trace import format_result, request_paths
from prober.config.load import ConfigError, load_config
from prober.config.model import FlowCheck
from prober.engine.runner import RunEnvironment, run_check
from prober.probes.net.tls import HTTP2_ALPN, TlsBlock, tls_blocks
from prober.result import HttpFacts, Reason, Result
from tests.support.certs import CertFactory
from tests.support.checks import WriteConfig, facts_of, http_check, run_environment
from tests.support.h2_server import H2Server, RunningH2Server
from tests.support.samples import exported_samples, sample_value
from tests.support.servers import Target, serve_app, target_app

StartH2 = Callable[..., Awaitable[H2Server]]
HANG = 0.5  # the timeout of checks meant to hang


@pytest.fixture
async def h2_server(certs: CertFactory) -> AsyncIterator[StartH2]:
    running: list[RunningH2Server] = []

    async def start(alpn: tuple[str, ...] = ("h2", "http/1.1")) -> H2Server:
        server = RunningH2Server(certs.issue(), alpn)
        running.append(server)
        return await server.start()

    yield start
    for server in running:
        await server.stop()


@pytest.fixture
async def h1_tls_url(certs: CertFactory) -> AsyncIterator[str]:
    """An HTTP/1.1-only TLS server (aiohttp, no ALPN) serving tests/support's target routes."""
    runner, url = await serve_app(target_app(Target()), ssl_context=certs.issue().server_context())
    yield url
    await runner.cleanup()


@pytest.fixture
async def plain_url() -> AsyncIterator[str]:
    runner, url = await serve_app(target_app(Target()))
    yield url
    await runner.cleanup()


def tls_settings(certs: CertFactory) -> dict[str, Any]:
    return {"tls": {"ca_file": str(certs.ca_file)}}


async def run_h2(url: str, certs: CertFactory, env: RunEnvironment, **settings: Any) -> Result:
    check = http_check(url, **{"http2": True, "timeout": 3.0, **tls_settings(certs), **settings})
    return await run_check(check, env)


def http_facts(result: Result) -> HttpFacts:
    return facts_of(result.steps[-1], HttpFacts)


async def test_h2_get_passes_with_version_2_and_ordered_phases(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    result = await run_h2(server.url + "/ok", certs, env)
    assert result.success, result.message
    assert server.protocols == ["h2"]
    assert [s.protocol for s in server.seen] == ["h2"]
    facts = http_facts(result)
    assert (facts.status_code, facts.http_version, facts.body_length) == (200, "2.0", 16)
    assert facts.content_length == 16
    assert facts.tls is not None and facts.tls.version == "TLS 1.3"
    phases = facts.phases.as_tuple()
    assert all(p >= 0 for p in phases)
    assert facts.phases.tls > 0 and facts.phases.connect > 0
    assert sum(phases) <= result.duration
    samples = exported_samples(result, "api", full=True)
    assert sample_value(samples, "probe_http_version") == 2
    assert sample_value(samples, "probe_http_ssl") == 1


@pytest.mark.parametrize(
    ("path", "method", "length"),
    [
        ("/ok", "GET", 16),
        ("/unsized/empty", "GET", 0),
        ("/unsized/empty", "HEAD", -1),
        ("/unsized", "GET", -1),
    ],
    ids=["header", "headers-end-the-stream", "head-without-header", "data-without-header"],
)
async def test_h2_content_length_is_the_one_go_reports(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment, path: str, method: str, length: int
) -> None:
    """Go's http2 transport: the header's value; without one, 0 when the response's HEADERS
    frame ended its stream (but for a HEAD), else -1 (unknown, as over HTTP/1.1)."""
    server = await h2_server()
    result = await run_h2(server.url + path, certs, env, method=method)
    assert result.success, result.message
    assert server.protocols == ["h2"]
    assert http_facts(result).content_length == length
    samples = exported_samples(result, "api", full=True)
    assert sample_value(samples, "probe_http_content_length") == length


async def test_h2_request_carries_headers_body_and_authority(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    result = await run_h2(
        server.url + "/echo",
        certs,
        env,
        method="POST",
        headers={"X-Probe": "one", "Connection": "keep-alive"},
        json={"a": 1},
        **{"assert": ['$.method == "POST"', 'header.Content-Type == "application/json"']},
    )
    assert result.success, result.message
    seen = server.seen[0]
    assert seen.protocol == "h2"
    assert seen.headers[":authority"] == server.url.removeprefix("https://")
    assert seen.headers["user-agent"] == "prober-test"
    assert seen.headers["accept"] == "*/*"
    assert seen.headers["x-probe"] == "one"
    assert "connection" not in seen.headers  # HTTP/2 forbids it: left out, not refused
    assert seen.body == b'{"a": 1}'
    assert seen.headers["content-length"] == str(len(seen.body))


async def test_h2_bodies_past_the_flow_control_window_go_both_ways(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    sent = "y" * 200_000  # three times the initial window of 65,535 bytes
    result = await run_h2(server.url + "/echo", certs, env, method="PUT", body=sent)
    assert result.success, result.message
    assert server.seen[0].body == sent.encode()
    big = await run_h2(server.url + "/big", certs, env)
    assert big.success, big.message
    assert http_facts(big).body_length == 200_000


async def test_h2_gzip_body_is_decoded_for_compression(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    result = await run_h2(
        server.url + "/gzip", certs, env, compression="gzip", **{"assert": ['body == "hello h2"']}
    )
    assert result.success, result.message
    assert server.seen[0].headers["accept-encoding"] == "gzip"


@pytest.mark.parametrize(
    ("path", "settings", "reason", "message", "facts"),
    [
        ("/status/503", {}, Reason.STATUS, "status 503...", {"http_version": "2.0"}),
        (
            "/big",
            {"max_body_bytes": 1000},
            Reason.BODY_TOO_LARGE,
            "body larger than max_body_bytes (1000)",
            {"status_code": 200},
        ),
        ("/reset", {}, Reason.RESET, "the server reset the stream (INTERNAL_ERROR)", {}),
        ("/short", {}, Reason.PROTOCOL, "invalid HTTP/2 from the server: ...", {}),
        (
            "/hang",
            {"timeout": HANG},
            Reason.TIMEOUT,
            "deadline reached while reading the body",
            {"status_code": 200},
        ),
    ],
    ids=[
        "status-503-fails-with-status",
        "body-over-the-cap-is-too-large",
        "stream-reset-reads-as-reset",
        "body-shorter-than-its-length-is-protocol",
        "hanging-after-headers-times-out-in-transfer",
    ],
)
async def test_h2_failures_have_their_reason_and_message(
    h2_server: StartH2,
    certs: CertFactory,
    env: RunEnvironment,
    path: str,
    settings: dict[str, Any],
    reason: Reason,
    message: str,
    facts: dict[str, object],
) -> None:
    """Each way an h2 answer fails, with its message (ending in `...`: how it starts) and
    what the response's facts still show."""
    server = await h2_server()
    result = await run_h2(server.url + path, certs, env, **settings)
    assert result.reason is reason
    if message.endswith("..."):
        assert result.message.startswith(message.removesuffix("..."))
    else:
        assert result.message == message
    assert "object at" not in result.message  # h2's words without an object's repr
    shown = http_facts(result)
    assert {name: getattr(shown, name) for name in facts} == facts
    if reason is Reason.TIMEOUT:  # the phase it timed out in is timed
        assert shown.phases.processing >= 0 and shown.phases.transfer > 0


async def test_h2_redirect_is_followed_hop_by_hop_with_cookies(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    result = await run_h2(server.url + "/redirect", certs, env)
    assert result.success, result.message
    assert server.protocols == ["h2", "h2"]  # a fresh connection per hop
    assert [s.path for s in server.seen] == ["/redirect", "/ok"]
    assert server.seen[1].headers.get("cookie") == "hop=1"
    facts = http_facts(result)
    assert (facts.redirects, facts.http_version) == (1, "2.0")


async def test_server_choosing_h2_but_answering_http1_is_a_protocol_failure(
    certs: CertFactory, env: RunEnvironment
) -> None:
    async def answer_in_http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    context = certs.issue().server_context()
    context.set_alpn_protocols(["h2"])
    server = await asyncio.start_server(answer_in_http1, "127.0.0.1", 0, ssl=context)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await run_h2(f"https://127.0.0.1:{port}/", certs, env)
    finally:
        server.close()
        await server.wait_closed()
    assert result.reason is Reason.PROTOCOL
    assert result.message == "the server chose h2 by ALPN but answered in HTTP/1.x"


async def test_valid_http_versions_http2_passes_on_h2_and_fails_on_http1(
    h2_server: StartH2, h1_tls_url: str, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    on_h2 = await run_h2(server.url + "/ok", certs, env, valid_http_versions=["HTTP/2.0"])
    assert on_h2.success, on_h2.message
    on_h1 = await run_h2(h1_tls_url + "/ok", certs, env, valid_http_versions=["HTTP/2.0"])
    assert on_h1.reason is Reason.ASSERTION
    assert on_h1.message == "HTTP/1.1 is not in valid_http_versions (HTTP/2.0)"
    assert http_facts(on_h1).http_version == "1.1"  # fell back on the same connection


async def test_server_choosing_http1_by_alpn_gets_http1(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server(alpn=("http/1.1",))
    result = await run_h2(server.url + "/ok", certs, env)
    assert result.success, result.message
    assert server.protocols == ["http/1.1"]
    assert http_facts(result).http_version == "1.1"


async def test_http2_false_offers_no_alpn_and_speaks_http1(
    h2_server: StartH2, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    result = await run_h2(server.url + "/ok", certs, env, http2=False)
    assert result.success, result.message
    assert server.protocols == [None]  # nothing offered, nothing chosen
    assert [s.protocol for s in server.seen] == ["http/1.1"]
    assert http_facts(result).http_version == "1.1"


async def test_http2_on_plain_http_stays_http1(plain_url: str, env: RunEnvironment) -> None:
    result = await run_check(http_check(plain_url + "/ok", http2=True), env)
    assert result.success, result.message
    assert http_facts(result).http_version == "1.1"


@pytest.mark.parametrize(
    ("settings", "over_tls", "failure"),
    [
        ({"fail_if_ssl": True}, True, "the final response came over TLS (fail_if_ssl)"),
        ({"fail_if_ssl": True}, False, None),
        ({"fail_if_not_ssl": True}, True, None),
        (
            {"fail_if_not_ssl": True},
            False,
            "the final response did not come over TLS (fail_if_not_ssl)",
        ),
        ({"fail_if_ssl": True, "keep_alive": True}, True, "came over TLS (fail_if_ssl)"),
        ({"fail_if_not_ssl": True, "keep_alive": True}, False, "not come over TLS"),
    ],
    ids=[
        "ssl-on-tls",
        "ssl-on-plain",
        "not-ssl-on-tls",
        "not-ssl-on-plain",
        "aiohttp-ssl",
        "aiohttp-not-ssl",
    ],
)
async def test_fail_if_ssl_and_not_ssl_judge_the_final_connection(
    h1_tls_url: str,
    plain_url: str,
    certs: CertFactory,
    env: RunEnvironment,
    settings: dict[str, Any],
    over_tls: bool,
    failure: str | None,
) -> None:
    url = (h1_tls_url if over_tls else plain_url) + "/ok"
    result = await run_check(http_check(url, **tls_settings(certs), **settings), env)
    if failure is None:
        assert result.success, result.message
    else:
        assert result.reason is Reason.ASSERTION
        assert failure in result.message


async def test_flow_step_speaks_h2_beside_an_http1_step(
    h2_server: StartH2, plain_url: str, certs: CertFactory, env: RunEnvironment
) -> None:
    server = await h2_server()
    check = FlowCheck.model_validate(
        {
            "name": "f",
            "kind": "flow",
            "component": "api",
            "interval": 10.0,
            "timeout": 3.0,
            "steps": [
                {
                    "name": "h2",
                    "url": server.url + "/echo",
                    "http2": True,
                    **tls_settings(certs),
                    "extract": {"agent": {"header": "content-type", "secret": False}},
                },
                {"name": "h1", "url": plain_url + "/echo", "headers": {"X-Agent": "${agent}"}},
            ],
        }
    )
    assert TlsBlock(check.steps[0].tls, HTTP2_ALPN) in tls_blocks(check)
    result = await run_check(check, env)
    assert result.success, result.message
    assert result.steps[0].extracted == (("agent", "application/json"),)
    versions = [facts_of(step, HttpFacts).http_version for step in result.steps]
    assert versions == ["2.0", "1.1"]
    trace = format_result(result, request_paths(check))
    assert "  path: h2" in trace.splitlines()
    assert "  path: lean" in trace.splitlines()


async def test_the_h2_context_is_built_once_apart_from_the_http1_one(
    certs: CertFactory, env: RunEnvironment
) -> None:
    check = http_check("https://127.0.0.1:9/", http2=True, **tls_settings(certs))
    (block,) = tls_blocks(check)
    assert block == TlsBlock(check.tls, HTTP2_ALPN)
    first = await env.clients.ssl_for(*block)
    assert await env.clients.ssl_for(*block) is first
    assert await env.clients.ssl_for(check.tls) is not first


@pytest.mark.parametrize(
    ("snippet", "error"),
    [
        (
            "http2: true, proxy_url: 'http://127.0.0.1:3128'",
            "http2 cannot be combined with proxy_url",
        ),
        ("http2: true, keep_alive: true", "http2 cannot be combined with keep_alive"),
        (
            "http2: true, ip_protocol: ip4, ip_protocol_fallback: true",
            "http2 cannot be combined with ip_protocol_fallback",
        ),
        ("fail_if_ssl: true, fail_if_not_ssl: true", "fail_if_ssl and fail_if_not_ssl together"),
        ("http2: maybe", "http2"),
    ],
    ids=["proxy", "keep-alive", "fallback", "ssl-both", "not-a-bool"],
)
def test_bad_http2_and_ssl_settings_are_located_load_errors(
    write_config: WriteConfig, snippet: str, error: str
) -> None:
    path = write_config(f"""
        checks:
          - {{name: p, url: "https://127.0.0.1:9/", {snippet}}}
    """)
    with pytest.raises(ConfigError, match=error) as raised:
        load_config(path)
    assert ":3:" in str(raised.value) or ":2:" in str(raised.value)
    assert "Traceback" not in str(raised.value)


def test_same_negotiation_under_uvloop(certs: CertFactory) -> None:
    async def runs() -> None:
        server = RunningH2Server(certs.issue())
        state = await server.start()
        try:
            async with run_environment() as env:
                result = await run_h2(state.url + "/big", certs, env)
                assert result.success, result.message
                facts = http_facts(result)
                assert (facts.http_version, facts.body_length) == ("2.0", 200_000)
                assert facts.phases.tls > 0
                fallback = await run_h2(state.url + "/ok", certs, env, http2=False)
                assert http_facts(fallback).http_version == "1.1"
        finally:
            await server.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(runs())
