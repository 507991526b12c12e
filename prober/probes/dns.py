"""`kind: dns`: one query with dnspython, judged on rcode, records and their text.

The query goes over UDP (retried over TCP when the answer is truncated), TCP
(`transport_protocol`) or TLS (`dns_over_tls`, port 853 by default) to `server` or the
host's first nameserver. Phases, as blackbox_exporter's `probe_dns_duration_seconds`:
resolve (the server's own name), connect (the socket; the TCP handshake over tcp), tls (the
TLS handshake, which blackbox counts in connect) and processing (the query's round trip,
blackbox's `request`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from prober.config.model import DnsCheck
from prober.probes.context import ProbeContext, out_of_descriptors
from prober.probes.dns_exchange import ExchangeClock, Secured, Server, exchange
from prober.probes.dns_records import record_lines, soa_serial, validate_records
from prober.probes.net.tls import TlsSetupError
from prober.probes.single_step import ProbeFailure, resolve, run_one_step
from prober.result import AssertionOutcome, DnsFacts, Outcome, Phases, Reason, StepResult, shown

STEP_NAME = "query"
FACTS = DnsFacts
DNS_PORT = 53
DOT_PORT = 853  # RFC 7858
_system_servers: tuple[str, ...] | None = None


@dataclass
class _Query:
    """Timestamps (perf_counter) and findings of one run."""

    start: float
    stage: str = "resolving the server"
    server: str = ""
    resolved: float = 0.0
    clock: ExchangeClock = field(default_factory=ExchangeClock)
    response: dns.message.Message | None = None
    serial: int | None = None
    outcomes: list[AssertionOutcome] = field(default_factory=list)

    def phases(self, end: float) -> Phases:
        """Each phase from its start to its end; one cut short by a failure ends at `end`."""
        clock = self.clock
        resolved = self.resolved or end
        connected = clock.connected or (end if self.resolved else resolved)
        secured = clock.secured or (end if clock.in_handshake else connected)
        answered = clock.answered or (end if clock.connected else secured)
        return Phases(
            resolve=resolved - self.start,
            connect=connected - resolved,
            tls=secured - connected,
            processing=answered - secured,
        )

    def facts(self, end: float) -> DnsFacts:
        response = self.response
        counts = (
            (
                len(record_lines(response.answer)),
                len(record_lines(response.authority)),
                len(record_lines(response.additional)),
            )
            if response is not None
            else (None, None, None)
        )
        return DnsFacts(
            phases=self.phases(end),
            answer_count=counts[0],
            lookup_time=(self.resolved - self.start) if self.resolved else None,
            authority_count=counts[1],
            additional_count=counts[2],
            serial=self.serial,
            tls=self.clock.tls,
        )


def split_server(server: str, default_port: int = DNS_PORT) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:53`, `::1`, `[::1]:5353`, `ns.example:53` -> (host, port)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, default_port


async def run(check: DnsCheck, ctx: ProbeContext) -> Outcome:
    """Ask the server for the name and judge the answer."""
    state = _Query(time.perf_counter())

    def end(reason: Reason | None, message: str) -> StepResult:
        now = time.perf_counter()
        return StepResult(
            name=STEP_NAME,
            success=reason is None,
            duration=now - state.start,
            reason=reason,
            message=message,
            facts=state.facts(now),
            assertions=tuple(state.outcomes),
            request_line=_request_line(check, state.server),
        )

    work = _ask_and_judge(check, ctx, state)
    return await run_one_step(ctx, STEP_NAME, work, end, lambda: state.stage)


async def _ask_and_judge(check: DnsCheck, ctx: ProbeContext, state: _Query) -> None:
    _judge(check, await _ask(check, ctx, state), state, ctx)


def _request_line(check: DnsCheck, server: str) -> str:
    """`DNS A api.example.com @192.0.2.53:53`, with the class and transport where not the
    defaults."""
    extras = [f"class {check.query_class}"] if check.query_class != "IN" else []
    if check.dns_over_tls:
        extras.append("over TLS")
    elif check.transport_protocol != "udp":
        extras.append(f"over {check.transport_protocol}")
    tail = f" ({', '.join(extras)})" if extras else ""
    return f"DNS {check.query_type} {check.query_name} @{server or '?'}{tail}"


async def _ask(check: DnsCheck, ctx: ProbeContext, state: _Query) -> dns.message.Message:
    server, host = await _server(check)
    state.resolved = time.perf_counter()
    state.server = server.shown
    query = _query(check)
    secured = await _secured(check, ctx, host)
    state.stage = f"waiting for {state.server}"
    timeout = max(ctx.remaining(), 0.001)
    tcp = check.transport_protocol == "tcp"
    response = await exchange(query, server, tcp, timeout, state.clock, secured)
    state.response = response
    return response


def _query(check: DnsCheck) -> dns.message.Message:
    """One question of the check's name, type and class; no EDNS, as blackbox_exporter."""
    try:
        query = dns.message.make_query(check.query_name, check.query_type, check.query_class)
    except dns.exception.DNSException as exc:
        raise ProbeFailure(Reason.ERROR, f"cannot build the query: {exc}") from None
    if not check.recursion_desired:
        query.flags &= ~dns.flags.RD
    return query


