"""The fast exposition parses, and equals what prometheus-client itself renders."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from prober.result import (
    AttemptFailure,
    CertInfo,
    DnsFacts,
    GrpcFacts,
    HttpFacts,
    Phases,
    Reason,
    Result,
    StepResult,
    TcpFacts,
    TlsFacts,
    WsFacts,
)
from prober.sinks.metrics import FAMILIES, MetricsSink, SeriesPlan
from tests.support.checks import login_result
from tests.support.processes import require_tool
from tests.support.samples import parse_samples


def test_fast_render_equals_stock_registry(sink: MetricsSink) -> None:
    reference = CollectorRegistry()
    reference.register(sink)
    stock = set(parse_samples(generate_latest(reference).decode()))
    fast = set(parse_samples(sink.render().decode()))
    per_check = {s for s in fast if any(k == "check" for k, _ in s[1])}
    assert per_check == stock
    assert len(stock) > 50


def test_rerender_after_new_result_is_fresh(sink: MetricsSink) -> None:
    sink.render()
    sink.record(login_result("a", True, 0.01))
    samples = set(parse_samples(sink.render().decode()))
    runs = [
        v
        for n, labels, v in samples
        if n == "prober_check_runs_total"
        and ("check", "a") in labels
        and ("result", "success") in labels
    ]
    assert runs == [2.0]


def test_removed_check_series_disappear(sink: MetricsSink) -> None:
    sink.apply({"a": SeriesPlan((("component", "api"),))}, {"vantage": "eu"})
    text = sink.render().decode()
    assert 'check="a"' in text
    assert 'b \\"q\\"' not in text


def test_unchanged_check_keeps_counters_across_apply(sink: MetricsSink) -> None:
    api = SeriesPlan((("component", "api"),))
    sink.apply({"a": api, "c": api}, {"vantage": "eu"})
    samples = set(parse_samples(sink.render().decode()))
    assert (
        "prober_check_runs_total",
        frozenset({("check", "a"), ("component", "api"), ("vantage", "eu"), ("result", "failure")}),
        1.0,
    ) in samples


@pytest.mark.integration
def test_promtool_check_metrics_accepts_exposition(sink: MetricsSink) -> None:
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "metrics"],
        input=sink.render(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode() + run.stdout.decode()
    assert run.stdout.decode().strip() == "" and run.stderr.decode().strip() == ""


def _flow(success: bool, started_at: float = 1.7e9) -> Result:
    """A two-step flow run: login passes, the timeline answers 200, or 503 when failing."""
    login = StepResult(
        "login", True, 0.01, facts=HttpFacts(200, Phases(0.001, 0.002, 0.0, 0.005, 0.001))
    )
    timeline = StepResult(
        "timeline",
        success,
        0.02,
        None if success else Reason.STATUS,
        facts=HttpFacts(200 if success else 503, Phases(0.0, 0.003, 0.0, 0.010, 0.002)),
    )
    return Result(
        "flow",
        success,
        0.03,
        started_at,
        reason=None if success else Reason.STATUS,
        failed_step="" if success else "timeline",
        steps=(login, timeline),
        failures=() if success else (AttemptFailure(Reason.STATUS, "timeline"),),
    )


def _samples_of(
    sink: MetricsSink, check: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The check's samples by name and extra labels (check, component and vantage left out)."""
    base = {"check", "component", "vantage"}
    return {
        (name, frozenset((k, v) for k, v in labels if k not in base)): value
        for name, labels, value in parse_samples(sink.render().decode())
        if ("check", check) in labels
    }


def test_basic_flow_reports_phases_summed_and_the_status_of_the_failed_step() -> None:
    sink = MetricsSink()
    sink.apply({"flow": SeriesPlan((("component", "timeline"),), steps=True)}, {})
    sink.record(_flow(success=False))
    samples = _samples_of(sink, "flow")
    assert samples[("probe_http_status_code", frozenset())] == 503
    phases = {
        dict(labels)["phase"]: v
        for (n, labels), v in samples.items()
        if n == "probe_http_duration_seconds"
    }
    assert phases == pytest.approx(
        {"resolve": 0.001, "connect": 0.005, "tls": 0.0, "processing": 0.015, "transfer": 0.003}
    )
    assert samples[("prober_step_success", frozenset({("step", "login")}))] == 1
    assert samples[("prober_step_success", frozenset({("step", "timeline")}))] == 0
    assert not {n for n, _ in samples if n.startswith("prober_step_duration")}
    assert not {n for n, _ in samples if n in ("probe_http_version", "probe_http_redirects")}


