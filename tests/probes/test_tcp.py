"""The tcp probe against a real line server on loopback (IPv4, IPv6, plain and TLS)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from prober.config.load import load_config
from prober.config.model import TcpCheck
from prober.config.templates import compile_regex
from prober.engine.runner import RunEnvironment, run_check
from prober.probes.tcp_dialogue import expand
from prober.result import Reason, TcpFacts
from tests.support.certs import CertFactory
from tests.support.checks import WriteConfig, facts_of, run_environment
from tests.support.processes import DEADLINE_SLACK
from tests.support.samples import exported_samples
from tests.support.servers import free_port

StartServer = Callable[..., Awaitable[str]]


TOKEN = b"tok-4711"


async def _line_server(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext | None
) -> None:
    """Speaks first (220), answers PING with PONG, QUIT with 221 and a close; SMTP-like EHLO
    and STARTTLS (with `tls`), IRC-like NICK (PING :token) and PONG; WHO (the client's IP)."""
    writer.write(b"220 prober-test ready\r\n")
    try:
        while line := await reader.readline():
            command = line.strip()
            if command == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            if command == b"STARTTLS" and tls is not None:
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(tls)
                continue
            writer.write(_reply(command, writer))
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _reply(command: bytes, writer: asyncio.StreamWriter) -> bytes:
    secured = writer.get_extra_info("ssl_object") is not None
    if command == b"PING":
        return b"PONG\r\n"
    if command == b"LONG":
        return b"x" * 100_000 + b"\n"
    if command.startswith(b"EHLO "):
        offer = b"250-AUTH PLAIN\r\n" if secured else b"250-STARTTLS\r\n"
        return b"250-mail.test greets " + command[5:] + b"\r\n" + offer + b"250 OK\r\n"
    if command.startswith(b"NICK "):
        return b"PING :" + TOKEN + b"\r\n"
    if command.startswith(b"PONG "):
        if command[5:] == TOKEN:
            return b"001 welcome\r\n"
        return b"464 wrong " + command[5:] + b"\r\n"
    if command == b"WHO":
        return f"you are {writer.get_extra_info('peername')[0]}\r\n".encode()
    return b"500 unknown\r\n"


async def _silent_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never says a word until the client leaves."""
    await reader.read()
    writer.close()


@pytest.fixture
async def tcp_server() -> AsyncIterator[StartServer]:
    servers: list[asyncio.Server] = []
    clients: set[asyncio.StreamWriter] = set()

    async def start(
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        silent: bool = False,
        starttls: ssl.SSLContext | None = None,
    ) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            clients.add(writer)
            try:
                if silent:
                    await _silent_server(reader, writer)
                else:
                    await _line_server(reader, writer, starttls)
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


SMTP_STARTTLS = [
    {"expect": "^220 ([^ ]+) ready$", "send": "EHLO prober\r"},
    {"expect": "^250-STARTTLS", "send": "STARTTLS\r"},
    {"expect": "^220", "starttls": True},
    {"send": "EHLO prober\r"},
    {"expect": "^250-AUTH", "send": "QUIT\r"},
    {"expect": "^221 "},
]


async def test_starttls_in_query_response_as_blackbox(
    tcp_server: StartServer, env: RunEnvironment, certs: CertFactory
) -> None:
    """blackbox_exporter's SMTP STARTTLS example: the TLS facts come from the upgrade."""
    leaf = certs.issue()
    target = await tcp_server(starttls=leaf.server_context())
    check = tcp_check(target, query_response=SMTP_STARTTLS, tls={"ca_file": str(certs.ca_file)})
    result = await run_check(check, env)
    assert result.success, result.message
    facts = facts_of(result.steps[0], TcpFacts)
    assert facts.tls is not None
    assert (facts.tls.version, facts.tls.expiry) == ("TLS 1.3", leaf.not_after.timestamp())
    assert facts.phases.tls > 0 and facts.phases.processing > 0
    assert [a.actual for a in result.steps[0].assertions][-2:] == ["250-AUTH PLAIN", "221 bye"]
    names = {name for name, _, _ in exported_samples(result, "mail", full=True)}
    assert {"probe_tls_version_info", "probe_ssl_earliest_cert_expiry"} <= names


async def test_starttls_against_an_untrusted_certificate_fails_as_tls(
    tcp_server: StartServer, env: RunEnvironment, certs: CertFactory
) -> None:
    target = await tcp_server(starttls=certs.issue(("other.example",)).server_context())
    check = tcp_check(target, query_response=SMTP_STARTTLS, tls={"ca_file": str(certs.ca_file)})
    result = await run_check(check, env)
    assert result.reason == Reason.TLS_CERT_INVALID, result.message


CAPTURES = [
    ("numbered", "^PING :([^ ]+)$", "PONG ${1}", "^001 welcome$"),
    ("dollar-number", "^PING :([^ ]+)$", "PONG $1", "^001 welcome$"),
    ("named", "^PING :(?P<token>[^ ]+)$", "PONG ${token}", "^001 welcome$"),
    ("missing-group", "^PING :([^ ]+)$", "PONG ${2}x", "^464 wrong x$"),
    ("dollar-dollar", "^PING :([^ ]+)$", "PONG $$1", r"^464 wrong \$1$"),
]


@pytest.mark.parametrize(
    ("expect", "send", "reply"), [c[1:] for c in CAPTURES], ids=[c[0] for c in CAPTURES]
)
async def test_captures_of_expect_fill_the_next_send(
    tcp_server: StartServer, env: RunEnvironment, expect: str, send: str, reply: str
) -> None:
    """blackbox_exporter's IRC example: `PING :token` is answered with `PONG token`."""
    entries = [{"send": "NICK prober"}, {"expect": expect, "send": send}, {"expect": reply}]
    result = await run_check(tcp_check(await tcp_server(), query_response=entries), env)
    assert result.success, (result.message, result.steps[0].assertions)


async def test_send_without_expect_is_sent_as_written(
    tcp_server: StartServer, env: RunEnvironment
) -> None:
    entries = [{"send": "PONG ${1}"}, {"expect": r"^464 wrong \$\{1\}$"}]
    result = await run_check(tcp_check(await tcp_server(), query_response=entries), env)
    assert result.success, (result.message, result.steps[0].assertions)


def test_captures_expand_by_go_rules() -> None:
    pattern = compile_regex(r"(?P<first>a)(b)?(c)")
    match = pattern.compiled.search("xac")
    cases = {
        "${1}${2}${3}": "ac",
        "$1x": "",  # the name is `1x`: no such group
        "${1}x": "ax",
        "${first}-$3": "a-c",
        "$$1": "$1",
        "cost $": "cost $",
        "${1": "${1",
        "$-": "$-",
        "$10": "",
        "${nope}": "",
    }
    assert {t: expand(t, pattern, match) for t in cases} == cases


async def test_source_ip_address_is_bound_before_connecting(
    tcp_server: StartServer, env: RunEnvironment
) -> None:
    entries = [{"send": "WHO"}, {"expect": r"^you are 127\.0\.0\.2$"}]
    check = tcp_check(await tcp_server(), query_response=entries, source_ip_address="127.0.0.2")
    result = await run_check(check, env)
    assert result.success, (result.message, result.steps[0].assertions)
    other_family = tcp_check(await tcp_server(), source_ip_address="::1")
    result = await run_check(other_family, env)
    assert result.reason == Reason.CONNECT_ERROR
    assert "source_ip_address" in result.message


def test_query_response_in_a_config_file_keeps_its_captures(write_config: WriteConfig) -> None:
    """`${1}` in a query_response send is a capture, not an environment variable."""
    path = write_config(
        """
        checks:
          - name: irc
            kind: tcp
            target: irc.example.test:6667
            query_response:
              - send: NICK prober
              - expect: "^PING :([^ ]+)"
                send: PONG ${1}
        """
    )
    (check,) = load_config(path, env={}).checks
    assert isinstance(check, TcpCheck)
    assert [e.send for e in check.dialogue] == ["NICK prober", "PONG ${1}"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"query_response": [{"send": "x"}], "send": ["y"]}, "not both"),
        ({"query_response": [{}]}, "needs expect, send or starttls"),
        ({"query_response": [{"expect": "("}]}, "bad regular expression"),
        ({"query_response": [{"expect_byte": "x"}]}, "expect_byte"),
        ({"source_ip_address": "here"}, "not an IP address"),
    ],
    ids=["both-forms", "empty-entry", "bad-regex", "unknown-key", "bad-source"],
)
def test_bad_tcp_config_is_rejected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tcp_check("127.0.0.1:25", **settings)
