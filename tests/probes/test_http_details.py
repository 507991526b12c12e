"""HTTP details: proxy, Host override, body sizes and compression, version, IPv6 on ::1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from prober.config.load import ConfigError, load_config
from prober.engine.runner import RunEnvironment, run_check
from prober.result import HttpFacts, Reason
from tests.support.checks import WriteConfig, facts_of, http_check
from tests.support.samples import exported_samples
from tests.support.servers import Target, serve_app

BODY = b'{"status": "ok", "padding": "' + b"a" * 4000 + b'"}'


def _app() -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response({"host": request.host, "url": str(request.url)})

    async def compressed(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=BODY, content_type="application/json")
        response.enable_compression()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    app.router.add_get("/compressed", compressed)
    return app


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner, url = await serve_app(_app(), "127.0.0.1")
    yield url
    await runner.cleanup()


@pytest.fixture
async def server6() -> AsyncIterator[str]:
    runner, url = await serve_app(_app(), "::1")
    yield url
    await runner.cleanup()


async def test_request_goes_through_the_proxy(server: str, env: RunEnvironment) -> None:
    # The upstream name is never resolved here: only the proxy is connected to.
    check = http_check(
        "http://upstream.example.test/ok",
        proxy_url="${PROXY}",
        **{"assert": ['$.url == "http://upstream.example.test/ok"']},
    )
    env.values = {"PROXY": server}
    result = await run_check(check, env)
    assert result.success, result.message


async def test_hostname_overrides_host_header(server: str, env: RunEnvironment) -> None:
    check = http_check(
        server + "/echo",
        hostname="api.example.test",
        **{"assert": ['$.host == "api.example.test"']},
    )
    result = await run_check(check, env)
    assert result.success, result.message


async def test_compressed_body_sizes_and_version(server: str, env: RunEnvironment) -> None:
    result = await run_check(http_check(server + "/compressed", compression="gzip"), env)
    assert result.success, result.message
    step = result.steps[0]
    facts = facts_of(step, HttpFacts)
    assert facts.body_length == len(BODY)
    assert facts.content_length is not None and 0 < facts.content_length < len(BODY)
    assert facts.http_version == "1.1"


async def test_http_detail_series_are_exported(target: Target, env: RunEnvironment) -> None:
    result = await run_check(http_check(target.at("/redirect")), env)
    assert result.success, result.message
    values = {
        name: value
        for name, labels, value in exported_samples(result, "api", full=True)
        if ("step", "request") in labels
    }
    assert values["probe_http_redirects"] == 1
    assert values["probe_http_version"] == 1.1
    assert values["probe_http_content_length"] == len(target.body)
    assert values["probe_http_uncompressed_body_length"] == len(target.body)
    assert "probe_tls_version_info" not in values


async def test_ipv6_loopback(server6: str, env: RunEnvironment) -> None:
    result = await run_check(http_check(server6 + "/ok", ip_protocol="ip6"), env)
    assert result.success, result.message
    assert facts_of(result.steps[0], HttpFacts).phases.connect > 0


@pytest.mark.parametrize(
    ("url_host", "ip_protocol"), [("[::1]", "ip4"), ("127.0.0.1", "ip6")], ids=["v6-url", "v4-url"]
)
async def test_address_family_mismatch_fails_with_dns_reason(
    env: RunEnvironment, url_host: str, ip_protocol: str
) -> None:
    result = await run_check(http_check(f"http://{url_host}:9/", ip_protocol=ip_protocol), env)
    assert result.reason == Reason.DNS
    assert f"ip_protocol is {ip_protocol}" in result.message


def test_unknown_variable_in_proxy_url_is_a_load_error(write_config: WriteConfig) -> None:
    path = write_config("""
        checks:
          - name: p
            kind: http
            component: api
            url: http://127.0.0.1:9/
            proxy_url: http://${NO_SUCH_PROXY_VAR}:3128
    """)
    with pytest.raises(ConfigError, match="proxy_url: unknown variable 'NO_SUCH_PROXY_VAR'"):
        load_config(path)
