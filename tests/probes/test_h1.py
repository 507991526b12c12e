"""The lean HTTP/1.1 client (`prober.probes.net.h1`) against real loopback servers.

aiohttp apps on 127.0.0.1 and ::1 for well-formed answers, raw asyncio servers for the
malformed, slow, reset and hung ones, TLS with certificates made in the test; and the same
requests sent through aiohttp itself, which must agree on status, headers and body.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import struct
import tracemalloc
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import pytest
import uvloop
from aiohttp import web

from prober.config.model import TlsOptions
from prober.probes.net.h1 import (
    BodyTooLarge,
    ConnectRefused,
    DeadlineReached,
    H1Error,
    H1Request,
    H1Response,
    InvalidRequest,
    InvalidUrl,
    PeerReset,
    ProtocolError,
    ResolveFailed,
    TlsFailed,
    fetch,
)
from prober.probes.net.tls import build_context, tls_reason
from prober.result import Phases, Reason
from tests.support.certs import CertFactory
from tests.support.servers import StartRawServer, free_port, serve_app

BODY = b'{"status": "ok", "padding": "' + b"a" * 4000 + b'"}'
USER_AGENT = "prober-test"
HANG = 0.5  # the deadline of requests that are meant to hang
SHORT_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"  # 9 promised, 4 sent
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _app() -> web.Application:
    async def status(request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}")

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/status/200")

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
        response.enable_compression(web.ContentCoding(request.match_info["coding"]))
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "15"})
        await response.prepare(request)
        for piece in (b"slow,", b"body,", b"done!"):
            await response.write(piece)
            await asyncio.sleep(0.05)
        return response

    async def cookies(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="two cookies")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Multi", "two")
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * int(request.query.get("n", "100000")))

    async def echo(request: web.Request) -> web.StreamResponse:
        headers = sorted((k.lower(), v) for k, v in request.headers.items())
        return web.json_response(
            {
                "method": request.method,
                "target": request.path_qs,
                "headers": headers,
                "body": (await request.read()).decode(),
            }
        )

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/compressed/{coding}", compressed)
    app.router.add_get("/slow", slow)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/echo", echo)
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


@pytest.fixture
async def tls_server(certs: CertFactory) -> AsyncIterator[str]:
    runner, url = await serve_app(_app(), "127.0.0.1", certs.issue().server_context())
    yield url
    await runner.cleanup()


@pytest.fixture
def trusted(certs: CertFactory) -> ssl.SSLContext:
    return build_context(TlsOptions(ca_file=str(certs.ca_file)))


@pytest.fixture
def raw(raw_server: StartRawServer) -> Callable[[Handler], Awaitable[str]]:
    """Start a raw asyncio server running `handler` per connection; its base URL."""

    async def start(handler: Handler) -> str:
        return f"http://{await raw_server(handler)}"

    return start


async def get(url: str, method: str = "GET", within: float = 5.0, **fields: Any) -> H1Response:
    request = H1Request(method, url, **{"headers": (("User-Agent", USER_AGENT),), **fields})
    return await fetch(request, asyncio.get_running_loop().time() + within)


async def failure(url: str, within: float = 5.0, **fields: Any) -> H1Error:
    with pytest.raises(H1Error) as raised:
        await get(url, within=within, **fields)
    error = raised.value
    assert len(str(error)) < 300
    return error


def _answers(head: bytes, body: bytes = b"", close: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + body)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(3600)

    return handler


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def resets_before_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    _reset(writer)


async def resets_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()
    await asyncio.sleep(0.05)
    _reset(writer)


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(3600)


async def never_handshakes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)  # the ClientHello arrives; never answer it
    await asyncio.sleep(3600)


# Tests of behaviour: status classes, bodies, headers, phases.


@pytest.mark.parametrize(
    ("code", "reason"),
    [(200, "OK"), (302, "Found"), (404, "Not Found"), (503, "Service Unavailable")],
    ids=["2xx", "3xx", "4xx", "5xx"],
)
async def test_status_classes_come_back_with_their_reason_phrase(
    server: str, code: int, reason: str
) -> None:
    response = await get(f"{server}/status/{code}")
    assert (response.status, response.reason, response.http_version) == (code, reason, "1.1")
    assert response.body == f"status {code}".encode()
    assert response.content_length == len(response.body)


async def test_redirect_is_returned_not_followed(server: str) -> None:
    response = await get(f"{server}/redirect")
    assert response.status == 302
    assert response.header("location") == "/status/200"


async def test_chunked_body_is_decoded_and_has_no_content_length(server: str) -> None:
    response = await get(f"{server}/chunked")
    assert response.body == b"first,second,third"
    assert response.wire_length == len(response.body)
    assert response.content_length == -1


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_compressed_body_is_inflated_and_its_wire_length_kept(
    server: str, coding: str
) -> None:
    response = await get(f"{server}/compressed/{coding}", compression=coding)
    assert response.header("content-encoding") == coding
    assert response.body == BODY
    assert response.wire_length < len(BODY)
    assert response.content_length in (-1, response.wire_length)


@pytest.mark.parametrize(
    ("coding", "payload"),
    [
        ("gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", zlib.compress(BODY)[2:-4]),  # raw deflate, as some servers send it
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
async def test_every_shape_of_compressed_body_inflates(
    raw: Callable[[Handler], Awaitable[str]], coding: str, payload: bytes
) -> None:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    url = await raw(_answers(head.encode(), payload))
    response = await get(url, compression=coding)
    assert response.body == BODY
    assert response.wire_length == len(payload)


async def test_compressed_body_is_kept_as_sent_unless_asked(
    raw: Callable[[Handler], Awaitable[str]],
) -> None:
    """No `compression`, no decoding and no Accept-Encoding (blackbox_exporter's policy)."""
    payload = gzip.compress(BODY)
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(payload)}\r\n\r\n"
    response = await get(await raw(_answers(head.encode(), payload)))
    assert response.body == payload
    assert response.wire_length == len(payload)


