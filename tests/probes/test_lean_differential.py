"""The lean request path and the aiohttp path give the same Results against the same servers.

Each case runs one check twice, once with the step runner's lean path (probes/lean.py) and
once with it switched off (`lean.ENABLED`, the switch bench/harness.py uses), against the same
loopback servers; the Results must be equal once timings are zeroed. Where a failure's text
comes from the transport (aiohttp's exception or h1's own words for a refused, reset or
failed TLS connection) only its reason is compared: the messages are each path's own. The
echo cases compare what the target received: the lean path must send what aiohttp sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web

from prober.engine.runner import RunEnvironment, run_check
from prober.probes import lean
from prober.result import HttpFacts, Phases, Reason, Result, StepResult
from tests.support.certs import CertFactory
from tests.support.checks import http_check
from tests.support.servers import free_port, serve_app

# Reasons whose message is the transport's own text, different on each path.
_TRANSPORT_REASONS = frozenset(
    {
        Reason.CONNECT_REFUSED,
        Reason.CONNECT_ERROR,
        Reason.RESET,
        Reason.PROTOCOL,
        Reason.TLS_HANDSHAKE,
        Reason.TLS_CERT_INVALID,
        Reason.TLS_CERT_EXPIRED,
        Reason.ERROR,
    }
)
BODY = b'{"status": "ok", "items": [1, 2, 3], "pad": "' + b"p" * 2000 + b'"}'
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _app(other: list[str], received: list[dict[str, Any]]) -> web.Application:
    """The target: `other[0]`, once set, is the base URL of a second origin; `/echo` adds
    each request it gets to `received`."""

    async def status(request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        body = None if code in (204, 304) else f"status {code}".encode()
        return web.Response(status=code, body=body)

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY, content_type="application/json")

    async def redirect(request: web.Request) -> web.StreamResponse:
        hops = int(request.query.get("hops", "1"))
        where = f"/redirect?hops={hops - 1}" if hops > 1 else "/ok"
        raise web.HTTPFound(where)

    async def away(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(other[0] + "/echo")

    async def login(request: web.Request) -> web.StreamResponse:
        response = web.HTTPFound("/echo")
        response.set_cookie("sid", "abc", path="/")
        raise response

    async def no_location(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, text="nowhere")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"first,", b"second,", b"third"):
            await response.write(piece)
        await response.write_eof()
        return response

    async def compressed(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=BODY, content_type="application/json")
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async def gzip_members(request: web.Request) -> web.StreamResponse:
        """`gzip -c a >> f; gzip -c b >> f`: BODY in two members, sent in small chunks so
        a member boundary falls inside one."""
        response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
        response.content_type = "application/json"
        await response.prepare(request)
        packed = gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:])
        for start in range(0, len(packed), 7):
            await response.write(packed[start : start + 7])
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "15"})
        await response.prepare(request)
        for piece in (b"slow,", b"body,", b"done!"):
            await response.write(piece)
            await asyncio.sleep(float(request.query.get("pause", "0.02")))
        return response

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * int(request.query.get("n", "100000")))

    async def repeated(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="repeated")
        for name, value in (("X-Multi", "one"), ("X-Multi", "two"), ("Set-Cookie", "a=1")):
            response.headers.add(name, value)
        response.headers.add("Set-Cookie", "session=s3cr3t; Path=/")
        return response

    async def echo(request: web.Request) -> web.StreamResponse:
        seen = {k.lower(): v for k, v in request.headers.items()}
        seen.pop("host", None)  # the port differs between the two origins
        body = (await request.read()).decode()
        received.append({"method": request.method, "headers": seen, "body": body})
        return web.json_response({"echoed": True})

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_route("*", "/ok", ok)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", "/away", away)
    app.router.add_get("/no-location", no_location)
    app.router.add_get("/login", login)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/gzip", compressed)
    app.router.add_get("/gzip-members", gzip_members)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hang", hang)
    app.router.add_get("/big", big)
    app.router.add_get("/repeated", repeated)
    app.router.add_route("*", "/echo", echo)
    return app


@dataclass
class Servers:
    """The base URLs of the target, a second origin, an https target and raw answers."""

    http: str
    other: str
    https: str
    untrusted: str
    expired: str
    raw: Callable[[RawHandler], Awaitable[str]]
    ca_file: str
    received: list[dict[str, Any]]


@pytest.fixture
async def servers(certs: CertFactory) -> AsyncIterator[Servers]:
    other: list[str] = [""]
    received: list[dict[str, Any]] = []
    runners: list[web.AppRunner] = []
    raw_servers: list[asyncio.Server] = []

    async def serve(ssl_context: Any = None) -> str:
        runner, url = await serve_app(_app(other, received), "127.0.0.1", ssl_context)
        runners.append(runner)
        return url

    async def raw(handler: RawHandler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        raw_servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    try:
        first, second = await serve(), await serve()
        other[0] = second
        https = await serve(certs.issue().server_context())
        untrusted = await serve(certs.issue(self_signed=True).server_context())
        expired = await serve(certs.issue(days=2, starts_in_days=-10).server_context())
        yield Servers(first, second, https, untrusted, expired, raw, str(certs.ca_file), received)
    finally:
        for server in raw_servers:
            server.close()
        for runner in runners:
            await runner.cleanup()


@contextlib.contextmanager
def _aiohttp_path() -> Iterator[None]:
    lean.ENABLED = False
    try:
        yield
    finally:
        lean.ENABLED = True


def _untimed(result: Result) -> Result:
    """The Result with every timing zeroed and transport messages left out."""

    def step(s: StepResult) -> StepResult:
        facts = s.facts
        if isinstance(facts, HttpFacts):
            facts = replace(facts, phases=Phases())
        message = "<transport>" if s.reason in _TRANSPORT_REASONS else s.message
        assertions = tuple(
            replace(a, actual="<t>") if a.text.startswith("latency") else a for a in s.assertions
        )
        return replace(s, duration=0.0, facts=facts, message=message, assertions=assertions)

    message = "<transport>" if result.reason in _TRANSPORT_REASONS else result.message
    steps = tuple(step(s) for s in result.steps)
    return replace(result, duration=0.0, started_at=0.0, steps=steps, message=message)


async def _both(env: RunEnvironment, url: str, **settings: Any) -> tuple[Result, Result]:
    check = http_check(url, **settings)
    assert lean.covers(check)
    via_lean = await run_check(check, env)
    with _aiohttp_path():
        assert not lean.covers(check)
        via_aiohttp = await run_check(check, env)
    return via_lean, via_aiohttp


def _facts(result: Result) -> HttpFacts:
    facts = result.steps[0].facts
    assert isinstance(facts, HttpFacts)
    return facts


# (id, path on the target, check settings, the reason both must give; None: both pass)
CASES: list[tuple[str, str, dict[str, Any], Reason | None]] = [
    ("200", "/ok", {"assert": ['$.status == "ok"', "len($.items) == 3"]}, None),
    ("201-expected", "/status/201", {"expected_status": [201]}, None),
    ("204-no-body", "/status/204", {}, None),
    ("301-unfollowed", "/status/301", {"expected_status": ["3xx"]}, None),
    ("404-status", "/status/404", {}, Reason.STATUS),
    ("500-status", "/status/500", {}, Reason.STATUS),
    ("503-expected-5xx", "/status/503", {"expected_status": ["5xx"]}, None),
    ("redirect-once", "/redirect", {"assert": ['$.status == "ok"']}, None),
    ("redirect-three", "/redirect?hops=3", {}, None),
    ("redirect-not-followed", "/redirect", {"follow_redirects": False}, Reason.STATUS),
    ("redirect-too-many", "/redirect?hops=12", {}, Reason.STATUS),  # the 11th judged
    ("redirect-without-location", "/no-location", {"expected_status": [302]}, None),
    ("chunked", "/chunked", {"assert": ['body ~= "second"']}, None),
    ("gzip", "/gzip", {"compression": "gzip", "assert": ['$.status == "ok"']}, None),
    # Every member of a multi-member gzip body, and the cap on all of them decoded.
    (
        "gzip-members",
        "/gzip-members",
        {"compression": "gzip", "assert": ["len($.items) == 3"]},
        None,
    ),
    (
        "gzip-members-capped",
        "/gzip-members",
        {"compression": "gzip", "max_body_bytes": len(BODY) - 1},
        Reason.BODY_TOO_LARGE,
    ),
    # No `compression:`, no decoding (blackbox): the gzip bytes are not JSON on either path.
    ("gzip-not-asked", "/gzip", {"assert": ['$.status == "ok"']}, Reason.INVALID_JSON),
    ("slow-body", "/slow", {"assert": ['body ~= "done!"']}, None),
    ("slow-body-timeout", "/slow?pause=0.5", {"timeout": 0.3}, Reason.TIMEOUT),
    ("hang", "/hang", {"timeout": 0.3}, Reason.TIMEOUT),
    ("big-body", "/big?n=200000", {"max_body_bytes": 100000}, Reason.BODY_TOO_LARGE),
    ("big-body-fits", "/big?n=50000", {}, None),
    ("not-json", "/big?n=10", {"assert": ["$.x exists"]}, Reason.INVALID_JSON),
    ("assertion", "/ok", {"assert": ['$.status == "down"']}, Reason.ASSERTION),
    (
        "repeated-headers",
        "/repeated",
        {
            "assert": ['header.x-multi == "two"'],
            "extract": {"session": {"cookie": "session"}},
        },
        None,
    ),
    ("head", "/ok", {"method": "HEAD"}, None),
]


@pytest.mark.parametrize(
    ("path", "settings", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_both_paths_give_the_same_result(
    servers: Servers,
    env: RunEnvironment,
    path: str,
    settings: dict[str, Any],
    reason: Reason | None,
) -> None:
    via_lean, via_aiohttp = await _both(env, servers.http + path, **settings)
    assert via_lean.reason == reason, via_lean.message
    assert _untimed(via_lean) == _untimed(via_aiohttp)


TLS_CASES: list[tuple[str, str, bool, Reason | None]] = [
    ("trusted", "https", True, None),
    ("untrusted", "untrusted", True, Reason.TLS_CERT_INVALID),
    ("expired", "expired", True, Reason.TLS_CERT_EXPIRED),
    ("no-ca", "https", False, Reason.TLS_CERT_INVALID),
]


@pytest.mark.parametrize(
    ("server", "trust", "reason"), [c[1:] for c in TLS_CASES], ids=[c[0] for c in TLS_CASES]
)
async def test_both_paths_agree_on_tls(
    servers: Servers, env: RunEnvironment, server: str, trust: bool, reason: Reason | None
) -> None:
    tls = {"ca_file": servers.ca_file} if trust else {}
    base = getattr(servers, server)
    via_lean, via_aiohttp = await _both(env, base + "/ok", tls=tls)
    assert via_lean.reason == reason, via_lean.message
    assert _untimed(via_lean) == _untimed(via_aiohttp)
    if reason is None:
        facts = _facts(via_lean)
        assert facts.tls is not None and facts.tls.version and facts.tls.expiry


async def _reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _reset_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _closed_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await writer.drain()
    writer.close()


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()
    writer.close()


RAW_CASES: list[tuple[str, RawHandler, Reason]] = [
    ("reset-mid-body", _reset_mid_body, Reason.RESET),
    ("reset-before-response", _reset_at_once, Reason.RESET),
    ("closed-mid-body", _closed_mid_body, Reason.PROTOCOL),
    ("not-http", _not_http, Reason.PROTOCOL),
]


@pytest.mark.parametrize(
    ("handler", "reason"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES]
)
async def test_both_paths_agree_on_broken_connections(
    servers: Servers, env: RunEnvironment, handler: RawHandler, reason: Reason
) -> None:
    base = await servers.raw(handler)
    via_lean, via_aiohttp = await _both(env, base + "/")
    assert via_lean.reason == reason, via_lean.message
    assert _untimed(via_lean) == _untimed(via_aiohttp)


async def test_both_paths_agree_on_a_refused_connection(env: RunEnvironment) -> None:
    via_lean, via_aiohttp = await _both(env, f"http://127.0.0.1:{free_port()}/")
    assert via_lean.reason is Reason.CONNECT_REFUSED
    assert _untimed(via_lean) == _untimed(via_aiohttp)


async def _echoed(
    servers: Servers, env: RunEnvironment, path: str, **settings: Any
) -> tuple[Any, Any]:
    """What the target's /echo received from each path."""
    check = http_check(servers.http + path, **settings)
    echoes = []
    for use_lean in (True, False):
        servers.received.clear()
        lean.ENABLED = use_lean
        try:
            result = await run_check(check, env)
        finally:
            lean.ENABLED = True
        assert result.success, result.message
        assert len(servers.received) == 1
        echoes.append(servers.received[0])
    return echoes[0], echoes[1]