async def _secured(check: DnsCheck, ctx: ProbeContext, host: str) -> Secured | None:
    """For DoT, the check's SSL context (built at apply) and the name to verify: `tls`'s
    `server_name`, else the server as written (blackbox_exporter's default)."""
    if not check.dns_over_tls:
        return None
    try:
        context = await ctx.clients.ssl_for(check.tls)
    except TlsSetupError as exc:
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.TLS
        raise ProbeFailure(reason, str(exc)) from None
    return Secured(context, check.tls.server_name or host)


async def _server(check: DnsCheck) -> tuple[Server, str]:
    """The server's address, resolving its name with the check's ip_protocol; and its name
    as written."""
    default_port = DOT_PORT if check.dns_over_tls else DNS_PORT
    if check.server is None:
        servers = await _system_nameservers()
        if not servers:
            raise ProbeFailure(Reason.DNS, "no server given and the host has no nameserver")
        host, port = servers[0], default_port
    else:
        host, port = split_server(check.server, default_port)
    kind = socket.SOCK_STREAM if check.transport_protocol == "tcp" else socket.SOCK_DGRAM
    addresses = await resolve(host, port, check.ip_protocol, kind, f"server {host}")
    family, sockaddr = addresses[0]
    return Server(str(sockaddr[0]), port, family, check.source_ip_address), host


async def _system_nameservers() -> tuple[str, ...]:
    """The host's nameservers, read from its resolver config once per process, off the loop."""
    global _system_servers
    if _system_servers is None:
        _system_servers = await asyncio.to_thread(_read_system_nameservers)
    return _system_servers


def _read_system_nameservers() -> tuple[str, ...]:
    try:
        return tuple(str(s) for s in dns.resolver.Resolver().nameservers)
    except dns.resolver.NoResolverConfiguration:
        return ()


def _judge(
    check: DnsCheck, response: dns.message.Message, state: _Query, ctx: ProbeContext
) -> None:
    """rcode first (a DNS failure), then the answers and each section's records (assertions)."""
    rcode = dns.rcode.to_text(response.rcode())
    if check.query_type == "SOA":
        state.serial = soa_serial(response)
    valid = check.valid_rcodes  # upper-cased when the config loads
    outcomes = [AssertionOutcome(f"rcode in {', '.join(valid)}", rcode in valid, rcode)]
    outcomes += _answer_outcomes(check, response, ctx)
    sections = (
        ("answer", response.answer, check.validate_answer_rrs),
        ("authority", response.authority, check.validate_authority_rrs),
        ("additional", response.additional, check.validate_additional_rrs),
    )
    for name, section, rules in sections:
        outcomes += validate_records(name, record_lines(section), rules, ctx.redactor)
    state.outcomes = outcomes
    if rcode not in valid:
        raise ProbeFailure(Reason.DNS, f"rcode {rcode}, expected {', '.join(valid)}")
    failed = [o for o in outcomes if not o.passed]
    if failed:
        raise ProbeFailure(Reason.ASSERTION, f"{failed[0].text} failed (actual {failed[0].actual})")


def _answer_outcomes(
    check: DnsCheck, response: dns.message.Message, ctx: ProbeContext
) -> list[AssertionOutcome]:
    """prober's own `min_answers` and `answer_regex` (each regex on some record's data)."""
    answers = [rdata.to_text() for rrset in response.answer for rdata in rrset]
    outcomes = []
    if check.min_answers:
        outcomes.append(
            AssertionOutcome(
                f"answers >= {check.min_answers}",
                len(answers) >= check.min_answers,
                str(len(answers)),
            )
        )
    for pattern in check.answer_regex:
        matched = next((a for a in answers if pattern.found_in(a)), None)
        seen = matched if matched is not None else (answers[0] if answers else "<no answer>")
        text = f"answer ~= {pattern.pattern!r}"
        outcomes.append(AssertionOutcome(text, matched is not None, shown(seen, ctx.redactor)))
    return outcomes
