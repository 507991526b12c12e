"""The dns probe against a tiny DNS server on loopback UDP and TCP built with dnspython's
message API (tests/support/servers.py: its zone, glue, SOA in negative answers, CH class)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from prober.config.model import DnsCheck
from prober.engine.runner import RunEnvironment, run_check
from prober.result import DnsFacts, Reason
from tests.support.certs import CertFactory
from tests.support.checks import facts_of
from tests.support.processes import DEADLINE_SLACK
from tests.support.samples import exported_samples, sample_value
from tests.support.servers import SOA_SERIAL, DnsServers, free_port, free_udp_port

StartServer = Callable[..., Awaitable[str]]


def dns_check(server: str, **settings: Any) -> DnsCheck:
    fields: dict[str, Any] = {
        "name": "resolve-api",
        "kind": "dns",
        "component": "dns",
        "query_name": "api.example.test",
        "server": server,
        "interval": 10.0,
        "timeout": 2.0,
    }
    fields.update(settings)
    return DnsCheck.model_validate(fields)


async def test_a_record_with_count_and_regex(dns_server: StartServer, env: RunEnvironment) -> None:
    check = dns_check(await dns_server(), min_answers=2, answer_regex=[r"^10\.0\.0\.2$"])
    result = await run_check(check, env)
    assert result.success, result.message
    step = result.steps[0]
    facts = facts_of(step, DnsFacts)
    assert (step.name, facts.answer_count) == ("query", 2)
    assert facts.lookup_time is not None and facts.lookup_time > 0
    assert [a.actual for a in step.assertions] == ["NOERROR", "2", "10.0.0.2"]


TYPES = [
    ("AAAA", "api.example.test", r"^2001:db8::1$"),
    ("TXT", "api.example.test", "v=prober1"),
    ("CNAME", "www.example.test", r"^api\.example\.test\.$"),
]


@pytest.mark.parametrize(("query_type", "name", "regex"), TYPES, ids=[t[0] for t in TYPES])
async def test_record_types(
    dns_server: StartServer, env: RunEnvironment, query_type: str, name: str, regex: str
) -> None:
    check = dns_check(
        await dns_server(),
        query_name=name,
        query_type=query_type,
        min_answers=1,
        answer_regex=[regex],
    )
    result = await run_check(check, env)
    assert result.success, result.message


CASES = [
    ("nxdomain", {"query_name": "missing.example.test"}, Reason.DNS),
    (
        "nxdomain-expected",
        {"query_name": "missing.example.test", "valid_rcodes": ["NXDOMAIN"]},
        None,
    ),
    ("servfail", {"query_name": "broken.example.test"}, Reason.DNS),
    ("too-few-answers", {"min_answers": 3}, Reason.ASSERTION),
    ("no-answer-matches", {"answer_regex": [r"^192\."]}, Reason.ASSERTION),
    ("empty-answer", {"query_type": "MX", "min_answers": 1}, Reason.ASSERTION),
]


@pytest.mark.parametrize(("settings", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_outcome_gives_reason(
    dns_server: StartServer, env: RunEnvironment, settings: dict[str, Any], reason: Reason | None
) -> None:
    result = await run_check(dns_check(await dns_server(), **settings), env)
    assert result.reason == reason, result.message
    if reason is not None:
        assert result.failed_step == "query"


async def test_server_that_never_answers_times_out_within_deadline(
    dns_server: StartServer, env: RunEnvironment
) -> None:
    server = await dns_server(silent=True)
    start = time.perf_counter()
    result = await run_check(dns_check(server, timeout=0.3), env)
    elapsed = time.perf_counter() - start
    assert result.reason == Reason.TIMEOUT, result.message
    # It waited for its deadline and no longer (the silent server never answers at all).
    assert 0.3 <= elapsed < 0.3 + DEADLINE_SLACK, elapsed
    assert facts_of(result.steps[0], DnsFacts).answer_count is None


async def test_ipv6_server(dns_server: StartServer, env: RunEnvironment) -> None:
    server = await dns_server(host="::1")
    result = await run_check(dns_check(server, ip_protocol="ip6"), env)
    assert result.success, result.message
    assert "@[::1]:" in result.steps[0].request_line
    wrong_family = await run_check(dns_check(server, ip_protocol="ip4"), env)
    assert wrong_family.reason == Reason.DNS


async def test_dns_series_are_exported(dns_server: StartServer, env: RunEnvironment) -> None:
    result = await run_check(dns_check(await dns_server()), env)
    values = {name: value for name, _, value in exported_samples(result, "dns")}
    assert values["probe_dns_answer_rrs"] == 2
    assert values["probe_dns_lookup_time_seconds"] > 0
    assert values["probe_success"] == 1
    assert not {n for n in values if n.startswith("probe_http_")}


async def test_closed_udp_port_fails_at_once_as_refused(env: RunEnvironment) -> None:
    # The connected socket gets the ICMP port unreachable; a timeout would mean it was lost.
    result = await run_check(dns_check(f"127.0.0.1:{free_udp_port()}", timeout=5.0), env)
    assert result.reason == Reason.CONNECT_REFUSED, result.message
    assert "refused" in result.message


async def test_closed_tcp_port_fails_as_refused(env: RunEnvironment) -> None:
    check = dns_check(f"127.0.0.1:{free_port()}", transport_protocol="tcp", timeout=5.0)
    result = await run_check(check, env)
    assert result.reason == Reason.CONNECT_REFUSED, result.message


WHOAMI = {"query_name": "whoami.example.test", "query_type": "TXT"}
ASKED = [
    ("udp", {}, '"udp 127.0.0.1 rd=1"'),
    ("tcp", {"transport_protocol": "tcp"}, '"tcp 127.0.0.1 rd=1"'),
    ("no-recursion", {"recursion_desired": False}, '"udp 127.0.0.1 rd=0"'),
    ("source-udp", {"source_ip_address": "127.0.0.2"}, '"udp 127.0.0.2 rd=1"'),
    (
        "source-tcp",
        {"source_ip_address": "127.0.0.3", "transport_protocol": "tcp"},
        '"tcp 127.0.0.3 rd=1"',
    ),
]


@pytest.mark.parametrize(("settings", "seen"), [a[1:] for a in ASKED], ids=[a[0] for a in ASKED])
async def test_how_the_query_is_asked(
    dns_server: StartServer, env: RunEnvironment, settings: dict[str, Any], seen: str
) -> None:
    """The server answers with the transport, the client's address and the RD bit it saw."""
    check = dns_check(await dns_server(), **WHOAMI, **settings)
    result = await run_check(check, env)
    assert result.success, result.message
    answer = [a.actual for a in result.steps[0].assertions]
    assert answer == ["NOERROR"]
    check = dns_check(
        await dns_server(),
        **WHOAMI,
        **settings,
        validate_answer_rrs={"fail_if_not_matches_regexp": [f"\\tTXT\\t{seen}$"]},
    )
    result = await run_check(check, env)
    assert result.success, result.message