async def test_body_with_unknown_encoding_is_kept_as_sent(
    raw: Callable[[Handler], Awaitable[str]],
) -> None:
    payload = gzip.compress(BODY)
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: {len(payload)}\r\n\r\n"
    response = await get(await raw(_answers(head.encode(), payload)))
    assert response.body == payload


async def test_slow_body_is_read_whole_and_its_time_counts_as_transfer(server: str) -> None:
    response = await get(f"{server}/slow")
    assert response.body == b"slow,body,done!"
    timeline = response.timeline
    assert timeline.started <= timeline.written <= timeline.first_byte < timeline.last_byte
    assert timeline.transfer >= 0.09  # two 50 ms pauses between the pieces: never less


async def test_repeated_headers_stay_repeated_in_order(server: str) -> None:
    response = await get(f"{server}/cookies")
    cookies = [v for k, v in response.headers if k.lower() == "set-cookie"]
    assert cookies == ["a=1; Path=/", "b=2; Path=/"]
    assert [v for k, v in response.headers if k == "X-Multi"] == ["one", "two"]
    assert response.header("x-multi") == "two"


async def test_no_content_has_content_length_zero(
    raw: Callable[[Handler], Awaitable[str]],
) -> None:
    url = await raw(_answers(b"HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n", close=False))
    response = await get(url)
    assert (response.status, response.body, response.content_length) == (204, b"", 0)


