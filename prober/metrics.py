"""Results -> Prometheus text exposition.

Per-check series are rendered by a small hand-written renderer that caches each check's
text until that check runs again: the stock prometheus-client path takes seconds for
10,000 checks. The daemon's own series use prometheus-client in a private registry.
`collect()` yields the same per-check series as prometheus-client families, so tests can
prove both paths agree.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from prober import __version__
from prober.result import PHASE_NAMES, Result

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
VERDICT_STATES = ("ok", "degraded", "component_down", "platform_wide", "prober_impaired")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> Iterator[tuple[str, int]]:
        running = 0
        for bound, count in zip((*DURATION_BUCKETS, math.inf), self.counts, strict=True):
            running += count
            yield _number(bound), running

    def render(self, name: str, labels: str) -> str:
        lines = [f'{name}_bucket{{{labels},le="{le}"}} {n}.0' for le, n in self.cumulative()]
        lines.append(f"{name}_count{{{labels}}} {sum(self.counts)}.0")
        lines.append(f"{name}_sum{{{labels}}} {_number(self.total)}")
        return "\n".join(lines) + "\n"


@dataclass
class _StepSeries:
    labels: str
    success: float | None = None
    status_code: float | None = None
    phases: tuple[float, ...] = ()
    duration: _Histogram = field(default_factory=_Histogram)


@dataclass
class _CheckSeries:
    """Everything exported for one check, plus its cached text per family."""

    labels: str
    label_pairs: tuple[tuple[str, str], ...]
    success: float | None = None
    duration: float | None = None
    last_success: float | None = None
    degraded: float | None = None
    tls_expiry: float | None = None
    runs: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    attempts: int = 0
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    histogram: _Histogram = field(default_factory=_Histogram)
    steps: dict[str, _StepSeries] = field(default_factory=dict)
    chunks: tuple[str, ...] | None = None

    def step(self, name: str) -> _StepSeries:
        series = self.steps.get(name)
        if series is None:
            series = _StepSeries(f'{self.labels},step="{_escape(name)}"')
            self.steps[name] = series
        return series


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    kind: str
    help: str


FAMILIES = (
    _Family("probe_success", "gauge", "1 if the last run of the check succeeded"),
    _Family("probe_duration_seconds", "gauge", "How long the last run took"),
    _Family("probe_http_status_code", "gauge", "HTTP status of each step's last response"),
    _Family("probe_http_duration_seconds", "gauge", "Seconds per phase of each step's request"),
    _Family("probe_ssl_earliest_cert_expiry", "gauge", "Earliest certificate expiry, unix time"),
    _Family("prober_check_duration_seconds", "histogram", "Duration of check runs"),
    _Family("prober_check_runs_total", "counter", "Check runs by result"),
    _Family("prober_check_failures_total", "counter", "Failed attempts by reason and step"),
    _Family("prober_check_attempts_total", "counter", "Attempts made, retries included"),
    _Family("prober_check_degraded", "gauge", "1 if the last run passed but was slow"),
    _Family("prober_last_success_timestamp_seconds", "gauge", "Unix time of the last success"),
    _Family("prober_step_success", "gauge", "1 if the step's last run succeeded"),
    _Family("prober_step_duration_seconds", "histogram", "Duration of flow steps"),
)


def _gauge(name: str, labels: str, value: float | None) -> str:
    return "" if value is None else f"{name}{{{labels}}} {_number(value)}\n"


def _render_check(s: _CheckSeries) -> tuple[str, ...]:
    steps = s.steps.values()
    failures = "".join(
        f'prober_check_failures_total{{{s.labels},reason="{r}",failed_step="{_escape(st)}"}} '
        f"{n}.0\n"
        for (r, st), n in s.failures.items()
    )
    phases = "".join(
        f'probe_http_duration_seconds{{{st.labels},phase="{p}"}} {_number(v)}\n'
        for st in steps
        for p, v in zip(PHASE_NAMES, st.phases, strict=False)
    )
    return (
        _gauge("probe_success", s.labels, s.success),
        _gauge("probe_duration_seconds", s.labels, s.duration),
        "".join(_gauge("probe_http_status_code", st.labels, st.status_code) for st in steps),
        phases,
        _gauge("probe_ssl_earliest_cert_expiry", s.labels, s.tls_expiry),
        s.histogram.render("prober_check_duration_seconds", s.labels),
        "".join(
            f'prober_check_runs_total{{{s.labels},result="{r}"}} {n}.0\n' for r, n in s.runs.items()
        ),
        failures,
        f"prober_check_attempts_total{{{s.labels}}} {s.attempts}.0\n",
        _gauge("prober_check_degraded", s.labels, s.degraded),
        _gauge("prober_last_success_timestamp_seconds", s.labels, s.last_success),
        "".join(_gauge("prober_step_success", st.labels, st.success) for st in steps),
        "".join(st.duration.render("prober_step_duration_seconds", st.labels) for st in steps),
    )


class DaemonMetrics:
    """The daemon's own series, in a private prometheus-client registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.loop_lag = Histogram(
            "prober_event_loop_lag_seconds",
            "How late the event loop woke up",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.scheduler_lag = Histogram(
            "prober_scheduler_lag_seconds",
            "How late checks started after their scheduled time",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.probes_delayed = Counter(
            "prober_probes_delayed",
            "Runs that waited for the concurrent-probe cap",
            registry=registry,
        )
        self.lag_exceeded = Counter(
            "prober_runs_loop_lag_exceeded",
            "Runs during which event-loop lag exceeded its budget",
            registry=registry,
        )
        self.checks_configured = Gauge(
            "prober_checks_configured",
            "Checks in the config (all) and run here (owned)",
            ["scope"],
            registry=registry,
        )
        self.reload_ok = Gauge(
            "prober_config_last_reload_successful",
            "1 if the last config load or reload succeeded",
            registry=registry,
        )
        self.reload_time = Gauge(
            "prober_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
            registry=registry,
        )
        self.verdict = Gauge(
            "prober_verdict", "1 for the current verdict state", ["state"], registry=registry
        )
        build = Gauge("prober_build_info", "Build information", ["version"], registry=registry)
        build.labels(version=__version__).set(1)
        for state in VERDICT_STATES:
            self.verdict.labels(state=state).set(1 if state == "ok" else 0)

    def set_verdict(self, state: str) -> None:
        for name in VERDICT_STATES:
            self.verdict.labels(state=name).set(1 if name == state else 0)


class _SessionCollector:
    """prober_session_logins_total from the session store's own counts, read at scrape time."""

    def __init__(self, events: Mapping[tuple[str, str], int]) -> None:
        self._events = events

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "prober_session_logins",
            "Login sessions: logins by result, reuses, expiries, rejected tokens",
            labels=["session", "result"],
        )
        for (session, result), count in sorted(self._events.items()):
            family.add_metric([session, result], count)
        yield family


