"""The fast exposition parses, and equals what prometheus-client itself renders."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from prober.metrics import MetricsSink
from tests.conftest import login_result, parse_samples, require_tool


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
    sink.apply({"a": (("component", "api"),)}, {"vantage": "eu"})
    text = sink.render().decode()
    assert 'check="a"' in text
    assert 'b \\"q\\"' not in text


def test_unchanged_check_keeps_counters_across_apply(sink: MetricsSink) -> None:
    sink.apply({"a": (("component", "api"),), "c": (("component", "api"),)}, {"vantage": "eu"})
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
