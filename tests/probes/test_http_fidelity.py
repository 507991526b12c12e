"""HTTP fidelity next to blackbox_exporter (issue 19), each against a real loopback server:
redirect limit, cookies across redirects, repeated headers, compression, phases over hops,
content length, HTTP versions, Last-Modified, the address series, readable messages."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from prober.config.load import ConfigError, load_config
from prober.engine.runner import RunEnvironment, run_check
from prober.result import HttpFacts, Reason
from tests.support.checks import WriteConfig, facts_of, http_check
from tests.support.samples import exported_samples
from tests.support.servers import free_port, serve_app

BODY = b"hello, " * 300
SLOW_HOP = 0.3


@dataclass
class Seen:
    """What the server saw: the Accept-Encoding and Cookie headers of each request."""

    accept_encoding: list[str | None] = field(default_factory=list)
    cookies: list[str | None] = field(default_factory=list)


def _app(seen: Seen) -> web.Application:
    async def chain(request: web.Request) -> web.StreamResponse:
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(text="end of chain")
        raise web.HTTPFound(f"/chain/{left - 1}")

    async def login(request: web.Request) -> web.StreamResponse:
        response = web.HTTPFound("/home")
        response.set_cookie("session", "s3cr3t")
        raise response

    async def home(request: web.Request) -> web.StreamResponse:
        seen.cookies.append(request.headers.get("Cookie"))
        if request.cookies.get("session") != "s3cr3t":
            return web.Response(status=401)
        return web.Response(text="welcome")

    async def repeated(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.headers.add("X-Test", "first")
        response.headers.add("X-Test", "second")
        return response

    async def encoded(request: web.Request) -> web.StreamResponse:
        seen.accept_encoding.append(request.headers.get("Accept-Encoding"))
        encoding = request.match_info["encoding"]
        bodies = {
            "gzip": gzip.compress(BODY),
            "deflate": zlib.compress(BODY),
            "raw-deflate": _raw_deflate(BODY),
            "br": b"\x1b\x00\x00\x00not-really-brotli",
            "bomb": gzip.compress(b"\0" * (8 << 20)),
        }
        header = {"raw-deflate": "deflate", "bomb": "gzip"}.get(encoding, encoding)
        return web.Response(body=bodies[encoding], headers={"Content-Encoding": header})

    async def slow_redirect(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(SLOW_HOP)
        raise web.HTTPFound("/fast")

    async def fast(request: web.Request) -> web.StreamResponse:
        return web.Response(text="fast")

    async def no_content(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def modified(request: web.Request) -> web.StreamResponse:
        return web.Response(text="old", headers={"Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"})

    app = web.Application()
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/login", login)
    app.router.add_get("/home", home)
    app.router.add_get("/repeated", repeated)
    app.router.add_get("/encoded/{encoding}", encoded)
    app.router.add_get("/slow-redirect", slow_redirect)
    app.router.add_get("/fast", fast)
    app.router.add_get("/no-content", no_content)
    app.router.add_get("/modified", modified)
    return app


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@dataclass
class Server:
    url: str
    seen: Seen


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    seen = Seen()
    runner, url = await serve_app(_app(seen), "127.0.0.1")
    yield Server(url, seen)
    await runner.cleanup()


async def test_ten_redirects_are_followed(server: Server, env: RunEnvironment) -> None:
    result = await run_check(http_check(server.url + "/chain/10"), env)
    assert result.success, result.message
    facts = facts_of(result.steps[0], HttpFacts)
    assert (facts.status_code, facts.redirects) == (200, 10)


async def test_eleventh_redirect_fails_with_its_status(server: Server, env: RunEnvironment) -> None:
    result = await run_check(http_check(server.url + "/chain/11"), env)
    assert result.reason == Reason.STATUS
    assert result.message == "status 302 after too many redirects (10), expected 2xx"
    facts = facts_of(result.steps[0], HttpFacts)
    assert (facts.status_code, facts.redirects, facts.body_length) == (302, 11, 0)


async def test_eleventh_redirect_passes_when_its_status_is_expected(
    server: Server, env: RunEnvironment
) -> None:
    check = http_check(server.url + "/chain/11", expected_status=[302])
    result = await run_check(check, env)
    assert result.success, result.message


async def test_unfollowed_redirect_counts_as_one_like_blackbox(
    server: Server, env: RunEnvironment
) -> None:
    check = http_check(server.url + "/chain/3", follow_redirects=False, expected_status=[302])
    result = await run_check(check, env)
    assert result.success, result.message
    assert facts_of(result.steps[0], HttpFacts).redirects == 1


async def test_cookie_set_by_a_redirect_is_sent_on_the_next_hop(
    server: Server, env: RunEnvironment
) -> None:
    result = await run_check(http_check(server.url + "/login"), env)
    assert result.success, result.message
    assert server.seen.cookies == ["session=s3cr3t"]


async def test_cookies_do_not_outlive_the_request(server: Server, env: RunEnvironment) -> None:
    await run_check(http_check(server.url + "/login"), env)
    result = await run_check(http_check(server.url + "/home"), env)
    assert result.reason == Reason.STATUS
    assert server.seen.cookies[-1] is None


@pytest.mark.parametrize(
    ("settings", "passes"),
    [
        ({"assert": ['header.x-test ~= "second"']}, True),
        ({"assert": ['header.x-test ~= "first"']}, True),
        ({"assert": ['header.x-test !~ "first"']}, False),
        ({"assert": ['header.x-test !~ "third"']}, True),
        ({"assert": ['header.x-test == "second"']}, True),
        ({"fail_if_header_matches": [{"header": "X-Test", "regexp": "sec"}]}, False),
        ({"fail_if_header_matches": [{"header": "X-Test", "regexp": "third"}]}, True),
        ({"fail_if_header_not_matches": [{"header": "X-Test", "regexp": "^second$"}]}, True),
        ({"fail_if_header_not_matches": [{"header": "X-Test", "regexp": "third"}]}, False),
        ({"fail_if_header_matches": [{"header": "X-None", "regexp": "a"}]}, False),
        (
            {
                "fail_if_header_matches": [
                    {"header": "X-None", "regexp": "a", "allow_missing": True}
                ]
            },
            True,
        ),
        ({"fail_if_header_not_matches": [{"header": "X-None", "regexp": "a"}]}, False),
        (
            {
                "fail_if_header_not_matches": [
                    {"header": "X-None", "regexp": "a", "allow_missing": True}
                ]
            },
            True,
        ),
    ],
    ids=[
        "match-second",
        "match-first",
        "not-match-first-fails",
        "not-match-absent-value",
        "equals-any",
        "fail-if-matches-any",
        "fail-if-matches-none",
        "fail-if-not-matches-some",
        "fail-if-not-matches-none",
        "fail-if-matches-missing",
        "fail-if-matches-missing-allowed",
        "fail-if-not-matches-missing",
        "fail-if-not-matches-missing-allowed",
    ],
)
async def test_repeated_headers_are_judged_on_every_value(
    server: Server, env: RunEnvironment, settings: dict[str, object], passes: bool
) -> None:
    result = await run_check(http_check(server.url + "/repeated", **settings), env)
    assert result.success is passes, result.message
    if not passes:
        assert result.reason == Reason.ASSERTION
        regex = "~" in str(settings) or "regexp" in str(settings)
        assert facts_of(result.steps[0], HttpFacts).failed_due_to_regex is regex


async def test_no_compression_is_asked_and_a_br_page_passes_raw(
    server: Server, env: RunEnvironment
) -> None:
    result = await run_check(http_check(server.url + "/encoded/br"), env)
    assert result.success, result.message
    assert server.seen.accept_encoding == [None]
    facts = facts_of(result.steps[0], HttpFacts)
    raw_size = len(b"\x1b\x00\x00\x00not-really-brotli")
    assert (facts.content_length, facts.body_length) == (raw_size, raw_size)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compression_asks_for_and_decodes_the_body(
    server: Server, env: RunEnvironment, encoding: str
) -> None:
    algorithm = "gzip" if encoding == "gzip" else "deflate"
    check = http_check(
        server.url + f"/encoded/{encoding}",
        compression=algorithm,
        **{"assert": ['body contains "hello, hello"']},
    )
    result = await run_check(check, env)
    assert result.success, result.message
    assert server.seen.accept_encoding == [algorithm]
    facts = facts_of(result.steps[0], HttpFacts)
    assert facts.body_length == len(BODY)
    assert facts.content_length is not None and 0 < facts.content_length < len(BODY)


async def test_body_cap_is_judged_on_the_decoded_size(server: Server, env: RunEnvironment) -> None:
    check = http_check(server.url + "/encoded/bomb", compression="gzip", max_body_bytes=1 << 20)
    result = await run_check(check, env)
    assert result.reason == Reason.BODY_TOO_LARGE
    assert "decoded body larger than max_body_bytes" in result.message


async def test_a_body_not_in_the_asked_encoding_fails_with_protocol(
    server: Server, env: RunEnvironment
) -> None:
    check = http_check(server.url + "/encoded/br", compression="gzip")
    result = await run_check(check, env)
    assert result.reason == Reason.PROTOCOL
    assert result.message.startswith("body is not gzip")


async def test_phases_add_up_over_every_redirect_hop(server: Server, env: RunEnvironment) -> None:
    result = await run_check(http_check(server.url + "/slow-redirect"), env)
    assert result.success, result.message
    phases = facts_of(result.steps[0], HttpFacts).phases
    assert phases.processing >= SLOW_HOP
    assert sum(phases.as_tuple()) <= result.duration


async def test_no_content_reads_content_length_zero(server: Server, env: RunEnvironment) -> None:
    result = await run_check(http_check(server.url + "/no-content"), env)
    assert result.success, result.message
    assert facts_of(result.steps[0], HttpFacts).content_length == 0


@pytest.mark.parametrize(
    ("versions", "passes"),
    [(["HTTP/1.1"], True), (["HTTP/1.0", "HTTP/2.0"], False)],
    ids=["listed", "not-listed"],
)
async def test_valid_http_versions(
    server: Server, env: RunEnvironment, versions: list[str], passes: bool
) -> None:
    result = await run_check(http_check(server.url + "/fast", valid_http_versions=versions), env)
    assert result.success is passes, result.message
    if not passes:
        assert result.reason == Reason.ASSERTION
        assert result.message == "HTTP/1.1 is not in valid_http_versions (HTTP/1.0, HTTP/2.0)"


async def test_blackbox_series_for_a_plain_request(server: Server, env: RunEnvironment) -> None:
    result = await run_check(http_check(server.url + "/modified"), env)
    assert result.success, result.message
    values = {name: value for name, _labels, value in exported_samples(result, "api", full=True)}
    assert values["probe_http_last_modified_timestamp_seconds"] == 784111777
    assert values["probe_http_ssl"] == 0
    assert values["probe_ip_protocol"] == 4
    assert values["probe_ip_addr_hash"] == 3668918509  # FNV-1a 32 of 127.0.0.1, as blackbox
    assert values["probe_failed_due_to_regex"] == 0
    basic = {name for name, _labels, _value in exported_samples(result, "api")}
    assert "probe_ip_addr_hash" not in basic  # detail: full only (the series budget)


async def test_ip_protocol_fallback_uses_the_other_family(
    server: Server, env: RunEnvironment
) -> None:
    port = server.url.rsplit(":", 1)[1]
    check = http_check(
        f"http://localhost:{port}/fast", ip_protocol="ip6", ip_protocol_fallback=True
    )
    strict = http_check(f"http://127.0.0.1:{port}/fast", ip_protocol="ip6")
    literal = http_check(
        f"http://127.0.0.1:{port}/fast", ip_protocol="ip6", ip_protocol_fallback=True
    )
    assert (await run_check(strict, env)).reason == Reason.DNS
    assert (await run_check(literal, env)).success
    result = await run_check(check, env)
    # localhost may have ::1 (preferred, nothing listens there) or only 127.0.0.1.
    facts = facts_of(result.steps[0], HttpFacts)
    assert result.success or result.reason == Reason.CONNECT_REFUSED, result.message
    if result.success:
        assert facts.ip_protocol == 4


async def test_refused_connection_message_has_no_reprs(env: RunEnvironment) -> None:
    port = free_port()
    result = await run_check(http_check(f"https://127.0.0.1:{port}/"), env)
    assert result.reason == Reason.CONNECT_REFUSED
    assert result.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "object at 0x" not in result.message
    assert "ssl:" not in result.message


@pytest.mark.parametrize(
    ("snippet", "error"),
    [
        ("compression: zstd", "compression"),
        ("compression: gzip, headers: {Accept-Encoding: 'gzip;q=0'}", "Accept-Encoding"),
        ("ip_protocol_fallback: true", "ip_protocol_fallback needs ip_protocol ip4 or ip6"),
        ("valid_http_versions: [HTTP/2]", "valid_http_versions"),
        ("tls: {min_version: TLS13, max_version: TLS12}", "max_version TLS12 is lower"),
        ("fail_if_header_matches: [{header: X}]", "regexp"),
    ],
    ids=["unknown-compression", "refused-encoding", "fallback-either", "version", "tls", "regexp"],
)
def test_bad_fidelity_settings_are_located_load_errors(
    write_config: WriteConfig, snippet: str, error: str
) -> None:
    path = write_config(f"""
        checks:
          - {{name: p, url: "http://127.0.0.1:9/", {snippet}}}
    """)
    with pytest.raises(ConfigError, match=error):
        load_config(path)
