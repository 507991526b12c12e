"""`kind: dns`: one query with dnspython, judged on rcode, answer count and answer text.

The query goes over UDP to `server` (or the host's first nameserver) and is retried over TCP
when the answer is truncated. Phases: resolve (the server's own name, when it has one) and
processing (the query's round trip, also exported as the lookup time).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.resolver

from prober.config.model import DnsCheck
from prober.probes.context import ProbeContext, out_of_descriptors
from prober.probes.single_step import ProbeFailure, resolve, run_one_step
from prober.result import AssertionOutcome, DnsFacts, Outcome, Phases, Reason, StepResult, shown

STEP_NAME = "query"
FACTS = DnsFacts
DNS_PORT = 53
_system_servers: tuple[str, ...] | None = None


@dataclass
class _Query:
    """Timestamps (perf_counter) and findings of one run."""

    start: float
    stage: str = "resolving the server"
    server: str = ""
    asked: float = 0.0
    answered: float = 0.0
    answer_count: int | None = None
    outcomes: list[AssertionOutcome] = field(default_factory=list)

    def phases(self, end: float) -> Phases:
        asked = self.asked or end
        return Phases(
            resolve=asked - self.start,
            processing=(self.answered or end) - self.asked if self.asked else 0.0,
        )


def split_server(server: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:53`, `::1`, `[::1]:5353`, `ns.example:53` -> (host, port)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DNS_PORT
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, DNS_PORT


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
            facts=DnsFacts(
                phases=state.phases(now),
                answer_count=state.answer_count,
                lookup_time=(state.answered or now) - state.asked if state.asked else None,
            ),
            assertions=tuple(state.outcomes),
            request_line=f"DNS {check.query_type} {check.query_name} @{state.server or '?'}",
        )

    work = _ask_and_judge(check, ctx, state)
    return await run_one_step(ctx, STEP_NAME, work, end, lambda: state.stage)


async def _ask_and_judge(check: DnsCheck, ctx: ProbeContext, state: _Query) -> None:
    _judge(check, await _ask(check, ctx, state), state, ctx)


async def _ask(check: DnsCheck, ctx: ProbeContext, state: _Query) -> dns.message.Message:
    address, port = await _server_address(check)
    state.server = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    try:
        query = dns.message.make_query(check.query_name, check.query_type)
    except dns.exception.DNSException as exc:
        raise ProbeFailure(Reason.ERROR, f"cannot build the query: {exc}") from None
    state.stage = f"waiting for {state.server}"
    state.asked = time.perf_counter()
    try:
        response, _ = await dns.asyncquery.udp_with_fallback(
            query, address, timeout=max(ctx.remaining(), 0.001), port=port
        )
    except dns.exception.Timeout:  # dnspython's own timeout is the attempt's deadline
        raise ProbeFailure(Reason.TIMEOUT, f"deadline reached while {state.stage}") from None
    except ConnectionRefusedError as exc:
        raise ProbeFailure(Reason.CONNECT_REFUSED, f"{state.server} refused: {exc}") from None
    except OSError as exc:
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.CONNECT_ERROR
        raise ProbeFailure(reason, f"cannot reach {state.server}: {exc}") from None
    except dns.exception.DNSException as exc:
        raise ProbeFailure(Reason.PROTOCOL, f"bad answer from {state.server}: {exc}") from None
    state.answered = time.perf_counter()
    return response


async def _server_address(check: DnsCheck) -> tuple[str, int]:
    """The server's IP address and port, resolving its name with the check's ip_protocol."""
    if check.server is None:
        servers = await _system_nameservers()
        if not servers:
            raise ProbeFailure(Reason.DNS, "no server given and the host has no nameserver")
        host, port = servers[0], DNS_PORT
    else:
        host, port = split_server(check.server)
    addresses = await resolve(host, port, check.ip_protocol, socket.SOCK_DGRAM, f"server {host}")
    return str(addresses[0][1][0]), port


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
    """rcode first (a DNS failure), then the answer count and regexes (assertions)."""
    rcode = dns.rcode.to_text(response.rcode())
    answers = [rdata.to_text() for rrset in response.answer for rdata in rrset]
    state.answer_count = len(answers)
    valid = check.valid_rcodes  # upper-cased when the config loads
    outcomes = [AssertionOutcome(f"rcode in {', '.join(valid)}", rcode in valid, rcode)]
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
    state.outcomes = outcomes
    if rcode not in valid:
        raise ProbeFailure(Reason.DNS, f"rcode {rcode}, expected {', '.join(valid)}")
    failed = [o for o in outcomes if not o.passed]
    if failed:
        raise ProbeFailure(Reason.ASSERTION, f"{failed[0].text} failed (actual {failed[0].actual})")