def test_basic_exports_only_the_latest_failure_and_keeps_every_count() -> None:
    sink = MetricsSink()
    sink.apply({"a": SeriesPlan((("component", "api"),))}, {})
    timeout = Result(
        "a",
        False,
        1.0,
        1.7e9,
        reason=Reason.TIMEOUT,
        failed_step="request",
        failures=(AttemptFailure(Reason.TIMEOUT, "request"),),
    )
    for result in (login_result("a", False, 0.3), login_result("a", False, 0.3), timeout):
        sink.record(result)

    def failures() -> dict[frozenset[tuple[str, str]], float]:
        return {
            labels: v
            for (n, labels), v in _samples_of(sink, "a").items()
            if n == "prober_check_failures_total"
        }

    assert failures() == {frozenset({("reason", "timeout"), ("failed_step", "request")}): 1}
    sink.record(login_result("a", False, 0.3))  # status again: its series comes back, count kept
    assert failures() == {frozenset({("reason", "status"), ("failed_step", "login")}): 3}


def test_full_detail_exports_every_failure_pair_and_series_per_step() -> None:
    sink = MetricsSink()
    sink.apply({"flow": SeriesPlan((("component", "timeline"),), full=True, steps=True)}, {})
    sink.record(_flow(success=False))
    sink.record(login_result("flow", False, 0.3))
    samples = _samples_of(sink, "flow")
    failed = {labels for n, labels in samples if n == "prober_check_failures_total"}
    assert failed == {
        frozenset({("reason", "status"), ("failed_step", "timeline")}),
        frozenset({("reason", "status"), ("failed_step", "login")}),
    }
    assert samples[("probe_http_status_code", frozenset({("step", "timeline")}))] == 503
    assert ("probe_http_status_code", frozenset()) not in samples
    steps = {
        dict(labels)["step"] for n, labels in samples if n == "prober_step_duration_seconds_count"
    }
    assert steps == {"login", "timeline"}


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (SeriesPlan(), set()),
        (SeriesPlan(attempts=True), {"prober_check_attempts_total"}),
        (SeriesPlan(degraded=True), {"prober_check_degraded"}),
    ],
    ids=["default", "retries", "degraded-latency"],
)
def test_attempts_and_degraded_series_exist_only_where_configured(
    plan: SeriesPlan, expected: set[str]
) -> None:
    sink = MetricsSink()
    sink.apply({"a": plan}, {})
    sink.record(login_result("a", True, 0.02))
    names = {n for n, _ in _samples_of(sink, "a")}
    assert names & {"prober_check_attempts_total", "prober_check_degraded"} == expected


def test_a_changed_plan_starts_the_check_again() -> None:
    sink = MetricsSink()
    sink.apply({"a": SeriesPlan()}, {})
    sink.record(login_result("a", True, 0.02))
    sink.apply({"a": SeriesPlan(full=True)}, {})
    samples = _samples_of(sink, "a")
    assert samples[("prober_check_runs_total", frozenset({("result", "success")}))] == 0


