"""The tls, http-detail, tcp and dns series: fast rendering equals the reference collector."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from prober.result import (
    DnsFacts,
    HttpFacts,
    Phases,
    Reason,
    Result,
    StepResult,
    TcpFacts,
    TlsFacts,
)
from prober.sinks.metrics import MetricsSink, SeriesPlan
from tests.support.processes import require_tool
from tests.support.samples import parse_samples

EXPIRY = 1_800_000_000.0


def _sink() -> MetricsSink:
    sink = MetricsSink()
    sink.apply(
        {
            "web": SeriesPlan((("component", "api"),), full=True),
            "smtp": SeriesPlan((("component", "mail"),), full=True),
            "resolve": SeriesPlan((("component", "dns"),), full=True),
            "down": SeriesPlan((("component", "api"),), full=True),
        },
        {"vantage": "eu"},
    )
    https = StepResult(
        "request",
        True,
        0.05,
        facts=HttpFacts(
            status_code=200,
            phases=Phases(0.001, 0.002, 0.01, 0.02, 0.001),
            redirects=2,
            content_length=120,
            body_length=400,
            http_version="2.0",
            tls=TlsFacts("TLS 1.3", EXPIRY),
        ),
    )
    tcp = StepResult(
        "connect",
        True,
        0.01,
        facts=TcpFacts(
            Phases(0.001, 0.002, 0.003, 0.004),
            lookup_time=0.001,
            tls=TlsFacts("TLS 1.2", EXPIRY + 1),
        ),
    )
    dns = StepResult(
        "query",
        False,
        0.2,
        Reason.DNS,
        facts=DnsFacts(Phases(processing=0.2), answer_count=0, lookup_time=0.2),
    )
    # An http step without a response: no status, no TLS.
    refused = StepResult("request", False, 0.001, Reason.CONNECT_REFUSED, facts=HttpFacts())
    for check, step in (("web", https), ("smtp", tcp), ("resolve", dns), ("down", refused)):
        sink.record(Result(check, step.success, step.duration, 1.7e9, steps=(step,)))
    return sink


def test_fast_render_equals_reference_for_protocol_series() -> None:
    sink = _sink()
    reference = CollectorRegistry()
    reference.register(sink)
    stock = set(parse_samples(generate_latest(reference).decode()))
    fast = {s for s in parse_samples(sink.render().decode()) if any(k == "check" for k, _ in s[1])}
    assert fast == stock
    names = {name for name, _, _ in fast}
    assert {
        "probe_http_redirects",
        "probe_http_content_length",
        "probe_http_uncompressed_body_length",
        "probe_http_version",
        "probe_tls_version_info",
        "probe_tcp_duration_seconds",
        "probe_dns_lookup_time_seconds",
        "probe_dns_answer_rrs",
    } <= names


def test_each_kind_exports_only_its_own_series() -> None:
    by_check: dict[str, set[str]] = {}
    for name, labels, _ in parse_samples(_sink().render().decode()):
        check = dict(labels).get("check")
        if check:
            by_check.setdefault(check, set()).add(name)
    assert "probe_http_status_code" not in by_check["smtp"] | by_check["resolve"]
    assert "probe_tcp_duration_seconds" not in by_check["web"]
    assert "probe_dns_answer_rrs" in by_check["resolve"]
    assert "probe_dns_answer_rrs" not in by_check["smtp"]
    # An http step without a response still reports 0 like blackbox_exporter.
    assert {"probe_http_status_code", "probe_http_version"} <= by_check["down"]
    assert "probe_tls_version_info" not in by_check["down"]


def test_values_of_protocol_series() -> None:
    values = {
        (name, tuple(sorted((k, v) for k, v in labels if k in ("check", "version", "phase")))): v
        for name, labels, v in parse_samples(_sink().render().decode())
    }
    assert values[("probe_http_version", (("check", "web"),))] == 2.0
    assert values[("probe_http_redirects", (("check", "web"),))] == 2
    assert values[("probe_tls_version_info", (("check", "smtp"), ("version", "TLS 1.2")))] == 1
    assert values[("probe_tcp_duration_seconds", (("check", "smtp"), ("phase", "tls")))] == 0.003
    assert values[("probe_ssl_earliest_cert_expiry", (("check", "smtp"),))] == EXPIRY + 1
    assert values[("probe_dns_lookup_time_seconds", (("check", "resolve"),))] == 0.2
    assert values[("probe_dns_answer_rrs", (("check", "resolve"),))] == 0


@pytest.mark.integration
def test_promtool_accepts_protocol_series() -> None:
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "metrics"],
        input=_sink().render(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode() + run.stdout.decode()
    assert run.stdout.decode().strip() == "" and run.stderr.decode().strip() == ""
