"""The per-check families as text, fast, and as prometheus-client families, for reference.

Both read the samples of `FAMILIES` off each check's state. The fast path renders a check's
text once per run (one chunk per family, cached) and a scrape only joins chunks: the stock
prometheus-client path takes seconds for 10,000 checks. `reference_families` builds the same
samples into prometheus-client's own families, so the tests can prove both renderings agree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from functools import lru_cache

from prometheus_client.core import Metric

from prober.sinks.metrics.families import FAMILIES
from prober.sinks.metrics.family import CheckFamily, Family
from prober.sinks.metrics.state import CheckSeries, Pairs, Sample, number_text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """Labels as the text formats write them inside `{}`."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def _exposed_name(family: Family, openmetrics: bool) -> str:
    """OpenMetrics names a counter family without its `_total` suffix."""
    if openmetrics and family.type == "counter":
        return family.name.removesuffix("_total")
    return family.name


def _head(family: Family, openmetrics: bool) -> bytes:
    """HELP and TYPE lines of a family."""
    name = _exposed_name(family, openmetrics)
    return f"# HELP {name} {family.help}\n# TYPE {name} {family.type}\n".encode()


# Each family's HELP and TYPE lines; a check's chunks (render_check) come in the same order.
TEXT_HEADS = tuple(_head(f, openmetrics=False) for f in FAMILIES)
OPENMETRICS_HEADS = tuple(_head(f, openmetrics=True) for f in FAMILIES)
# Where each family is in FAMILIES, and where those read off the run-wide state (which
# every run updates) are.
_INDEX = {id(f): index for index, f in enumerate(FAMILIES)}
_CHECK_WIDE = tuple(index for index, f in enumerate(FAMILIES) if isinstance(f, CheckFamily))
# Families whose samples differ after nearly every run (timings, run counts): rendered each
# time they may have changed without comparing, and their samples not kept (a tenth of a
# check's memory at 10,000 checks).
_CHANGES_EVERY_RUN = frozenset(
    index
    for index, f in enumerate(FAMILIES)
    if f.name
    in {
        "probe_duration_seconds",
        "probe_http_duration_seconds",
        "prober_check_duration_seconds",
        "prober_check_runs_total",
        "prober_last_success_timestamp_seconds",
        "prober_step_duration_seconds",
    }
)


def render_check(series: CheckSeries, noted: Collection[Family] | None = None) -> tuple[bytes, ...]:
    """The check's sample lines, one chunk per family of FAMILIES.

    A family whose samples are those of the last rendering keeps its bytes: most of a
    check's families (its status code, version, phases of a steady target, counters of the
    other result) do not change from run to run, and formatting is the cost of recording.
    With `noted` (the families of facts the run wrote), the other families of facts are
    not even sampled: only the run-wide families and those can have changed.
    """
    before, chunks = series.rendered, series.chunks
    labels = series.labels
    if before is None or chunks is None:
        samples = tuple(tuple(family.samples(series)) for family in FAMILIES)
        series.rendered = tuple(
            () if index in _CHANGES_EVERY_RUN else taken for index, taken in enumerate(samples)
        )
        return tuple(_render_samples(labels, taken) for taken in samples)
    indices: Iterable[int] = (
        range(len(FAMILIES)) if noted is None else (*_CHECK_WIDE, *(_INDEX[id(f)] for f in noted))
    )
    new_samples, new_chunks = list(before), list(chunks)
    for index in indices:
        taken = tuple(FAMILIES[index].samples(series))
        if index in _CHANGES_EVERY_RUN:
            new_chunks[index] = _render_samples(labels, taken)
        elif taken != before[index]:
            new_samples[index] = taken
            new_chunks[index] = _render_samples(labels, taken)
    series.rendered = tuple(new_samples)
    return tuple(new_chunks)


def _render_samples(labels: str, samples: tuple[Sample, ...]) -> bytes:
    return "".join(
        f"{name}{{{labels},{_extra_text(extra)}}} {number_text(value)}\n"
        if extra
        else f"{name}{{{labels}}} {number_text(value)}\n"
        for name, extra, value in samples
    ).encode()


@lru_cache(maxsize=4096)
def _extra_text(extra: Pairs) -> str:
    """A sample's own labels as text; few distinct ones (phases, buckets, reasons), so cached."""
    return label_text(extra)


def reference_families(checks: Iterable[CheckSeries]) -> Iterator[Metric]:
    """The per-check series as prometheus-client families (the reference rendering)."""
    checks = list(checks)
    for family in FAMILIES:
        metric = Metric(_exposed_name(family, openmetrics=True), family.help, family.type)
        for s in checks:
            base = dict(s.label_pairs)
            for sample, extra, value in family.samples(s):
                metric.add_sample(sample, {**base, **dict(extra)}, value)
        yield metric