def _every_kind_of_run() -> MetricsSink:
    """A sink whose checks, between them, export every per-check family."""
    sink = MetricsSink()
    full_flow = SeriesPlan((("component", "api"),), full=True, steps=True, attempts=True)
    sink.apply(
        {
            "flow": full_flow,
            "tcp": SeriesPlan((("component", "mail"),), full=True, degraded=True),
            "dns": SeriesPlan((("component", "dns"),), full=True),
            "grpc": SeriesPlan((("component", "api"),), full=True),
            "websocket": SeriesPlan((("component", "notifications"),), full=True),
        },
        {"vantage": "eu"},
    )
    leaf = CertInfo("ab" * 32, "CN=localhost", "CN=prober test CA", "localhost", "01")
    tls = TlsFacts("TLS 1.3", 1.8e9, 1.9e9, leaf)
    login = StepResult("login", True, 0.0, cached=True)
    facts = HttpFacts(
        201, Phases(0.1), tls=tls, ip_protocol=4, ip_addr_hash=3668918509.0, last_modified=7.8e8
    )
    post = StepResult("post", True, 0.01, facts=facts, waited=0.5)
    pooled = replace(post, accounts=2, accounts_failed=1)
    account = Result("flow", True, 0.01, 1.7e9, steps=(post,), account="user-1")
    sink.record(
        Result(
            "flow",
            False,
            0.02,
            1.7e9,
            Reason.STATUS,
            failed_step="post",
            steps=(login, pooled),
            failures=(AttemptFailure(Reason.STATUS, "post"),),
            accounts=(account, replace(account, success=False, account="user-2")),
        )
    )
    tcp = StepResult("connect", True, 0.01, facts=TcpFacts(Phases(0.001), 0.001, tls))
    sink.record(Result("tcp", True, 0.01, 1.7e9, steps=(tcp,)))
    dns_facts = DnsFacts(Phases(0.001), 2, 0.002, authority_count=1, additional_count=1, serial=7)
    dns = StepResult("query", True, 0.01, facts=dns_facts)
    sink.record(Result("dns", True, 0.01, 1.7e9, steps=(dns,)))
    grpc = StepResult("check", True, 0.01, facts=GrpcFacts(Phases(0.001), "SERVING", 0, tls))
    sink.record(Result("grpc", True, 0.01, 1.7e9, steps=(grpc,)))
    stream = StepResult("stream", True, 0.01, facts=WsFacts(Phases(0.001, transfer=0.2), 101, 1))
    sink.record(Result("websocket", True, 0.01, 1.7e9, steps=(stream,)))
    return sink


def test_every_family_is_rendered_alike_by_the_fast_renderer_and_the_reference() -> None:
    sink = _every_kind_of_run()
    reference = CollectorRegistry()
    reference.register(sink)
    stock = set(parse_samples(generate_latest(reference).decode()))
    fast = {s for s in parse_samples(sink.render().decode()) if any(k == "check" for k, _ in s[1])}
    assert fast == stock
    shown = {name.removesuffix("_total") for name, _, _ in fast}
    families = {family.name.removesuffix("_total") for family in FAMILIES}
    assert {n for n in families if not any(s.startswith(n) for s in shown)} == set()


def test_each_family_is_written_once() -> None:
    names = [family.name for family in FAMILIES]
    assert len(names) == len(set(names))


def _http_run(status: int, success: bool, tls: TlsFacts | None, connect: float) -> Result:
    facts = HttpFacts(status, Phases(connect=connect, processing=0.002), tls=tls, ip_protocol=4)
    step = StepResult("request", success, 0.01 + connect, facts=facts)
    failures = () if success else (AttemptFailure(Reason.STATUS, "request"),)
    return Result(
        "web",
        success,
        0.01 + connect,
        1.7e9,
        None if success else Reason.STATUS,
        failed_step="" if success else "request",
        steps=(step,),
        failures=failures,
    )


@pytest.mark.parametrize("full", [False, True], ids=["basic", "full"])
def test_each_run_rerenders_what_changed_and_keeps_the_rest_as_the_reference_shows(
    full: bool,
) -> None:
    """Recording renders only families that can have changed; after every run of a mixed
    sequence the text still equals prometheus-client's rendering of the same state."""
    sink = MetricsSink()
    sink.apply({"web": SeriesPlan((("component", "api"),), full=full)}, {"vantage": "eu"})
    tls = TlsFacts("TLS 1.3", 1.8e9, 1.9e9, None)
    timeout = Result(
        "web",
        False,
        5.0,
        1.7e9,
        Reason.TIMEOUT,
        failed_step="request",
        failures=(AttemptFailure(Reason.TIMEOUT, "request"),),
    )
    runs = [
        _http_run(200, True, None, 0.001),
        _http_run(200, True, None, 0.003),
        _http_run(500, False, None, 0.003),
        timeout,
        _http_run(200, True, tls, 0.002),
        _http_run(200, True, replace(tls, version="TLS 1.2"), 0.002),
        _http_run(200, True, None, 0.2),
    ]
    reference = CollectorRegistry()
    reference.register(sink)
    for run in runs:
        sink.record(run)
        fast = {s for s in parse_samples(sink.render().decode()) if ("check", "web") in s[1]}
        assert fast == set(parse_samples(generate_latest(reference).decode()))