class MetricsSink:
    """Turns Results into series; renders them fast; forgets checks removed by a reload."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.daemon = DaemonMetrics(self.registry)
        self._checks: dict[str, _CheckSeries] = {}
        self._global_labels: tuple[tuple[str, str], ...] = ()

    def watch_sessions(self, events: Mapping[tuple[str, str], int]) -> None:
        """Export the session store's event counts."""
        self.registry.register(_SessionCollector(events))

    def apply(
        self, checks: Mapping[str, tuple[tuple[str, str], ...]], global_labels: Mapping[str, str]
    ) -> None:
        """Keep series of unchanged checks; drop removed ones; start new ones at zero.

        `checks` maps each check name to its label pairs (component and the check's labels).
        """
        pairs = tuple(sorted(global_labels.items()))
        if pairs != self._global_labels:
            self._checks.clear()
            self._global_labels = pairs
        kept: dict[str, _CheckSeries] = {}
        for name, own in checks.items():
            label_pairs = (("check", name), *own, *pairs)
            existing = self._checks.get(name)
            if existing is not None and existing.label_pairs == label_pairs:
                kept[name] = existing
            else:
                kept[name] = _CheckSeries(_labels(label_pairs), label_pairs)
        self._checks = kept

    def record(self, result: Result) -> None:
        """Update the check's series from one run's Result."""
        series = self._checks.get(result.check)
        if series is None:
            return  # removed by a reload while it ran
        series.success = 1.0 if result.success else 0.0
        series.duration = result.duration
        series.degraded = 1.0 if result.degraded else 0.0
        series.runs["success" if result.success else "failure"] += 1
        series.attempts += result.attempts
        series.histogram.observe(result.duration)
        if result.success:
            series.last_success = result.started_at + result.duration
        if result.tls_expiry is not None:
            series.tls_expiry = result.tls_expiry
        for failure in result.failures:
            key = (str(failure.reason), failure.failed_step)
            series.failures[key] = series.failures.get(key, 0) + 1
        for step in result.steps:
            if step.cached:
                continue
            step_series = series.step(step.name)
            step_series.success = 1.0 if step.success else 0.0
            step_series.status_code = float(step.status_code or 0)
            step_series.phases = step.phases.as_tuple()
            step_series.duration.observe(step.duration)
        series.chunks = None

    def render(self) -> bytes:
        """The whole exposition: per-check families, then the daemon's own series."""
        parts: list[str] = []
        columns = [s.chunks or self._cache(s) for s in self._checks.values()]
        for index, family in enumerate(FAMILIES):
            parts.append(
                f"# HELP {family.name} {family.help}\n# TYPE {family.name} {family.kind}\n"
            )
            parts.extend(column[index] for column in columns)
        return "".join(parts).encode() + generate_latest(self.registry)

    @staticmethod
    def _cache(series: _CheckSeries) -> tuple[str, ...]:
        series.chunks = _render_check(series)
        return series.chunks

    def collect(self) -> Iterator[Metric]:
        """The per-check series as prometheus-client families (the reference rendering)."""
        yield from _families(self._checks.values())


