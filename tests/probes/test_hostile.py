"""Hostile targets: each fails with the right bounded reason, in time and in bounded memory."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from prober.engine.daemon import Daemon
from prober.engine.runner import run_check
from prober.result import Reason, Result
from tests.support.checks import WriteConfig, http_check, run_environment
from tests.support.processes import DEADLINE_SLACK, wait_for
from tests.support.servers import StartRawServer, Target

TIMEOUT = 0.5
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(3600)


async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def stalls_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    await writer.drain()
    await asyncio.sleep(3600)


async def huge_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(1600):  # 100 MiB at most; the client hangs up long before
        writer.write(chunk)
        await writer.drain()


async def endless_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"y" * 65536 + b"\r\n"
    for _ in range(100_000):  # bounded; the client gives up at its body cap
        writer.write(chunk)
        await writer.drain()


def _respond(head: bytes, body: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    return handler


async def redirect_loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def many_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    writer.write(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def http09_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"\x00\x01garbage without a status line\r\n\r\n<html>")
    await writer.drain()
    writer.close()


async def tls_hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)  # the ClientHello arrives; never answer it
    await asyncio.sleep(3600)


@pytest.fixture
def serve(raw_server: StartRawServer) -> StartRawServer:
    """A raw server per test: HOST:PORT of each handler started."""
    return raw_server


async def probe(address: str, scheme: str = "http", **settings: Any) -> tuple[Result, float]:
    check = http_check(
        f"{scheme}://{address}/", **{"name": "hostile", "timeout": TIMEOUT, **settings}
    )
    async with run_environment() as env:
        start = time.perf_counter()
        result = await run_check(check, env)
        return result, time.perf_counter() - start


CASES: list[tuple[str, Handler, dict[str, Any], Reason]] = [
    ("never-answers", never_answers, {}, Reason.TIMEOUT),
    ("accepts-then-resets", resets, {}, Reason.RESET),
    ("headers-then-stalls-body", stalls_body, {}, Reason.TIMEOUT),
    ("100MB-body", huge_body, {}, Reason.BODY_TOO_LARGE),
    ("endless-chunked-body", endless_chunked, {}, Reason.BODY_TOO_LARGE),
    (
        "invalid-json",
        _respond(b"HTTP/1.1 200 OK\r\n", b'{"a": [1, 2'),
        {"assert": ["$.a exists"]},
        Reason.INVALID_JSON,
    ),
    (
        "invalid-utf8",
        _respond(b"HTTP/1.1 200 OK\r\n", b"\xff\xfe\xfa ok \xc3\x28"),
        {"assert": ['body contains "never"']},
        Reason.ASSERTION,
    ),
    ("redirect-loop", redirect_loop, {}, Reason.STATUS),  # the last 302 judged, as blackbox
    ("10000-headers", many_headers, {}, Reason.PROTOCOL),
    ("http-0.9-garbage", http09_garbage, {}, Reason.PROTOCOL),
    ("tls-handshake-hangs", tls_hangs, {"scheme": "https"}, Reason.TIMEOUT),
]


@pytest.mark.parametrize(
    ("handler", "settings", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_hostile_target_fails_with_reason_in_time_and_memory(
    serve: Callable[[Handler], Awaitable[str]],
    handler: Handler,
    settings: dict[str, Any],
    reason: Reason,
) -> None:
    address = await serve(handler)
    settings = dict(settings)
    scheme = settings.pop("scheme", "http")
    tracemalloc.start()
    try:
        result, elapsed = await probe(address, scheme, **settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.reason == reason, result.message
    assert elapsed < TIMEOUT + DEADLINE_SLACK  # the hostile servers hold on for far longer
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert len(result.message) < 500


async def test_hostile_targets_do_not_delay_other_checks(
    serve: Callable[[Handler], Awaitable[str]], target: Target, write_config: WriteConfig
) -> None:
    hostile = [await serve(h) for h in (never_answers, huge_body, endless_chunked, tls_hangs)]
    checks = "\n".join(
        f'  - {{name: hostile-{i}, kind: http, component: api, url: "{scheme}://{address}/"}}'
        for i, (scheme, address) in enumerate(
            zip(["http", "http", "http", "https"], hostile, strict=True)
        )
    )
    path = write_config(f"""
interval: 0.2s
timeout: 0.15s
checks:
  - {{name: steady, kind: http, component: api, url: "{target.url}/ok"}}
{checks}
""")
    daemon = Daemon(path)
    await daemon.start()
    try:
        await wait_for(lambda: target.hits > 0)
        loop = asyncio.get_running_loop()
        first, started = target.hits, loop.time()
        await wait_for(lambda: loop.time() - started >= 3.0)
        runs, elapsed = target.hits - first, loop.time() - started
    finally:
        await daemon.stop()
    states = {s.name: s.success for s in daemon.status.states()}
    assert all(states[f"hostile-{i}"] is False for i in range(4)), states
    # At a 0.2 s interval the steady check is due elapsed / 0.2 times. Probes waiting on the
    # hostile ones in turn would hold it to one run per 0.6 s (four 0.15 s timeouts), a
    # third of that; a busy machine costs it a few runs, not two thirds.
    assert runs >= 0.6 * elapsed / 0.2, (runs, elapsed)


async def test_reset_is_reported_not_silently_retried(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """aiohttp would resend a GET after a reset; the prober must report the reset instead."""
    connections = 0

    async def resets_first_then_answers(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await resets(reader, writer)
        else:
            await _respond(b"HTTP/1.1 200 OK\r\n", b"ok")(reader, writer)

    address = await serve(resets_first_then_answers)
    result, _ = await probe(address)
    assert result.reason == Reason.RESET
    assert connections == 1
