"""Results -> Prometheus text exposition.

Per-check series are rendered by a small hand-written renderer that caches each check's
text until that check runs again: the stock prometheus-client path takes seconds for
10,000 checks. The daemon's own series use prometheus-client in a private registry.
`collect()` yields the same per-check series as prometheus-client families, so tests can
prove both paths agree.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from prober import __version__
from prober.result import PHASE_NAMES, Result, StepResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RENDER_CHUNK = 1 << 20
# prometheus-client's OpenMetrics writer has no type hints; this is its signature.
_openmetrics_latest: Callable[[CollectorRegistry], bytes] = openmetrics_exposition.generate_latest
VERDICT_STATES = ("ok", "degraded", "component_down", "platform_wide", "prober_impaired")
TCP_PHASE_NAMES = PHASE_NAMES[:4]  # resolve, connect, tls, processing: no transfer for tcp


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if value - value == 0:  # finite: the common case, checked first (inf - inf is nan)
        return repr(float(value))
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


_BUCKET_LABELS = tuple(_number(bound) for bound in (*DURATION_BUCKETS, math.inf))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> Iterator[tuple[str, int]]:
        running = 0
        for le, count in zip(_BUCKET_LABELS, self.counts, strict=True):
            running += count
            yield le, running

    def render(self, name: str, labels: str) -> str:
        prefix = f"{name}_bucket{{{labels},le="
        lines = [f'{prefix}"{le}"}} {n}.0' for le, n in self.cumulative()]
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
    redirects: float | None = None
    content_length: float | None = None
    body_length: float | None = None
    http_version: float | None = None
    tls_version: str | None = None
    tcp_phases: tuple[float, ...] = ()

    def update(self, step: StepResult) -> None:
        """Protocol facts of one run: http series for http steps, phases for tcp steps."""
        self.success = 1.0 if step.success else 0.0
        if step.tls_version is not None:  # the last negotiated: a failed run keeps it
            self.tls_version = step.tls_version
        if step.protocol == "http":
            # Like blackbox_exporter: 0 when there was no response at all.
            self.status_code = float(step.status_code or 0)
            self.phases = step.phases.as_tuple()
            self.redirects = float(step.redirects)
            self.content_length = float(step.content_length or 0)
            self.body_length = float(step.body_length or 0)
            self.http_version = float(step.http_version) if step.http_version else 0.0
        elif step.protocol == "tcp":
            self.tcp_phases = step.phases.as_tuple()[: len(TCP_PHASE_NAMES)]
        self.duration.observe(step.duration)


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
    dns_lookup: float | None = None
    dns_answers: float | None = None
    runs: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    attempts: int = 0
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    histogram: _Histogram = field(default_factory=_Histogram)
    steps: dict[str, _StepSeries] = field(default_factory=dict)
    chunks: tuple[bytes, ...] | None = None

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
    _Family("probe_http_redirects", "gauge", "Redirects followed by each step's request"),
    _Family("probe_http_content_length", "gauge", "Content-Length of the response, -1 if absent"),
    _Family("probe_http_uncompressed_body_length", "gauge", "Body bytes read after decompression"),
    _Family("probe_http_version", "gauge", "HTTP version of each step's response"),
    _Family("probe_tls_version_info", "gauge", "TLS version each step negotiated"),
    _Family("probe_tcp_duration_seconds", "gauge", "Seconds per phase of a tcp check"),
    _Family("probe_dns_lookup_time_seconds", "gauge", "Name resolution (tcp) or query (dns) time"),
    _Family("probe_dns_answer_rrs", "gauge", "Records in the answer section of a dns check"),
)


def _head(family: _Family, openmetrics: bool) -> bytes:
    """HELP and TYPE lines; OpenMetrics names a counter family without its `_total` suffix."""
    name = family.name
    if openmetrics and family.kind == "counter":
        name = name.removesuffix("_total")
    return f"# HELP {name} {family.help}\n# TYPE {name} {family.kind}\n".encode()


_TEXT_HEADS = tuple(_head(f, openmetrics=False) for f in FAMILIES)
_OPENMETRICS_HEADS = tuple(_head(f, openmetrics=True) for f in FAMILIES)


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
        *_render_protocols(s),
    )


def _render_protocols(s: _CheckSeries) -> tuple[str, ...]:
    """The chunks of the http-detail, tls, tcp and dns families, in FAMILIES order."""
    steps = s.steps.values()
    tls = "".join(
        f'probe_tls_version_info{{{st.labels},version="{_escape(st.tls_version)}"}} 1.0\n'
        for st in steps
        if st.tls_version is not None
    )
    tcp_phases = "".join(
        f'probe_tcp_duration_seconds{{{st.labels},phase="{p}"}} {_number(v)}\n'
        for st in steps
        for p, v in zip(TCP_PHASE_NAMES, st.tcp_phases, strict=False)
    )
    return (
        "".join(_gauge("probe_http_redirects", st.labels, st.redirects) for st in steps),
        "".join(_gauge("probe_http_content_length", st.labels, st.content_length) for st in steps),
        "".join(
            _gauge("probe_http_uncompressed_body_length", st.labels, st.body_length) for st in steps
        ),
        "".join(_gauge("probe_http_version", st.labels, st.http_version) for st in steps),
        tls,
        tcp_phases,
        _gauge("probe_dns_lookup_time_seconds", s.labels, s.dns_lookup),
        _gauge("probe_dns_answer_rrs", s.labels, s.dns_answers),
    )


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the event loop (tests, one-shot tools)
        return 0.0


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
        self.runs_skipped = Counter(
            "prober_scheduler_runs_skipped",
            "Scheduled runs not started: the previous run still going, or the loop stalled",
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
        tasks = Gauge(
            "prober_asyncio_tasks",
            "asyncio tasks alive (a leak shows here first)",
            registry=registry,
        )
        tasks.set_function(_task_count)
        # process_resident_memory_bytes, process_open_fds, ...: the daemon's own footprint.
        ProcessCollector(registry=registry)
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
        _record_dns(series, result)
        for failure in result.failures:
            key = (str(failure.reason), failure.failed_step)
            series.failures[key] = series.failures.get(key, 0) + 1
        for step in result.steps:
            if step.cached:
                continue
            series.step(step.name).update(step)
        # Render the check's text now, one check at a time, rather than all dirty checks
        # in the scrape: at 10,000 checks that would stall the event loop for a second.
        self._cache(series)

    def render(self) -> bytes:
        """The whole exposition: per-check families, then the daemon's own series.

        Only joins each check's cached bytes, so a scrape costs a few microseconds per check.
        """
        return b"".join(self.render_chunks(1 << 62))

    def render_chunks(self, size: int = RENDER_CHUNK, openmetrics: bool = False) -> Iterator[bytes]:
        """The exposition in pieces of about `size` bytes, for a handler that streams it.

        A handler that yields to the event loop between pieces keeps a scrape of 10,000
        checks (about 45 MB) from stalling probes for the whole join. With `openmetrics` it
        is OpenMetrics 1.0 from the same cached per-check text (see prober/exposition.py).
        """
        columns = [s.chunks or self._cache(s) for s in self._checks.values()]
        heads = _OPENMETRICS_HEADS if openmetrics else _TEXT_HEADS
        parts: list[bytes] = []
        pending = 0
        for index, head in enumerate(heads):
            parts.append(head)
            for column in columns:
                chunk = column[index]
                parts.append(chunk)
                pending += len(chunk)
                if pending >= size:
                    yield b"".join(parts)
                    parts, pending = [], 0
        parts.append(
            _openmetrics_latest(self.registry) if openmetrics else generate_latest(self.registry)
        )
        yield b"".join(parts)

    @staticmethod
    def _cache(series: _CheckSeries) -> tuple[bytes, ...]:
        series.chunks = tuple(chunk.encode() for chunk in _render_check(series))
        return series.chunks

    def collect(self) -> Iterator[Metric]:
        """The per-check series as prometheus-client families (the reference rendering)."""
        yield from _families(self._checks.values())


def _record_dns(series: _CheckSeries, result: Result) -> None:
    """Keep the last measured lookup time; a dns run without an answer reports 0 records."""
    for step in result.steps:
        if step.dns_lookup_time is not None:
            series.dns_lookup = step.dns_lookup_time
        if step.protocol == "dns":
            series.dns_answers = float(step.answer_count or 0)


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
            ("probe_dns_lookup_time_seconds", s.dns_lookup),
            ("probe_dns_answer_rrs", s.dns_answers),
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
            _add_protocol_samples(gauges, labels, st)
    yield from gauges.values()
    yield from (runs, failures, attempts, check_hist, step_hist)


def _add_protocol_samples(
    gauges: Mapping[str, GaugeMetricFamily], labels: dict[str, str], st: _StepSeries
) -> None:
    for name, value in (
        ("probe_http_redirects", st.redirects),
        ("probe_http_content_length", st.content_length),
        ("probe_http_uncompressed_body_length", st.body_length),
        ("probe_http_version", st.http_version),
    ):
        if value is not None:
            gauges[name].add_sample(name, labels, value)
    if st.tls_version is not None:
        gauges["probe_tls_version_info"].add_sample(
            "probe_tls_version_info", {**labels, "version": st.tls_version}, 1.0
        )
    for phase, value in zip(TCP_PHASE_NAMES, st.tcp_phases, strict=False):
        gauges["probe_tcp_duration_seconds"].add_sample(
            "probe_tcp_duration_seconds", {**labels, "phase": phase}, value
        )


def _add_histogram(
    family: HistogramMetricFamily, name: str, labels: dict[str, str], histogram: _Histogram
) -> None:
    for le, count in histogram.cumulative():
        family.add_sample(f"{name}_bucket", {**labels, "le": le}, count)
    family.add_sample(f"{name}_count", labels, sum(histogram.counts))
    family.add_sample(f"{name}_sum", labels, histogram.total)
