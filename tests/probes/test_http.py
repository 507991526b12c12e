"""The HTTP probe against a real local server: each outcome gives the right reason."""

from __future__ import annotations

import time
from typing import Any

import pytest

from prober.config.model import HttpCheck
from prober.engine.runner import RunEnvironment, run_check
from prober.result import HttpFacts, Reason, Result
from tests.support.checks import facts_of, http_check, run_environment
from tests.support.processes import DEADLINE_SLACK
from tests.support.servers import Target, free_port


async def probe(check: HttpCheck, env: RunEnvironment) -> Result:
    return await run_check(check, env)


async def test_success_reports_status_phases_and_assertions(
    target: Target, env: RunEnvironment
) -> None:
    check = http_check(target.at("/ok"), **{"assert": ['$.status == "ok"', "len($.items) == 3"]})
    result = await probe(check, env)
    assert result.success, result.message
    step = result.steps[0]
    facts = facts_of(step, HttpFacts)
    assert facts.status_code == 200
    assert [a.passed for a in step.assertions] == [True, True]
    assert facts.phases.connect > 0
    assert facts.phases.processing > 0
    assert result.duration >= facts.phases.connect + facts.phases.processing


CASES = [
    ("wrong-status", {"status": 503}, {}, Reason.STATUS),
    ("assertion", {}, {"assert": ['$.status == "degraded"']}, Reason.ASSERTION),
    ("slow-over-threshold", {"delay": 0.3}, {"assert": ["latency < 100ms"]}, Reason.ASSERTION),
    ("invalid-json", {"body": b"<html>"}, {"assert": ["$.status exists"]}, Reason.INVALID_JSON),
    ("body-too-large", {"body": b"x" * 5000}, {"max_body_bytes": 1000}, Reason.BODY_TOO_LARGE),
    ("expected-503", {"status": 503}, {"expected_status": [503]}, None),
    ("status-class", {"status": 204, "body": b""}, {"expected_status": ["2xx"]}, None),
]


@pytest.mark.parametrize(
    ("server", "settings", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_outcome_gives_reason(
    target: Target,
    env: RunEnvironment,
    server: dict[str, Any],
    settings: dict[str, Any],
    reason: Reason | None,
) -> None:
    for key, value in server.items():
        setattr(target, key, value)
    result = await probe(http_check(target.at("/ok"), **settings), env)
    assert result.reason == reason, result.message
    assert result.success is (reason is None)
    if reason is not None:
        assert result.failed_step == "request"
        assert result.message


async def test_connection_refused(env: RunEnvironment) -> None:
    result = await probe(http_check(f"http://127.0.0.1:{free_port()}/"), env)
    assert result.reason == Reason.CONNECT_REFUSED


async def test_hung_target_fails_with_timeout_reason_within_bound(
    target: Target, env: RunEnvironment
) -> None:
    start = time.perf_counter()
    result = await probe(http_check(target.at("/hang"), timeout=0.3), env)
    elapsed = time.perf_counter() - start
    assert result.reason == Reason.TIMEOUT
    # It waited for its deadline and no longer (the target hangs until the test ends).
    assert 0.3 <= elapsed < 0.3 + DEADLINE_SLACK, elapsed


async def test_redirects_followed_and_counted(target: Target, env: RunEnvironment) -> None:
    result = await probe(http_check(target.at("/redirect")), env)
    assert result.success
    assert facts_of(result.steps[0], HttpFacts).redirects == 1
    not_followed = await probe(
        http_check(target.at("/redirect"), follow_redirects=False, expected_status=[302]), env
    )
    assert not_followed.success


async def test_headers_and_json_body_are_sent(target: Target, env: RunEnvironment) -> None:
    check = http_check(
        target.at("/echo"),
        method="POST",
        headers={"X-Probe": "yes"},
        json={"hello": "world"},
        **{"assert": ['$.headers.X-Probe == "yes"', '$.body contains "world"']},
    )
    result = await probe(check, env)
    assert result.success, result.steps[0].assertions


async def test_retries_are_counted_and_first_failure_kept(
    target: Target, env: RunEnvironment
) -> None:
    target.status = 500
    target.recover_after = 1
    result = await probe(http_check(target.at("/ok"), retries=2, retry_backoff=0.05), env)
    assert result.success
    assert result.attempts == 2
    assert [f.reason for f in result.failures] == [Reason.STATUS]


async def test_degraded_latency_marks_slow_success(target: Target, env: RunEnvironment) -> None:
    target.delay = 0.15
    result = await probe(http_check(target.at("/ok"), degraded_latency=0.05), env)
    assert result.success and result.degraded


async def test_secret_in_url_query_not_in_trace(target: Target) -> None:
    async with run_environment({"tok": "query-secret-42"}, frozenset({"query-secret-42"})) as env:
        result = await probe(http_check(target.at("/ok?key=${tok}"), expected_status=[418]), env)
    text = repr(result)
    assert "query-secret-42" not in text
