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

from prober.config_model import DnsCheck
from prober.probes.context import FAMILIES, ProbeContext, family_mismatch
from prober.result import AssertionOutcome, Phases, Reason, Result, StepResult

STEP_NAME = "query"
DNS_PORT = 53
_SHOWN_CHARS = 64
_system_servers: tuple[str, ...] | None = None


class _Failed(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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


async def run(check: DnsCheck, ctx: ProbeContext) -> Result:
    """Ask the server for the name and judge the answer."""
    started_at = time.time()
    state = _Query(time.perf_counter())
    ctx.current_step = STEP_NAME
    reason: Reason | None = None
    message = ""
    try:
        async with asyncio.timeout_at(ctx.deadline):
            response = await _ask(check, ctx, state)
        reason, message = _judge(check, response, state)
    except TimeoutError:
        reason, message = Reason.TIMEOUT, f"deadline reached while {state.stage}"
    except _Failed as exc:
        reason, message = exc.reason, str(exc)
    end = time.perf_counter()
    lookup = (state.answered or end) - state.asked if state.asked else None
    step = StepResult(
        name=STEP_NAME,
        success=reason is None,
        duration=end - state.start,
        reason=reason,
        message=message,
        phases=state.phases(end),
        assertions=tuple(state.outcomes),
        request_line=f"DNS {check.query_type} {check.query_name} @{state.server or '?'}",
        protocol="dns",
        answer_count=state.answer_count,
        dns_lookup_time=lookup,
    )
    ctx.progress.append(step)
    ctx.current_step = ""
    return Result(
        check=check.name,
        success=step.success,
        duration=step.duration,
        started_at=started_at,
        reason=reason,
        message=message,
        failed_step="" if step.success else STEP_NAME,
        steps=tuple(ctx.progress),
    )


async def _ask(check: DnsCheck, ctx: ProbeContext, state: _Query) -> dns.message.Message:
    address, port = await _server_address(check, state)
    state.server = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    try:
        query = dns.message.make_query(check.query_name, check.query_type)
    except dns.exception.DNSException as exc:
        raise _Failed(Reason.ERROR, f"cannot build the query: {exc}") from None
    state.stage = f"waiting for {state.server}"
    state.asked = time.perf_counter()
    try:
        response, _ = await dns.asyncquery.udp_with_fallback(
            query, address, timeout=max(ctx.remaining(), 0.001), port=port
        )
    except dns.exception.Timeout:
        raise TimeoutError from None
    except ConnectionRefusedError as exc:
        raise _Failed(Reason.CONNECT_REFUSED, f"{state.server} refused: {exc}") from None
    except OSError as exc:
        raise _Failed(Reason.CONNECT_ERROR, f"cannot reach {state.server}: {exc}") from None
    except dns.exception.DNSException as exc:
        raise _Failed(Reason.PROTOCOL, f"bad answer from {state.server}: {exc}") from None
    state.answered = time.perf_counter()
    return response


async def _server_address(check: DnsCheck, state: _Query) -> tuple[str, int]:
    """The server's IP address and port, resolving its name with the check's ip_protocol."""
    if check.server is None:
        servers = await _system_nameservers()
        if not servers:
            raise _Failed(Reason.DNS, "no server given and the host has no nameserver")
        host, port = servers[0], DNS_PORT
    else:
        host, port = split_server(check.server)
    mismatch = family_mismatch(host, check.ip_protocol)
    if mismatch:
        raise _Failed(Reason.DNS, mismatch)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, family=FAMILIES[check.ip_protocol], type=socket.SOCK_DGRAM
        )
    except socket.gaierror as exc:
        raise _Failed(Reason.DNS, f"cannot resolve server {host}: {exc.strerror}") from None
    return str(infos[0][4][0]), port


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
    check: DnsCheck, response: dns.message.Message, state: _Query
) -> tuple[Reason | None, str]:
    """rcode first (a DNS failure), then the answer count and regexes (assertions)."""
    rcode = dns.rcode.to_text(response.rcode())
    answers = [rdata.to_text() for rrset in response.answer for rdata in rrset]
    state.answer_count = len(answers)
    valid = [code.upper() for code in check.valid_rcodes]
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
        matched = next((a for a in answers if pattern.search(a)), None)
        shown = matched if matched is not None else (answers[0] if answers else "<no answer>")
        outcomes.append(
            AssertionOutcome(f"answer ~= {pattern.pattern!r}", matched is not None, _shown(shown))
        )
    state.outcomes = outcomes
    if rcode not in valid:
        return Reason.DNS, f"rcode {rcode}, expected {', '.join(valid)}"
    failed = [o for o in outcomes if not o.passed]
    if failed:
        return Reason.ASSERTION, f"{failed[0].text} failed (actual {failed[0].actual})"
    return None, ""


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