async def test_head_reads_no_body_and_reports_the_length_sent(
    server: str, raw: Callable[[Handler], Awaitable[str]]
) -> None:
    response = await get(f"{server}/cookies", method="HEAD")
    assert (response.status, response.body) == (200, b"")
    assert response.content_length == len(b"two cookies")
    # No Content-Length on a HEAD answer: 0, and no wait for a body that never comes.
    url = await raw(_answers(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n", close=False))
    response = await get(url, method="HEAD")
    assert (response.body, response.content_length) == (b"", 0)


async def test_body_until_close_without_length(raw: Callable[[Handler], Awaitable[str]]) -> None:
    url = await raw(_answers(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"to the end"))
    response = await get(url)
    assert (response.http_version, response.body, response.content_length) == (
        "1.0",
        b"to the end",
        -1,
    )


async def test_interim_continue_is_skipped(raw: Callable[[Handler], Awaitable[str]]) -> None:
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n"
    response = await get(await raw(_answers(head, b"ok")))
    assert (response.status, response.body, response.headers) == (
        201,
        b"ok",
        (("Content-Length", "2"),),
    )


async def test_request_is_sent_as_given_with_framing_added(server: str) -> None:
    response = await get(
        "http://user:p%40ss@" + server.removeprefix("http://") + "/echo?a=1&b=x y",
        method="POST",
        body=b"payload",
        headers=(("User-Agent", USER_AGENT), ("X-Twice", "1"), ("X-Twice", "2")),
    )
    sent = json.loads(response.body)
    assert (sent["method"], sent["target"], sent["body"]) == (
        "POST",
        "/echo?a=1&b=x%20y",
        "payload",
    )
    headers = dict(sent["headers"])
    assert headers["host"] == server.removeprefix("http://")
    assert headers["content-length"] == "7"
    assert headers["connection"] == "close"
    assert headers["authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert [v for k, v in sent["headers"] if k == "x-twice"] == ["1", "2"]


async def test_phases_are_stamped_in_order(server: str) -> None:
    response = await get(server.replace("127.0.0.1", "localhost") + "/status/200")
    t = response.timeline
    assert t.started < t.resolved <= t.connected <= t.written <= t.first_byte <= t.last_byte
    assert t.resolve > 0 and t.connect > 0 and t.tls == 0
    assert t.ended == t.last_byte
    assert t.phases() == Phases(t.resolve, t.connect, t.tls, t.processing, t.transfer)
    literal = (await get(f"{server}/status/200")).timeline
    assert literal.resolve == 0  # an IP address is not looked up


async def test_ipv6_loopback(server6: str) -> None:
    response = await get(f"{server6}/status/200", family=socket.AF_INET6)
    assert response.status == 200


# Failures: each a typed error that names its phase.


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "http:///path", "http://127.0.0.1:0/", "http://127.0.0.1:99999/"],
    ids=["scheme", "no-host", "port-0", "port-too-big"],
)
async def test_invalid_url_fails_before_any_io(url: str) -> None:
    error = await failure(url)
    assert isinstance(error, InvalidUrl)
    assert error.phase is None


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"headers": (("X-Token", "secret\r\nX-Evil: 1"),)}, "line break"),
        ({"headers": (("Bad Name", "v"),)}, "header name"),
        ({"method": "GET /x"}, "method"),
    ],
    ids=["crlf-in-value", "space-in-name", "bad-method"],
)
async def test_request_that_would_break_framing_is_refused(
    server: str, fields: dict[str, Any], text: str
) -> None:
    method = fields.pop("method", "GET")
    with pytest.raises(InvalidRequest, match=text) as raised:
        await fetch(H1Request(method, f"{server}/echo", **fields), 1e12)
    assert "secret" not in str(raised.value)


async def test_https_needs_an_ssl_context(tls_server: str) -> None:
    assert isinstance(await failure(f"{tls_server}/status/200"), InvalidRequest)


async def test_refused_connection() -> None:
    error = await failure(f"http://127.0.0.1:{free_port()}/")
    assert isinstance(error, ConnectRefused)
    assert error.phase == "connect"
    assert isinstance(error.__cause__, ConnectionRefusedError)


async def test_address_of_the_wrong_family_fails_in_resolve(server: str) -> None:
    error = await failure(f"{server}/", family=socket.AF_INET6)
    assert isinstance(error, ResolveFailed)
    assert error.phase == "resolve"


async def test_name_that_does_not_resolve_fails_in_resolve() -> None:
    error = await failure("http://no-such-host.invalid/", within=3.0)
    assert isinstance(error, ResolveFailed | DeadlineReached)  # an offline resolver may hang
    assert error.phase == "resolve"


@pytest.mark.parametrize(
    ("handler", "error_type", "phase"),
    [
        (never_answers, DeadlineReached, "processing"),
        (_answers(SHORT_HEAD, b"part", close=False), DeadlineReached, "transfer"),
        (resets_before_answer, PeerReset, "processing"),
        (resets_mid_body, PeerReset, "transfer"),
        (_answers(SHORT_HEAD, b"part"), ProtocolError, "transfer"),
        (_answers(b"\x00\x01garbage without a status line\r\n\r\n"), ProtocolError, "transfer"),
    ],
    ids=[
        "hangs-before-answer",
        "hangs-mid-body",
        "resets-before-answer",
        "resets-mid-body",
        "closes-mid-body",
        "garbage",
    ],
)
async def test_failing_exchange_names_its_phase(
    raw: Callable[[Handler], Awaitable[str]],
    handler: Handler,
    error_type: type[H1Error],
    phase: str,
) -> None:
    error = await failure(await raw(handler), within=HANG)
    assert isinstance(error, error_type)
    assert error.phase == phase
    assert error.timeline is not None
    assert error.timeline.ended >= error.timeline.started