async def test_tcp_phases_and_series(dns_server: StartServer, env: RunEnvironment) -> None:
    result = await run_check(dns_check(await dns_server(), transport_protocol="tcp"), env)
    assert result.success, result.message
    facts = facts_of(result.steps[0], DnsFacts)
    assert facts.phases.connect > 0 and facts.phases.processing > 0
    assert "over tcp" in result.steps[0].request_line
    samples = exported_samples(result, "dns")
    for phase in ("resolve", "connect", "request"):
        assert sample_value(samples, "probe_dns_duration_seconds", phase=phase) is not None
    assert sample_value(samples, "probe_dns_duration_seconds", phase="request") == (
        facts.phases.processing
    )
    assert sample_value(samples, "probe_dns_answer_rrs") == 2


async def test_truncated_udp_answer_is_asked_again_over_tcp(
    dns_server: StartServer, env: RunEnvironment
) -> None:
    check = dns_check(await dns_server(), query_name="big.example.test", query_type="TXT")
    result = await run_check(check, env)
    assert result.success, result.message
    assert facts_of(result.steps[0], DnsFacts).answer_count == 20


RECORD_TYPES = [
    ("SRV", "_api._tcp.example.test", "_api._tcp.example.test.\t60\tIN\tSRV\t10 5 443 api"),
    ("PTR", "1.0.0.10.in-addr.arpa", "\tIN\tPTR\tapi.example.test.$"),
    ("SOA", "example.test", f"\tSOA\tns1.example.test. hostmaster.example.test. {SOA_SERIAL} "),
    ("MX", "example.test", "\tMX\t10 mail.example.test.$"),
    ("NS", "example.test", "^example.test.\t60\tIN\tNS\tns1.example.test.$"),
    ("CNAME", "www.example.test", "\tCNAME\tapi.example.test.$"),
    ("TXT", "api.example.test", '\tTXT\t"v=prober1 ok"$'),
    ("AAAA", "api.example.test", "\tAAAA\t2001:db8::1$"),
    ("A", "api.example.test", "^api.example.test.\t60\tIN\tA\t10.0.0.[12]$"),
    ("ANY", "api.example.test", "\tIN\tAAAA\t"),
]


