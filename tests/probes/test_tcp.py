"""The tcp probe against a real line server on loopback (IPv4, IPv6, plain and TLS)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from prober.config.model import TcpCheck
from prober.engine.runner import RunEnvironment, run_check
from prober.result import Reason, TcpFacts
from tests.support.certs import CertFactory
from tests.support.checks import facts_of, run_environment
from tests.support.processes import DEADLINE_SLACK
from tests.support.samples import exported_samples
from tests.support.servers import free_port

StartServer = Callable[..., Awaitable[str]]


async def _line_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speaks first (220), answers PING with PONG, QUIT with 221 and a close."""
    writer.write(b"220 prober-test ready\r\n")
    try:
        while line := await reader.readline():
            command = line.strip()
            if command == b"PING":
                writer.write(b"PONG\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            elif command == b"LONG":
                writer.write(b"x" * 100_000 + b"\n")
            else:
                writer.write(b"500 unknown\r\n")
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def _silent_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never says a word until the client leaves."""
    await reader.read()
    writer.close()


@pytest.fixture
async def tcp_server() -> AsyncIterator[StartServer]:
    servers: list[asyncio.Server] = []
    clients: set[asyncio.StreamWriter] = set()

    async def start(
        host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, silent: bool = False
    ) -> str:
        handler = _silent_server if silent else _line_server

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            clients.add(writer)
            try:
                await handler(reader, writer)
            finally:
                clients.discard(writer)

        server = await asyncio.start_server(tracked, host, 0, ssl=tls)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    yield start
    for writer in list(clients):
        writer.transport.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


def tcp_check(target: str, **settings: Any) -> TcpCheck:
    fields: dict[str, Any] = {
        "name": "smtp-like",
        "kind": "tcp",
        "component": "mail",
        "target": target,
        "interval": 10.0,
        "timeout": 2.0,
    }
    fields.update(settings)
    return TcpCheck.model_validate(fields)


DIALOGUE = {"send": ["", "PING", "QUIT"], "expect": ["^220 ", "^PONG$", "^221 "]}


async def test_dialogue_in_order_succeeds_with_phases(
    tcp_server: StartServer, env: RunEnvironment
) -> None:
    target = await tcp_server()
    result = await run_check(tcp_check(target, **DIALOGUE), env)
    assert result.success, result.message
    step = result.steps[0]
    facts = facts_of(step, TcpFacts)
    assert step.name == "connect"
    assert [(a.passed, a.actual) for a in step.assertions] == [
        (True, "220 prober-test ready"),
        (True, "PONG"),
        (True, "221 bye"),
    ]
    assert facts.phases.connect > 0 and facts.phases.processing > 0
    assert facts.phases.tls == 0 and facts.tls is None
    assert facts.lookup_time is not None


async def test_connect_only_check_succeeds(tcp_server: StartServer, env: RunEnvironment) -> None:
    result = await run_check(tcp_check(await tcp_server()), env)
    assert result.success, result.message


CASES = [
    ("unexpected-reply", {"send": ["HELLO"], "expect": ["^250"]}, Reason.TIMEOUT),
    ("closed-before-match", {"send": ["QUIT"], "expect": ["^250"]}, Reason.ASSERTION),
    ("line-too-long", {"send": ["LONG"], "expect": ["^x+$"]}, Reason.PROTOCOL),
]


@pytest.mark.parametrize(("settings", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_failed_expectation_gives_reason(
    tcp_server: StartServer, env: RunEnvironment, settings: dict[str, Any], reason: Reason
) -> None:
    result = await run_check(tcp_check(await tcp_server(), timeout=0.5, **settings), env)
    assert result.reason == reason, result.message
    assert result.failed_step == "connect"


async def test_secret_values_are_redacted_from_message_and_outcomes(
    tcp_server: StartServer,
) -> None:
    target = await tcp_server()
    check = tcp_check(target, send=["", "QUIT"], expect=["^220 ", "Q-secret"])
    async with run_environment(sensitive=frozenset({"bye", "Q-secret"})) as env:
        result = await run_check(check, env)
    assert result.reason == Reason.ASSERTION, result.message
    assert result.message == "connection closed before a line matched '***'"
    assert result.steps[0].message == result.message
    assert result.steps[0].assertions[-1].actual == "221 ***"


async def test_connection_refused(env: RunEnvironment) -> None:
    result = await run_check(tcp_check(f"127.0.0.1:{free_port()}"), env)
    assert result.reason == Reason.CONNECT_REFUSED, result.message


async def test_silent_server_times_out_within_deadline(
    tcp_server: StartServer, env: RunEnvironment
) -> None:
    target = await tcp_server(silent=True)
    start = time.perf_counter()
    result = await run_check(tcp_check(target, timeout=0.3, expect=["^220"]), env)
    elapsed = time.perf_counter() - start
    assert result.reason == Reason.TIMEOUT
    assert "waiting for a line matching '^220'" in result.message
    assert elapsed < 0.3 + DEADLINE_SLACK, elapsed  # the server stays silent for longer
    # The phases reached are still reported.
    assert facts_of(result.steps[0], TcpFacts).phases.connect > 0


async def test_tls_dialogue_reports_version_and_expiry(
    tcp_server: StartServer, env: RunEnvironment, certs: CertFactory
) -> None:
    leaf = certs.issue()
    target = await tcp_server(tls=leaf.server_context())
    check = tcp_check(target, use_tls=True, tls={"ca_file": str(certs.ca_file)}, **DIALOGUE)
    result = await run_check(check, env)
    assert result.success, result.message
    step = result.steps[0]
    facts = facts_of(step, TcpFacts)
    assert facts.tls is not None
    assert (facts.tls.version, facts.tls.expiry) == ("TLS 1.3", leaf.not_after.timestamp())
    assert facts.phases.tls > 0


async def test_tls_failures_are_told_apart(
    tcp_server: StartServer, env: RunEnvironment, certs: CertFactory
) -> None:
    ca = {"ca_file": str(certs.ca_file)}
    expired = await tcp_server(tls=certs.issue(days=1, starts_in_days=-5).server_context())
    result = await run_check(tcp_check(expired, use_tls=True, tls=ca), env)
    assert result.reason == Reason.TLS_CERT_EXPIRED, result.message
    wrong = await tcp_server(tls=certs.issue(("other.example",)).server_context())
    result = await run_check(tcp_check(wrong, use_tls=True, tls=ca), env)
    assert result.reason == Reason.TLS_CERT_INVALID, result.message
    plain = await tcp_server()
    result = await run_check(tcp_check(plain, use_tls=True, tls=ca), env)
    assert result.reason == Reason.TLS_HANDSHAKE, result.message


async def test_ipv6_loopback(tcp_server: StartServer, env: RunEnvironment) -> None:
    target = await tcp_server(host="::1")
    result = await run_check(tcp_check(target, ip_protocol="ip6", **DIALOGUE), env)
    assert result.success, result.message
    wrong_family = await run_check(tcp_check(target, ip_protocol="ip4"), env)
    assert wrong_family.reason == Reason.DNS
    assert "IPv6 address but ip_protocol is ip4" in wrong_family.message


async def test_tcp_series_are_exported(tcp_server: StartServer, env: RunEnvironment) -> None:
    result = await run_check(tcp_check(await tcp_server(), **DIALOGUE), env)
    names = {
        (name, dict(labels).get("phase", ""))
        for name, labels, _ in exported_samples(result, "mail")
    }
    assert {("probe_tcp_duration_seconds", p) for p in ("resolve", "connect", "tls")} <= names
    assert ("probe_tcp_duration_seconds", "processing") in names
    assert ("probe_dns_lookup_time_seconds", "") in names
    assert not {n for n, _ in names if n.startswith("probe_http_")}