async def test_timeline_of_a_hung_request_runs_to_its_end(
    raw: Callable[[Handler], Awaitable[str]],
) -> None:
    error = await failure(await raw(never_answers), within=HANG)
    timeline = error.timeline
    assert timeline is not None
    assert timeline.ended - timeline.started >= HANG - 0.01  # it ended at the deadline
    assert timeline.processing == timeline.ended - timeline.written  # waiting there till then
    assert timeline.transfer == 0


async def test_deadline_leaves_the_task_uncancelled_and_a_cancel_from_outside_goes_on(
    raw: Callable[[Handler], Awaitable[str]],
) -> None:
    url = await raw(never_answers)
    assert isinstance(await failure(url, within=HANG), DeadlineReached)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline's own cancel taken back
    with pytest.raises(TimeoutError):  # an outer timeout before the request's deadline
        async with asyncio.timeout(HANG / 5):
            await get(url, within=HANG)
    assert task.cancelling() == 0
    fetching = asyncio.create_task(get(url, within=HANG))
    await asyncio.sleep(HANG / 5)
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):  # cancelled from outside: not a deadline
        await fetching


async def test_body_over_the_cap(server: str, raw: Callable[[Handler], Awaitable[str]]) -> None:
    assert (await get(f"{server}/big?n=1000", max_body_bytes=1000)).body == b"x" * 1000
    assert isinstance(await failure(f"{server}/big?n=1001", max_body_bytes=1000), BodyTooLarge)
    endless = _answers(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n", b"x" * 65536 * 4)
    assert isinstance(await failure(await raw(endless), max_body_bytes=65536), BodyTooLarge)


async def test_compressed_body_is_capped_as_it_inflates(
    raw: Callable[[Handler], Awaitable[str]],
) -> None:
    def gzipped(payload: bytes) -> Handler:
        packed = gzip.compress(payload, compresslevel=1)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n\r\n"
        return _answers(head.encode(), packed)

    exact = await get(
        await raw(gzipped(b"\0" * 100_000)), max_body_bytes=100_000, compression="gzip"
    )
    assert exact.body == b"\0" * 100_000
    bomb = await raw(gzipped(b"\0" * 50_000_000))  # 50 MB in about 50 kB
    tracemalloc.start()
    try:
        error = await failure(bomb, max_body_bytes=1_000_000, compression="gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, BodyTooLarge)
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB"  # never the 50 MB inflated


@pytest.mark.parametrize(
    "payload",
    [b"not gzip at all", gzip.compress(BODY)[:-20]],
    ids=["not-gzip", "truncated-gzip"],
)
async def test_body_that_does_not_inflate_is_a_protocol_error(
    raw: Callable[[Handler], Awaitable[str]], payload: bytes
) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(payload)}\r\n\r\n"
    url = await raw(_answers(head.encode(), payload))
    assert isinstance(await failure(url, compression="gzip"), ProtocolError)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 9000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"v" * 2_000_000,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    ],
    ids=["200-headers", "9000-byte-header", "endless-head", "unasked-upgrade"],
)
async def test_hostile_head_is_a_protocol_error(
    raw: Callable[[Handler], Awaitable[str]], head: bytes
) -> None:
    assert isinstance(await failure(await raw(_answers(head)), within=HANG * 4), ProtocolError)


# TLS.


async def test_tls_reports_version_certificate_and_split_phases(
    certs: CertFactory, tls_server: str, trusted: ssl.SSLContext
) -> None:
    response = await get(f"{tls_server}/chunked", ssl_context=trusted)
    assert response.body == b"first,second,third"
    assert response.tls is not None
    assert response.tls.version in ("TLSv1.2", "TLSv1.3")
    assert response.tls.peer_certificate is not None
    issued = {
        ssl.PEM_cert_to_DER_cert(path.read_text())
        for path in certs.directory.glob("leaf*.pem")
        if not path.name.endswith("-key.pem")
    }
    assert response.tls.peer_certificate in issued
    t = response.timeline
    assert t.resolved <= t.connected < t.secured <= t.written
    assert t.connect > 0 and t.tls > 0