def _families(all_series: Iterable[_CheckSeries]) -> Iterator[Metric]:
    all_series = list(all_series)
    gauges = {
        f.name: GaugeMetricFamily(f.name, f.help, labels=None)
        for f in FAMILIES
        if f.kind == "gauge"
    }
    runs = CounterMetricFamily("prober_check_runs", FAMILIES[6].help)
    failures = CounterMetricFamily("prober_check_failures", FAMILIES[7].help)
    attempts = CounterMetricFamily("prober_check_attempts", FAMILIES[8].help)
    check_hist = HistogramMetricFamily("prober_check_duration_seconds", FAMILIES[5].help)
    step_hist = HistogramMetricFamily("prober_step_duration_seconds", FAMILIES[12].help)
    for s in all_series:
        base = dict(s.label_pairs)
        for name, value in (
            ("probe_success", s.success),
            ("probe_duration_seconds", s.duration),
            ("probe_ssl_earliest_cert_expiry", s.tls_expiry),
            ("prober_check_degraded", s.degraded),
            ("prober_last_success_timestamp_seconds", s.last_success),
        ):
            if value is not None:
                gauges[name].add_sample(name, base, value)
        for result, n in s.runs.items():
            runs.add_sample("prober_check_runs_total", {**base, "result": result}, n)
        for (reason, step), n in s.failures.items():
            failures.add_sample(
                "prober_check_failures_total", {**base, "reason": reason, "failed_step": step}, n
            )
        attempts.add_sample("prober_check_attempts_total", base, s.attempts)
        _add_histogram(check_hist, "prober_check_duration_seconds", base, s.histogram)
        for step_name, st in s.steps.items():
            labels = {**base, "step": step_name}
            if st.status_code is not None:
                gauges["probe_http_status_code"].add_sample(
                    "probe_http_status_code", labels, st.status_code
                )
            for phase, value in zip(PHASE_NAMES, st.phases, strict=False):
                gauges["probe_http_duration_seconds"].add_sample(
                    "probe_http_duration_seconds", {**labels, "phase": phase}, value
                )
            if st.success is not None:
                gauges["prober_step_success"].add_sample("prober_step_success", labels, st.success)
            _add_histogram(step_hist, "prober_step_duration_seconds", labels, st.duration)
    yield from gauges.values()
    yield from (runs, failures, attempts, check_hist, step_hist)


def _add_histogram(
    family: HistogramMetricFamily, name: str, labels: dict[str, str], histogram: _Histogram
) -> None:
    for le, count in histogram.cumulative():
        family.add_sample(f"{name}_bucket", {**labels, "le": le}, count)
    family.add_sample(f"{name}_count", labels, sum(histogram.counts))
    family.add_sample(f"{name}_sum", labels, histogram.total)
