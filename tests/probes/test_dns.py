"""The dns probe against a tiny DNS server on loopback UDP built with dnspython's message API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from prober.config.model import DnsCheck
from prober.engine.runner import RunEnvironment, run_check
from prober.result import DnsFacts, Reason
from tests.support.checks import facts_of
from tests.support.processes import DEADLINE_SLACK
from tests.support.samples import exported_samples

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


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"server": "a b"}, "expected HOST"),
        ({"valid_rcodes": ["NOPE"]}, "unknown rcode"),
    ],
    ids=["bad-server", "bad-rcode"],
)
def test_bad_dns_config_is_rejected(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dns_check(**{"server": "127.0.0.1", **settings})