async def test_server_hostname_sets_the_name_the_certificate_must_match(
    certs: CertFactory, trusted: ssl.SSLContext
) -> None:
    leaf = certs.issue(("api.example.test",))
    runner, url = await serve_app(_app(), "127.0.0.1", leaf.server_context())
    try:
        named = await get(
            f"{url}/status/200", ssl_context=trusted, server_hostname="api.example.test"
        )
        assert named.status == 200
        error = await failure(f"{url}/status/200", ssl_context=trusted)
    finally:
        await runner.cleanup()
    assert isinstance(error, TlsFailed)
    assert tls_reason(error.error) == Reason.TLS_CERT_INVALID


@pytest.mark.parametrize(
    ("issue", "reason"),
    [
        ({"self_signed": True}, Reason.TLS_CERT_INVALID),
        ({"days": 1, "starts_in_days": -3}, Reason.TLS_CERT_EXPIRED),
    ],
    ids=["self-signed", "expired"],
)
async def test_bad_certificate_fails_in_tls_with_its_reason(
    certs: CertFactory, trusted: ssl.SSLContext, issue: dict[str, Any], reason: Reason
) -> None:
    runner, url = await serve_app(_app(), "127.0.0.1", certs.issue(**issue).server_context())
    try:
        error = await failure(f"{url}/status/200", ssl_context=trusted)
    finally:
        await runner.cleanup()
    assert isinstance(error, TlsFailed)
    assert error.phase == "tls"
    assert tls_reason(error.error) == reason


async def test_unverified_context_still_shows_the_certificate(
    certs: CertFactory, tls_server: str
) -> None:
    insecure = build_context(TlsOptions(insecure_skip_verify=True))
    response = await get(f"{tls_server}/status/200", ssl_context=insecure)
    assert response.tls is not None and response.tls.peer_certificate


async def test_plain_server_fails_the_handshake(server: str, trusted: ssl.SSLContext) -> None:
    url = server.replace("http://", "https://")
    error = await failure(f"{url}/status/200", ssl_context=trusted)
    assert isinstance(error, TlsFailed)
    assert tls_reason(error.error) == Reason.TLS_HANDSHAKE


async def test_handshake_that_hangs_names_tls(
    raw: Callable[[Handler], Awaitable[str]], trusted: ssl.SSLContext
) -> None:
    url = (await raw(never_handshakes)).replace("http://", "https://")
    error = await failure(url, within=HANG, ssl_context=trusted)
    assert isinstance(error, DeadlineReached)
    assert error.phase == "tls"


# The same requests through aiohttp: both paths must see the same response.

DIFFERENTIAL = [
    ("GET", "/status/200"),
    ("GET", "/status/404"),
    ("GET", "/status/503"),
    ("GET", "/redirect"),
    ("GET", "/chunked"),
    ("GET", "/compressed/gzip"),
    ("GET", "/compressed/deflate"),
    ("GET", "/slow"),
    ("GET", "/cookies"),
    ("HEAD", "/cookies"),
    ("GET", "/status/204"),
    ("GET", "/big?n=300000"),
    ("POST", "/echo?q=1"),
]


def _comparable(headers: Any) -> Counter[tuple[str, str]]:
    """Headers as a multiset, names folded; Date may tick between the two requests."""
    return Counter((k.lower(), v) for k, v in headers if k.lower() != "date")


async def _through_aiohttp(
    method: str, url: str, context: ssl.SSLContext | None
) -> tuple[int, Counter[tuple[str, str]], bytes]:
    connector = aiohttp.TCPConnector(force_close=True)
    # As the prober's sessions (probes/context.py): no Accept-Encoding, nothing decoded.
    async with (
        aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            skip_auto_headers=("Accept-Encoding",),
            auto_decompress=False,
        ) as session,
        session.request(
            method,
            url,
            data=b"sent" if method == "POST" else None,
            headers={"Content-Type": "text/plain"} if method == "POST" else None,
            allow_redirects=False,
            ssl=context if context is not None else True,
        ) as response,
    ):
        body = await response.read()
        return response.status, _comparable(response.headers.items()), body


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_aiohttp_and_h1_see_the_same_responses(
    server: str, tls_server: str, trusted: ssl.SSLContext, scheme: str
) -> None:
    base, context = (server, None) if scheme == "http" else (tls_server, trusted)
    for method, path in DIFFERENTIAL:
        expected = await _through_aiohttp(method, base + path, context)
        headers: tuple[tuple[str, str], ...] = (("User-Agent", USER_AGENT),)
        body = b""
        if method == "POST":
            headers += (("Content-Type", "text/plain"),)
            body = b"sent"
        response = await get(
            base + path, method=method, headers=headers, body=body, ssl_context=context
        )
        seen = (response.status, _comparable(response.headers), response.body)
        assert seen == expected, (method, path)