@pytest.mark.parametrize(
    ("query_type", "name", "line"), RECORD_TYPES, ids=[t[0] for t in RECORD_TYPES]
)
async def test_records_are_matched_as_blackbox_lines(
    dns_server: StartServer, env: RunEnvironment, query_type: str, name: str, line: str
) -> None:
    """Whole records, TAB-separated as miekg/dns prints them (blackbox_exporter's regexes)."""
    rules = {"fail_if_none_matches_regexp": [line]}
    check = dns_check(
        await dns_server(), query_name=name, query_type=query_type, validate_answer_rrs=rules
    )
    result = await run_check(check, env)
    assert result.success, (result.message, result.steps[0].assertions)


async def test_query_class_chaos(dns_server: StartServer, env: RunEnvironment) -> None:
    rules = {"fail_if_not_matches_regexp": ['^version.bind.\t60\tCH\tTXT\t"prober-test"$']}
    check = dns_check(
        await dns_server(),
        query_name="version.bind",
        query_type="txt",
        query_class="ch",
        validate_answer_rrs=rules,
    )
    result = await run_check(check, env)
    assert result.success, result.message
    assert "(class CH)" in result.steps[0].request_line


# NS answer: 1 answer (NS ns1), 0 authority, 1 additional (glue A of ns1).
# MX of api.example.test: NODATA, 0 answers and the zone's SOA in authority.
VALIDATIONS = [
    ("matches-fails", "NS", {"answer": {"fail_if_matches_regexp": ["ns1"]}}, False),
    ("matches-passes", "NS", {"answer": {"fail_if_matches_regexp": ["ns2"]}}, True),
    (
        "not-matches-passes",
        "NS",
        {"answer": {"fail_if_not_matches_regexp": ["\tNS\t", "ns1"]}},
        True,
    ),
    (
        "not-matches-each-regex",
        "NS",
        {"answer": {"fail_if_not_matches_regexp": ["ns1", "ns2"]}},
        False,
    ),
    ("not-matches-empty", "NODATA", {"answer": {"fail_if_not_matches_regexp": ["x"]}}, False),
    ("all-match-fails", "NS", {"answer": {"fail_if_all_match_regexp": ["ns1", "NS"]}}, False),
    ("all-match-one-misses", "NS", {"answer": {"fail_if_all_match_regexp": ["ns1", "ns2"]}}, True),
    ("all-match-empty-fails", "NODATA", {"answer": {"fail_if_all_match_regexp": ["x"]}}, False),
    (
        "none-matches-one-enough",
        "NS",
        {"answer": {"fail_if_none_matches_regexp": ["ns2", "ns1"]}},
        True,
    ),
    ("none-matches-fails", "NS", {"answer": {"fail_if_none_matches_regexp": ["ns2"]}}, False),
    ("none-matches-empty", "NODATA", {"answer": {"fail_if_none_matches_regexp": ["."]}}, False),
    ("empty-matches-passes", "NODATA", {"answer": {"fail_if_matches_regexp": ["."]}}, True),
    ("authority-soa", "NODATA", {"authority": {"fail_if_none_matches_regexp": ["\tSOA\t"]}}, True),
    ("authority-empty", "NS", {"authority": {"fail_if_none_matches_regexp": ["."]}}, False),
    (
        "additional-glue",
        "NS",
        {
            "additional": {
                "fail_if_not_matches_regexp": ["^ns1.example.test.\t60\tIN\tA\t10.0.0.53$"]
            }
        },
        True,
    ),
    (
        "additional-forbidden",
        "NS",
        {"additional": {"fail_if_matches_regexp": ["10.0.0.53"]}},
        False,
    ),
]


@pytest.mark.parametrize(
    ("query", "rules", "passes"), [v[1:] for v in VALIDATIONS], ids=[v[0] for v in VALIDATIONS]
)
async def test_record_validation_as_blackbox(
    dns_server: StartServer,
    env: RunEnvironment,
    query: str,
    rules: dict[str, dict[str, list[str]]],
    passes: bool,
) -> None:
    asked = (
        {"query_name": "api.example.test", "query_type": "MX"}
        if query == "NODATA"
        else {"query_name": "example.test", "query_type": query}
    )
    settings = {f"validate_{section}_rrs": rule for section, rule in rules.items()}
    result = await run_check(dns_check(await dns_server(), **asked, **settings), env)
    assert result.success is passes, (result.message, result.steps[0].assertions)
    if not passes:
        assert result.reason == Reason.ASSERTION
        assert result.message.startswith(next(iter(rules)))


