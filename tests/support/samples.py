"""Metric samples of a text exposition, and what a sink exports for one Result."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from prober.result import Result
from prober.sinks.metrics import MetricsSink, SeriesPlan

# (name, labels, value) of one sample of a text exposition.
Sample = tuple[str, frozenset[tuple[str, str]], float]


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, in order; the `_created` timestamps that
    prometheus-client adds to counters are left out (prober's own renderer has none)."""
    return [
        (s.name, frozenset(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def sample_value(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """The value of the first sample named `name` whose labels include `labels`, else None."""
    for sample_name, sample_labels, value in samples:
        if sample_name == name and set(labels.items()) <= sample_labels:
            return value
    return None


def exported_samples(result: Result, component: str, full: bool = False) -> list[Sample]:
    """The samples a fresh MetricsSink exports after recording this one result (of a check
    with `detail: full` if `full`)."""
    sink = MetricsSink()
    sink.apply({result.check: SeriesPlan((("component", component),), full=full)}, {})
    sink.record(result)
    return parse_samples(sink.render().decode())
