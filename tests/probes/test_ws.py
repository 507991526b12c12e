"""The WebSocket client (`prober.probes.net.ws`) against real loopback servers.

The simulated platform's notification stream for the hello, the token and the faults; a
small aiohttp echo app for what a client sends, binary and oversized messages and TLS with
certificates made in the test.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from prober.config.model import TlsOptions
from prober.config.templates import compile_regex
from prober.probes.net.tls import build_context, tls_reason
from prober.probes.net.ws import (
    Closed,
    ConnectRefused,
    DeadlineReached,
    HandshakeRefused,
    InvalidRequest,
    MessageTimeout,
    NoMatchingMessage,
    ProtocolError,
    TlsFailed,
    WsError,
    WsRequest,
    WsResponse,
    exchange,
)
from prober.result import Reason
from prober.sim import DEMO_PASSWORD, RunningSim, SimOptions, start_sim
from tests.support.certs import CertFactory
from tests.support.servers import free_port, serve_app

FAST = SimOptions(latency_ms=0, latency_jitter_ms=0, seed=5)
STREAM = "/api/v1/notifications/stream"
HELLO = compile_regex(r'"type":\s*"hello"')
HANG = 0.5  # the deadline, or the `within`, of exchanges that are meant to wait in vain


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(options=FAST)
    yield running
    await running.stop()


async def bearer(sim: RunningSim, username: str = "user-0001") -> tuple[tuple[str, str], ...]:
    """Log in over HTTP; the Authorization header of the token."""
    creds = {"username": username, "password": DEMO_PASSWORD}
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{sim.url}/api/v1/login", json=creds) as resp,
    ):
        token = (await resp.json())["access_token"]
    return (("Authorization", f"Bearer {token}"),)


def stream_url(sim: RunningSim) -> str:
    return sim.url.replace("http://", "ws://") + STREAM


async def put_fault(sim: RunningSim, fault: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.put(f"{sim.url}/-/faults/notifications", json=fault) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def run(url: str, deadline_s: float = 5.0, **fields: Any) -> WsResponse:
    loop = asyncio.get_running_loop()
    return await exchange(WsRequest(url, **fields), loop.time() + deadline_s)


async def failure(url: str, deadline_s: float = 5.0, **fields: Any) -> WsError:
    with pytest.raises(WsError) as raised:
        await run(url, deadline_s, **fields)
    error = raised.value
    assert len(str(error)) < 300
    return error


async def test_stream_says_hello_within_the_time(sim: RunningSim) -> None:
    response = await run(stream_url(sim), headers=await bearer(sim), expect=HELLO, within=2.0)
    assert response.status == 101
    assert response.message == '{"type": "hello"}'
    assert response.messages == 1
    assert response.tls is None
    timeline = response.timeline
    assert timeline.phase == "first_message"
    assert timeline.resolve == 0.0 and timeline.tls == 0.0  # an IP literal, no TLS
    assert timeline.connect > 0 and timeline.handshake > 0 and timeline.first_message > 0


async def test_a_name_is_resolved_in_its_own_phase(sim: RunningSim) -> None:
    url = stream_url(sim).replace("127.0.0.1", "localhost")
    response = await run(url, headers=await bearer(sim), expect=HELLO)
    assert response.timeline.resolve > 0


async def test_without_expect_the_upgrade_is_enough(sim: RunningSim) -> None:
    response = await run(stream_url(sim), headers=await bearer(sim))
    assert response.message is None and response.messages == 0
    assert response.timeline.matched > 0


async def test_mismatching_messages_fail_when_the_time_is_up(sim: RunningSim) -> None:
    error = await failure(
        stream_url(sim), headers=await bearer(sim), expect=compile_regex("welcome"), within=HANG
    )
    assert isinstance(error, NoMatchingMessage)
    assert error.messages == 1
    assert error.phase == "first_message"
    assert "hello" not in str(error)  # a message's content never shows


async def test_missing_token_is_refused_in_the_handshake(sim: RunningSim) -> None:
    error = await failure(stream_url(sim), expect=HELLO)
    assert isinstance(error, HandshakeRefused)
    assert error.status == 401
    assert error.phase == "handshake"


async def test_error_status_fault_refuses_the_upgrade(sim: RunningSim) -> None:
    await put_fault(sim, {"status": 503})
    error = await failure(stream_url(sim), headers=await bearer(sim), expect=HELLO)
    assert isinstance(error, HandshakeRefused) and error.status == 503


async def test_hang_fault_sends_nothing_and_the_wait_names_first_message(
    sim: RunningSim,
) -> None:
    await put_fault(sim, {"hang": True})
    headers = await bearer(sim)
    timed_out = await failure(stream_url(sim), headers=headers, expect=HELLO, within=HANG)
    assert isinstance(timed_out, MessageTimeout) and not isinstance(timed_out, NoMatchingMessage)
    assert timed_out.messages == 0
    assert timed_out.phase == "first_message"
    deadline = await failure(stream_url(sim), deadline_s=HANG, headers=headers, expect=HELLO)
    assert isinstance(deadline, DeadlineReached)
    assert deadline.phase == "first_message"


async def test_reset_fault_drops_the_connection_after_the_upgrade(sim: RunningSim) -> None:
    await put_fault(sim, {"reset": True})
    error = await failure(stream_url(sim), headers=await bearer(sim), expect=HELLO)
    assert isinstance(error, Closed)
    assert error.code is None
    assert error.phase == "first_message"


async def test_server_close_ends_the_wait_with_its_code() -> None:
    sim = await start_sim(options=FAST)
    headers = await bearer(sim)
    waiting = asyncio.create_task(
        run(stream_url(sim), headers=headers, expect=compile_regex("notification"))
    )
    async with aiohttp.ClientSession() as client:  # wait until the stream is open
        for _ in range(200):
            async with client.get(f"{sim.url}/-/stats") as resp:
                stats = await resp.json()
            if stats["components"]["notifications"]["outcomes"]["ok"]:
                break
            await asyncio.sleep(0.01)
    await sim.stop()
    with pytest.raises(Closed) as raised:
        await waiting
    assert raised.value.code == 1001  # going away
    assert raised.value.phase == "first_message"


async def test_refused_port_fails_in_connect() -> None:
    error = await failure(f"ws://127.0.0.1:{free_port()}/", expect=HELLO)
    assert isinstance(error, ConnectRefused)
    assert error.phase == "connect"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1/", "ws:// or wss://"),
        ("ws:///path", "ws:// or wss://"),
        ("wss://127.0.0.1:1/", "needs an ssl_context"),
    ],
    ids=["http-scheme", "no-host", "wss-without-context"],
)
async def test_bad_url_is_refused_before_any_io(url: str, message: str) -> None:
    error = await failure(url)
    assert isinstance(error, InvalidRequest)
    assert message in str(error)


@pytest.mark.parametrize(
    ("header", "message"),
    [(("X-Key", "a\r\nInjected: 1"), "line break"), (("X Key", "v"), "not a valid HTTP token")],
    ids=["line-break", "bad-name"],
)
async def test_bad_header_is_refused_before_any_io(header: tuple[str, str], message: str) -> None:
    error = await failure(f"ws://127.0.0.1:{free_port()}/", headers=(header,))
    assert "Injected" not in str(error)
    assert isinstance(error, InvalidRequest)
    assert message in str(error)


@pytest.mark.parametrize(
    "headers",
    [(("Authorization", "Bearer t0ken"),), (("X-Key", "t0ken"),)],
    ids=["userinfo-and-authorization", "userinfo"],
)
async def test_secrets_in_url_and_headers_never_show(headers: tuple[tuple[str, str]]) -> None:
    url = f"ws://user:pa55@127.0.0.1:{free_port()}/stream?token=s3cr3t"
    error = await failure(url, headers=headers)
    for secret in ("pa55", "s3cr3t", "t0ken"):
        assert secret not in str(error)


def _echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                if msg.data == "binary":
                    await ws.send_bytes(b"binary echo \xff")
                elif msg.data == "big":
                    await ws.send_str("x" * 5000)
                else:
                    await ws.send_str(f"echo: {msg.data}")
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    return app


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    runner, url = await serve_app(_echo_app())
    yield url.replace("http://", "ws://") + "/echo"
    await runner.cleanup()


async def test_sent_message_is_answered(echo: str) -> None:
    response = await run(echo, send="ping 42", expect=compile_regex(r"echo: ping (\d+)"))
    assert response.message == "echo: ping 42"


async def test_binary_message_is_read_as_utf8(echo: str) -> None:
    response = await run(echo, send="binary", expect=compile_regex("^binary echo"))
    assert response.message == "binary echo \ufffd"


async def test_oversized_message_is_a_protocol_error(echo: str) -> None:
    error = await failure(echo, send="big", expect=HELLO, max_message_bytes=1000)
    assert isinstance(error, ProtocolError)
    assert error.phase == "first_message"


async def test_wss_exchange_is_timed_and_shows_the_certificate(certs: CertFactory) -> None:
    runner, url = await serve_app(_echo_app(), "127.0.0.1", certs.issue().server_context())
    trusted = build_context(TlsOptions(ca_file=str(certs.ca_file)))
    try:
        response = await run(
            url.replace("https://", "wss://") + "/echo",
            send="hi",
            expect=compile_regex("echo: hi"),
            ssl_context=trusted,
        )
    finally:
        await runner.cleanup()
    assert response.tls is not None and response.tls.peer_certificate
    assert response.timeline.tls > 0 and response.timeline.connect > 0


async def test_untrusted_certificate_fails_in_tls(certs: CertFactory) -> None:
    context = certs.issue(self_signed=True).server_context()
    runner, url = await serve_app(_echo_app(), "127.0.0.1", context)
    try:
        error = await failure(
            url.replace("https://", "wss://") + "/echo", ssl_context=ssl.create_default_context()
        )
    finally:
        await runner.cleanup()
    assert isinstance(error, TlsFailed)
    assert tls_reason(error.error) == Reason.TLS_CERT_INVALID