async def test_section_counts_and_serial_are_exported(
    dns_server: StartServer, env: RunEnvironment
) -> None:
    server = await dns_server()
    soa = await run_check(dns_check(server, query_name="example.test", query_type="SOA"), env)
    assert soa.success, soa.message
    assert sample_value(exported_samples(soa, "dns"), "probe_dns_serial") == SOA_SERIAL
    ns = await run_check(dns_check(server, query_name="example.test", query_type="NS"), env)
    basic = exported_samples(ns, "dns")
    assert sample_value(basic, "probe_dns_serial") is None  # SOA queries only
    assert sample_value(basic, "probe_dns_additional_rrs") is None  # detail: full only
    full = exported_samples(ns, "dns", full=True)
    assert sample_value(full, "probe_dns_answer_rrs") == 1
    assert sample_value(full, "probe_dns_authority_rrs", step="query") == 0
    assert sample_value(full, "probe_dns_additional_rrs", step="query") == 1
    nodata = await run_check(
        dns_check(server, query_name="api.example.test", query_type="SOA"), env
    )
    # The SOA of a negative answer is in authority: it is not the answer's serial.
    assert sample_value(exported_samples(nodata, "dns"), "probe_dns_serial") == 0


async def test_lookup_time_is_the_server_name_resolution(
    dns_server: StartServer, env: RunEnvironment
) -> None:
    """As blackbox_exporter: resolving the server, not the query (that is phase=request)."""
    result = await run_check(dns_check(await dns_server()), env)
    facts = facts_of(result.steps[0], DnsFacts)
    assert facts.lookup_time == facts.phases.resolve


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"server": "a b"}, "expected HOST"),
        ({"valid_rcodes": ["NOPE"]}, "unknown rcode"),
        ({"query_type": "NOPE"}, "unknown query type"),
        ({"query_type": "TYPE65"}, "give its name"),
        ({"query_class": "XX"}, "unknown query class"),
        ({"transport_protocol": "quic"}, "transport_protocol"),
        ({"source_ip_address": "localhost"}, "not an IP address"),
        ({"validate_answer_rrs": {"fail_if_matches_regexp": ["("]}}, "bad regular expression"),
        ({"validate_answer_rrs": {"fail_if_matched": ["x"]}}, "fail_if_matched"),
    ],
    ids=[
        "bad-server",
        "bad-rcode",
        "bad-type",
        "numbered-type",
        "bad-class",
        "bad-transport",
        "bad-source",
        "bad-regex",
        "unknown-key",
    ],
)
def test_bad_dns_config_is_rejected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dns_check(**{"server": "127.0.0.1", **settings})


@pytest.fixture
async def dot_server(certs: CertFactory) -> AsyncIterator[str]:
    """A DNS-over-TLS server of the zone, its certificate (for 127.0.0.1, localhost) from
    the test CA: HOST:PORT."""
    servers = DnsServers()
    try:
        yield await servers.start_tls(certs.issue().server_context())
    finally:
        await servers.close()


async def test_dns_over_tls_asks_inside_a_verified_session(
    dot_server: str, certs: CertFactory, env: RunEnvironment
) -> None:
    tls = {"ca_file": str(certs.ca_file)}
    check = dns_check(dot_server, **WHOAMI, dns_over_tls=True, tls=tls, answer_regex=["^.tls "])
    assert check.transport_protocol == "tcp"  # DoT's default
    result = await run_check(check, env)
    assert result.success, result.message
    assert result.steps[0].request_line.endswith("(over TLS)")
    facts = facts_of(result.steps[0], DnsFacts)
    assert facts.tls is not None and facts.tls.version and facts.tls.expiry
    assert facts.phases.connect > 0 and facts.phases.tls > 0 and facts.phases.processing > 0
    samples = exported_samples(result, "dns")
    connect = sample_value(samples, "probe_dns_duration_seconds", phase="connect")
    assert connect == pytest.approx(facts.phases.connect + facts.phases.tls)  # as blackbox's
    assert sample_value(samples, "probe_ssl_earliest_cert_expiry") == facts.tls.expiry


async def test_dns_over_tls_with_an_untrusted_certificate_fails_with_tls_reason(
    dot_server: str, env: RunEnvironment
) -> None:
    result = await run_check(dns_check(dot_server, **WHOAMI, dns_over_tls=True), env)
    assert result.reason is Reason.TLS_CERT_INVALID, result.message
    assert result.message.startswith(f"TLS handshake with {dot_server}")
    facts = facts_of(result.steps[0], DnsFacts)
    assert facts.tls is None and facts.answer_count is None


async def test_dns_over_tls_goes_to_port_853_when_the_server_names_none(
    env: RunEnvironment,
) -> None:
    result = await run_check(dns_check("127.0.0.1", dns_over_tls=True), env)
    assert result.steps[0].request_line == "DNS A api.example.test @127.0.0.1:853 (over TLS)"
    assert result.reason in (Reason.CONNECT_REFUSED, Reason.TLS_HANDSHAKE), result.message


def test_dns_over_tls_over_udp_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="dns_over_tls runs over TCP"):
        dns_check("127.0.0.1", dns_over_tls=True, transport_protocol="udp")