async def _aiohttp_failure(url: str, context: ssl.SSLContext | None) -> BaseException:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with (
                asyncio.timeout(HANG),
                session.get(url, ssl=context if context is not None else True) as response,
            ):
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return exc
    raise AssertionError("aiohttp did not fail")


@pytest.mark.parametrize(
    ("handler", "aiohttp_error", "h1_error"),
    [
        (never_answers, TimeoutError, DeadlineReached),
        (resets_before_answer, aiohttp.ClientOSError, PeerReset),
        (_answers(b"\x00garbage\r\n\r\n"), aiohttp.ClientResponseError, ProtocolError),
        (
            _answers(SHORT_HEAD, b"part"),
            aiohttp.ClientPayloadError,
            ProtocolError,
        ),
        # aiohttp calls a reset mid-body an incomplete payload; h1 calls it what it is.
        (resets_mid_body, aiohttp.ClientPayloadError, PeerReset),
    ],
    ids=["hang", "reset", "garbage", "short-body", "reset-mid-body"],
)
async def test_aiohttp_and_h1_fail_alike(
    raw: Callable[[Handler], Awaitable[str]],
    handler: Handler,
    aiohttp_error: type[BaseException],
    h1_error: type[H1Error],
) -> None:
    url = await raw(handler)
    assert isinstance(await _aiohttp_failure(url, None), aiohttp_error)
    assert isinstance(await failure(url, within=HANG), h1_error)


async def test_aiohttp_and_h1_refuse_a_bad_certificate_alike(
    certs: CertFactory, trusted: ssl.SSLContext
) -> None:
    runner, url = await serve_app(
        _app(), "127.0.0.1", certs.issue(self_signed=True).server_context()
    )
    try:
        seen = await _aiohttp_failure(f"{url}/status/200", trusted)
        error = await failure(f"{url}/status/200", ssl_context=trusted)
    finally:
        await runner.cleanup()
    assert isinstance(seen, aiohttp.ClientConnectorCertificateError)
    assert isinstance(error, TlsFailed)
    assert tls_reason(error.error) == tls_reason(seen.certificate_error)


# Under uvloop, the loop the daemon runs on when installed.


class _Silent(asyncio.Protocol):
    """Takes connections and never answers; keeps them so the test can drop them."""

    def __init__(self, held: list[asyncio.Transport]) -> None:
        self._held = held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._held.append(cast(asyncio.Transport, transport))


def test_same_exchanges_under_uvloop(certs: CertFactory) -> None:
    async def exchanges() -> None:
        trusted = build_context(TlsOptions(ca_file=str(certs.ca_file)))
        plain, plain_url = await serve_app(_app(), "127.0.0.1")
        secure, secure_url = await serve_app(_app(), "127.0.0.1", certs.issue().server_context())
        held: list[asyncio.Transport] = []
        loop = asyncio.get_running_loop()
        silent = await loop.create_server(lambda: _Silent(held), "127.0.0.1", 0)
        try:
            chunked = await get(f"{plain_url}/chunked")
            assert chunked.body == b"first,second,third"
            inflated = await get(
                f"{secure_url}/compressed/gzip", ssl_context=trusted, compression="gzip"
            )
            assert inflated.body == BODY
            assert inflated.tls is not None and inflated.tls.peer_certificate
            # uvloop's SSL transport gives the chains too: the lean path reports their expiry.
            assert inflated.tls.served and inflated.tls.verified
            assert inflated.timeline.tls > 0 and inflated.timeline.connect > 0
            port = silent.sockets[0].getsockname()[1]
            error = await failure(f"http://127.0.0.1:{port}/", within=HANG)
            assert isinstance(error, DeadlineReached) and error.phase == "processing"
        finally:
            silent.close()
            for transport in held:
                transport.abort()
            await silent.wait_closed()
            await plain.cleanup()
            await secure.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(exchanges())