ECHO_CASES: list[tuple[str, dict[str, Any]]] = [
    ("get", {}),
    ("post-json", {"method": "POST", "json": {"user": "demo"}}),
    ("post-text", {"method": "POST", "body": "plain text"}),
    ("post-empty", {"method": "POST"}),
    ("own-headers", {"headers": {"X-Api-Key": "k", "User-Agent": "mine", "Accept": "text/*"}}),
    ("hostname", {"hostname": "api.example.test"}),
]


@pytest.mark.parametrize("settings", [c[1] for c in ECHO_CASES], ids=[c[0] for c in ECHO_CASES])
async def test_the_target_receives_the_same_request(
    servers: Servers, env: RunEnvironment, settings: dict[str, Any]
) -> None:
    via_lean, via_aiohttp = await _echoed(servers, env, "/echo", **settings)
    assert via_lean == via_aiohttp


@pytest.mark.parametrize(
    ("path", "settings"),
    [
        ("/redirect?hops=1", {}),  # a 302 to /ok, then the echo is not reached: check /away
        ("/away", {"headers": {"X-Api-Key": "k", "Authorization": "Bearer t"}}),
        (
            "/away",
            {"headers": {"X-Api-Key": "k", "X-Keep": "v"}, "redirect_headers": ["X-Keep"]},
        ),
        ("/away", {"method": "POST", "json": {"a": 1}}),
    ],
    ids=["same-origin", "cross-origin-credentials", "cross-origin-kept", "post-becomes-get"],
)
async def test_redirects_carry_the_same_headers(
    servers: Servers, env: RunEnvironment, path: str, settings: dict[str, Any]
) -> None:
    if path.startswith("/redirect"):
        via_lean, via_aiohttp = await _both(env, servers.http + path, **settings)
        assert _untimed(via_lean) == _untimed(via_aiohttp)
        return
    via_lean, via_aiohttp = await _echoed(servers, env, path, **settings)
    assert via_lean == via_aiohttp
    assert "authorization" not in via_lean["headers"]


async def _truncated_gzip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = gzip.compress(BODY)[:-12]
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    writer.close()


async def test_both_paths_fail_a_truncated_gzip_body(servers: Servers, env: RunEnvironment) -> None:
    """Decoded as `compression: gzip` asks, a stream cut short is `protocol` on both paths
    (one decoder, `encoding.BodyReader`; docs/research/blackbox.md §1.6)."""
    base = await servers.raw(_truncated_gzip)
    via_lean, via_aiohttp = await _both(env, base + "/", compression="gzip")
    assert via_lean.reason is Reason.PROTOCOL
    assert _untimed(via_lean) == _untimed(via_aiohttp)


async def test_both_paths_carry_cookies_across_redirects(
    servers: Servers, env: RunEnvironment
) -> None:
    """A cookie a 302 sets goes with the next hop to its host (blackbox.md §1.3): the lean
    path's jar and the aiohttp path's jar per request chain alike."""
    via_lean, via_aiohttp = await _both(env, servers.http + "/login")
    assert via_lean.success, via_lean.message
    assert _untimed(via_lean) == _untimed(via_aiohttp)
    assert [r["headers"]["cookie"] for r in servers.received[-2:]] == ["sid=abc"] * 2
