"""Results -> Prometheus text exposition, within a series budget per check.

One family table (`FAMILIES`) says, for each per-check family, how to read its samples off
a check's state. The fast renderer turns those samples into text once per run and caches
it per family (the stock prometheus-client path takes seconds for 10,000 checks);
`collect()` turns the same samples into prometheus-client families, so a test can prove
both renderings agree. The daemon's own series use prometheus-client in a private registry.

By default (`detail: basic`) a check exports one latency histogram, and its phases and
status once per check rather than once per step: a one-step http check stays within 20
series (docs/METRICS.md). `detail: full` adds histograms, phases and HTTP facts per step.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from prober import __version__
from prober.config.model import Check
from prober.result import PHASE_NAMES, Result, StepResult
from prober.sinks.verdict import Condition, Scope, VerdictState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Buckets of the check and step duration histograms, chosen for API calls: a probe pays DNS,
# TCP and TLS on every run, so a healthy API answers it in tens to hundreds of milliseconds;
# the bounds sit at the latency objectives set for API calls (100 ms to 1 s) plus 2.5 s for
# "badly slow". Slower runs land in +Inf; probe_duration_seconds keeps the exact figure.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RENDER_CHUNK = 1 << 20
# prometheus-client's OpenMetrics writer has no type hints; this is its signature.
_openmetrics_latest: Callable[[CollectorRegistry], bytes] = openmetrics_exposition.generate_latest
VERDICT_STATES = tuple(state.value for state in reversed(VerdictState))
TCP_PHASE_NAMES = PHASE_NAMES[:4]  # resolve, connect, tls, processing: no transfer for tcp

Pairs = tuple[tuple[str, str], ...]
# One sample of a family: its full name (`_bucket`, `_total`, ...), the labels it adds to
# the check's own, and its value.
_Sample = tuple[str, Pairs, float]


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


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """Which series a check exports: its own labels, and the settings that add series."""

    labels: Pairs = ()
    full: bool = False  # detail: full
    steps: bool = False  # a flow: prober_step_success per step
    attempts: bool = False  # retries configured: prober_check_attempts_total
    degraded: bool = False  # degraded_latency configured: prober_check_degraded

    @classmethod
    def of(cls, check: Check) -> SeriesPlan:
        """The plan a configured check asks for."""
        return cls(
            labels=(("component", check.component), *sorted(check.labels.items())),
            full=check.detail == "full",
            steps=check.kind == "flow",
            attempts=check.retries > 0,
            degraded=check.degraded_latency is not None,
        )


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def samples(self, name: str, extra: Pairs = ()) -> Iterator[_Sample]:
        """Cumulative buckets, then count and sum, as the text format orders them."""
        running = 0
        for le, count in zip(_BUCKET_LABELS, self.counts, strict=True):
            running += count
            yield f"{name}_bucket", (*extra, ("le", le)), running
        yield f"{name}_count", extra, running
        yield f"{name}_sum", extra, self.total


@dataclass(kw_only=True)
class _Facts:
    """What a check (basic) or each of its steps (full) reports of its last request."""

    status_code: float | None = None
    phases: tuple[float, ...] = ()
    tcp_phases: tuple[float, ...] = ()


@dataclass(kw_only=True)
class _StepSeries(_Facts):
    """One step's last run, kept for flows and for checks with `detail: full`."""

    extra: Pairs
    success: float | None = None
    duration: _Histogram | None = None  # only with detail: full
    redirects: float | None = None
    content_length: float | None = None
    body_length: float | None = None
    http_version: float | None = None
    tls_version: str | None = None
    accounts_failed: float | None = None  # a pooled flow's step: accounts it failed for
    reused: float | None = None  # a session step: 1 if its last run reused a login
    waited: float | None = None  # a polled step: how long its write took to show

    def update(self, step: StepResult) -> None:
        """Protocol facts of one run: http series for http steps, phases for tcp steps."""
        self.success = 1.0 if step.success else 0.0
        if step.accounts:
            self.accounts_failed = float(step.accounts_failed)
        if step.waited is not None:
            self.waited = step.waited
        if self.reused is not None:
            self.reused = 0.0
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
        if self.duration is not None:
            self.duration.observe(step.duration)


def _summed(steps: Sequence[StepResult], width: int) -> tuple[float, ...]:
    """Each phase summed over `steps`: the check's phases, which add up to its run."""
    totals = [0.0] * width
    for step in steps:
        for index, value in enumerate(step.phases.as_tuple()[:width]):
            totals[index] += value
    return tuple(totals)


@dataclass(kw_only=True)
class _CheckSeries(_Facts):
    """Everything exported for one check, plus its cached text per family."""

    labels: str
    label_pairs: Pairs
    plan: SeriesPlan
    success: float | None = None
    duration: float | None = None
    last_success: float | None = None
    degraded: float | None = None
    tls_expiry: float | None = None
    dns_lookup: float | None = None
    dns_answers: float | None = None
    accounts_probed: float | None = None  # a pooled flow's last run
    accounts_failed: float | None = None
    runs: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    attempts: int = 0
    # Every (reason, failed step) ever seen is counted; `detail: basic` exports only the
    # latest, so a check's failure series stay bounded at one.
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    last_failure: tuple[str, str] | None = None
    histogram: _Histogram = field(default_factory=_Histogram)
    steps: dict[str, _StepSeries] = field(default_factory=dict)
    chunks: tuple[bytes, ...] | None = None

    def step(self, name: str) -> _StepSeries:
        series = self.steps.get(name)
        if series is None:
            histogram = _Histogram() if self.plan.full else None
            series = _StepSeries(extra=(("step", name),), duration=histogram)
            self.steps[name] = series
        return series

    def record(self, result: Result) -> None:
        """Update the series from one run's Result."""
        self.success = 1.0 if result.success else 0.0
        self.duration = result.duration
        self.degraded = 1.0 if result.degraded else 0.0
        self.runs["success" if result.success else "failure"] += 1
        self.attempts += result.attempts
        self.histogram.observe(result.duration)
        if result.success:
            self.last_success = result.started_at + result.duration
        if result.tls_expiry is not None:
            self.tls_expiry = result.tls_expiry
        if result.accounts:
            self.accounts_probed = float(len(result.accounts))
            self.accounts_failed = float(result.accounts_failed)
        for failure in result.failures:
            key = (str(failure.reason), failure.failed_step)
            self.failures[key] = self.failures.get(key, 0) + 1
            self.last_failure = key
        self._record_steps([s for s in result.steps if not s.cached], result.failed_step)
        if self.plan.steps or self.plan.full:
            for step in result.steps:
                if step.cached:  # the step keeps its series; this says its login was reused
                    self.step(step.name).reused = 1.0

    def _record_steps(self, ran: Sequence[StepResult], failed_step: str) -> None:
        """Check-wide facts of the steps that ran; per-step ones where the plan wants them.

        The check's status is that of the step that failed the run, else of the last one.
        """
        http = [s for s in ran if s.protocol == "http"]
        if http:
            self.phases = _summed(http, len(PHASE_NAMES))
            shown = next((s for s in http if s.name == failed_step), http[-1])
            self.status_code = float(shown.status_code or 0)
        tcp = [s for s in ran if s.protocol == "tcp"]
        if tcp:
            self.tcp_phases = _summed(tcp, len(TCP_PHASE_NAMES))
        for step in ran:
            if step.dns_lookup_time is not None:
                self.dns_lookup = step.dns_lookup_time
            if step.protocol == "dns":  # a dns run without an answer reports 0 records
                self.dns_answers = float(step.answer_count or 0)
        if self.plan.full or self.plan.steps:
            for step in ran:
                self.step(step.name).update(step)


# ---- the family table: how each family reads its samples off a check

_Sampler = Callable[[_CheckSeries, str], Iterator[_Sample]]


def _facts_of(s: _CheckSeries) -> Iterator[tuple[Pairs, _Facts]]:
    """Where check-or-step facts come from: each step with `detail: full`, else the check."""
    if s.plan.full:
        for step in s.steps.values():
            yield step.extra, step
    else:
        yield (), s


def _steps_of(s: _CheckSeries, full_only: bool) -> Iterator[_StepSeries]:
    """The steps that export series of their own: all with `detail: full`, else a flow's."""
    if s.plan.full or (s.plan.steps and not full_only):
        yield from s.steps.values()


def _per_check(read: Callable[[_CheckSeries], float | None]) -> _Sampler:
    """A gauge with one value per check."""

    def samples(s: _CheckSeries, name: str) -> Iterator[_Sample]:
        value = read(s)
        if value is not None:
            yield name, (), value

    return samples


def _per_facts(read: Callable[[_Facts], float | None]) -> _Sampler:
    """A gauge per step with `detail: full`, else per check."""

    def samples(s: _CheckSeries, name: str) -> Iterator[_Sample]:
        for extra, facts in _facts_of(s):
            value = read(facts)
            if value is not None:
                yield name, extra, value

    return samples


def _phased(phase_names: tuple[str, ...], read: Callable[[_Facts], tuple[float, ...]]) -> _Sampler:
    """A gauge per phase, per step with `detail: full`, else per check."""

    def samples(s: _CheckSeries, name: str) -> Iterator[_Sample]:
        for extra, facts in _facts_of(s):
            for phase, value in zip(phase_names, read(facts), strict=False):
                yield name, (*extra, ("phase", phase)), value

    return samples


def _per_step(read: Callable[[_StepSeries], float | None], full_only: bool = True) -> _Sampler:
    """A gauge per step, for the steps that export series of their own."""

    def samples(s: _CheckSeries, name: str) -> Iterator[_Sample]:
        for step in _steps_of(s, full_only):
            value = read(step)
            if value is not None:
                yield name, step.extra, value

    return samples


def _tls_versions(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    for step in _steps_of(s, full_only=True):
        if step.tls_version is not None:
            yield name, (*step.extra, ("version", step.tls_version)), 1.0


def _check_histogram(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    return s.histogram.samples(name)


def _step_histograms(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    for step in _steps_of(s, full_only=True):
        if step.duration is not None:
            yield from step.duration.samples(name, step.extra)


def _runs(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    for result, count in s.runs.items():
        yield name, (("result", result),), count


def _failures(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    keys = list(s.failures) if s.plan.full else [s.last_failure] if s.last_failure else []
    for reason, step in keys:
        yield name, (("reason", reason), ("failed_step", step)), s.failures[(reason, step)]


def _attempts(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    if s.plan.attempts:
        yield name, (), s.attempts


def _degraded(s: _CheckSeries, name: str) -> Iterator[_Sample]:
    if s.plan.degraded and s.degraded is not None:
        yield name, (), s.degraded


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    kind: str
    help: str
    samples: _Sampler


FAMILIES = (
    _Family(
        "probe_success",
        "gauge",
        "1 if the last run of the check succeeded",
        _per_check(lambda s: s.success),
    ),
    _Family(
        "probe_duration_seconds",
        "gauge",
        "How long the last run took",
        _per_check(lambda s: s.duration),
    ),
    _Family(
        "probe_http_status_code",
        "gauge",
        "HTTP status of the last response",
        _per_facts(lambda f: f.status_code),
    ),
    _Family(
        "probe_http_duration_seconds",
        "gauge",
        "Seconds per phase of the last request",
        _phased(PHASE_NAMES, lambda f: f.phases),
    ),
    _Family(
        "probe_ssl_earliest_cert_expiry",
        "gauge",
        "Earliest certificate expiry, unix time",
        _per_check(lambda s: s.tls_expiry),
    ),
    _Family(
        "prober_check_duration_seconds", "histogram", "Duration of check runs", _check_histogram
    ),
    _Family("prober_check_runs_total", "counter", "Check runs by result", _runs),
    _Family(
        "prober_check_failures_total", "counter", "Failed attempts by reason and step", _failures
    ),
    _Family("prober_check_attempts_total", "counter", "Attempts made, retries included", _attempts),
    _Family("prober_check_degraded", "gauge", "1 if the last run passed but was slow", _degraded),
    _Family(
        "prober_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last success",
        _per_check(lambda s: s.last_success),
    ),
    _Family(
        "prober_step_success",
        "gauge",
        "1 if the step's last run succeeded",
        _per_step(lambda st: st.success, full_only=False),
    ),
    _Family(
        "prober_step_reused",
        "gauge",
        "1 if the session step's last run reused a cached login instead of logging in",
        _per_step(lambda st: st.reused, full_only=False),
    ),
    _Family(
        "prober_step_propagation_seconds",
        "gauge",
        "A polled step's last run: seconds until what an earlier step wrote could be read",
        _per_step(lambda st: st.waited, full_only=False),
    ),
    _Family(
        "prober_check_accounts_probed",
        "gauge",
        "Accounts a pooled flow's last run probed",
        _per_check(lambda s: s.accounts_probed),
    ),
    _Family(
        "prober_check_accounts_failed",
        "gauge",
        "Accounts a pooled flow's last run failed for",
        _per_check(lambda s: s.accounts_failed),
    ),
    _Family(
        "prober_step_accounts_failed",
        "gauge",
        "Accounts each step of a pooled flow's last run failed for",
        _per_step(lambda st: st.accounts_failed, full_only=False),
    ),
    _Family(
        "prober_step_duration_seconds", "histogram", "Duration of flow steps", _step_histograms
    ),
    _Family(
        "probe_http_redirects",
        "gauge",
        "Redirects followed by each step's request",
        _per_step(lambda st: st.redirects),
    ),
    _Family(
        "probe_http_content_length",
        "gauge",
        "Content-Length of the response, -1 if absent",
        _per_step(lambda st: st.content_length),
    ),
    _Family(
        "probe_http_uncompressed_body_length",
        "gauge",
        "Body bytes read after decompression",
        _per_step(lambda st: st.body_length),
    ),
    _Family(
        "probe_http_version",
        "gauge",
        "HTTP version of each step's response",
        _per_step(lambda st: st.http_version),
    ),
    _Family("probe_tls_version_info", "gauge", "TLS version each step negotiated", _tls_versions),
    _Family(
        "probe_tcp_duration_seconds",
        "gauge",
        "Seconds per phase of a tcp check",
        _phased(TCP_PHASE_NAMES, lambda f: f.tcp_phases),
    ),
    _Family(
        "probe_dns_lookup_time_seconds",
        "gauge",
        "Name resolution (tcp) or query (dns) time",
        _per_check(lambda s: s.dns_lookup),
    ),
    _Family(
        "probe_dns_answer_rrs",
        "gauge",
        "Records in the answer section of a dns check",
        _per_check(lambda s: s.dns_answers),
    ),
)


def _head(family: _Family, openmetrics: bool) -> bytes:
    """HELP and TYPE lines; OpenMetrics names a counter family without its `_total` suffix."""
    name = family.name
    if openmetrics and family.kind == "counter":
        name = name.removesuffix("_total")
    return f"# HELP {name} {family.help}\n# TYPE {name} {family.kind}\n".encode()


_TEXT_HEADS = tuple(_head(f, openmetrics=False) for f in FAMILIES)
_OPENMETRICS_HEADS = tuple(_head(f, openmetrics=True) for f in FAMILIES)


def _render_check(s: _CheckSeries) -> tuple[bytes, ...]:
    """The check's text, one chunk per family in FAMILIES order."""
    return tuple(_render_family(s, family).encode() for family in FAMILIES)


def _render_family(s: _CheckSeries, family: _Family) -> str:
    return "".join(
        f"{name}{{{s.labels},{_labels(extra)}}} {_number(value)}\n"
        if extra
        else f"{name}{{{s.labels}}} {_number(value)}\n"
        for name, extra, value in family.samples(s, family.name)
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
        self.extra_runs = Counter(
            "prober_confirmation_runs",
            "Runs made at once, besides the schedule: to confirm a check's change of state "
            "(trigger=confirm) or to re-check a component that changed (trigger=sweep)",
            ["trigger"],
            registry=registry,
        )
        for trigger in ("confirm", "sweep"):
            self.extra_runs.labels(trigger=trigger)
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
            self.verdict.labels(state=state).set(1 if state == VerdictState.PENDING else 0)

    def set_verdict(self, state: str) -> None:
        for name in VERDICT_STATES:
            self.verdict.labels(state=name).set(1 if name == state else 0)


class _VerdictCollector:
    """prober_component_state and prober_verdict_scope, built fresh on each scrape."""

    def __init__(
        self,
        conditions: Callable[[], Mapping[str, Condition]],
        scope: Callable[[], Scope],
        shares: Callable[[], Mapping[str, float]],
        global_labels: Callable[[], tuple[tuple[str, str], ...]],
    ) -> None:
        self._conditions = conditions
        self._scope = scope
        self._shares = shares
        self._global_labels = global_labels

    def collect(self) -> Iterator[Metric]:
        pairs = self._global_labels()
        names = [k for k, _ in pairs]
        values = [v for _, v in pairs]
        components = GaugeMetricFamily(
            "prober_component_state",
            "1 for each component's confirmed state (ok, degraded, down, pending), else 0",
            labels=["component", "state", *names],
        )
        for component, condition in sorted(self._conditions().items()):
            for state in Condition:
                value = 1.0 if state is condition else 0.0
                components.add_metric([component, state.value, *values], value)
        yield components
        shares = GaugeMetricFamily(
            "prober_component_failing_share",
            "Share of sampled accounts failing, per component with a pooled flow (recent runs)",
            labels=["component", *names],
        )
        for component, share in sorted(self._shares().items()):
            shares.add_metric([component, *values], share)
        yield shares
        scope = GaugeMetricFamily(
            "prober_verdict_scope",
            "1 for how far the trouble this prober sees reaches (none, prober, component, "
            "platform); vantage is derived by the rules",
            labels=["scope", *names],
        )
        current = self._scope()
        for each in Scope:
            if each is not Scope.VANTAGE:
                scope.add_metric([each.value, *values], 1.0 if each is current else 0.0)
        yield scope


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
        self._global_labels: Pairs = ()

    def watch_sessions(self, events: Mapping[tuple[str, str], int]) -> None:
        """Export the session store's event counts."""
        self.registry.register(_SessionCollector(events))

    def watch_verdict(
        self,
        conditions: Callable[[], Mapping[str, Condition]],
        scope: Callable[[], Scope],
        shares: Callable[[], Mapping[str, float]],
    ) -> None:
        """Export each component's confirmed state (and failing share of accounts) and the
        verdict's scope, read at scrape time, with the global labels (`vantage`) that the
        rules' vantage vote needs."""
        collector = _VerdictCollector(conditions, scope, shares, lambda: self._global_labels)
        self.registry.register(collector)

    def apply(self, checks: Mapping[str, SeriesPlan], global_labels: Mapping[str, str]) -> None:
        """Keep series of unchanged checks; drop removed ones; start new ones at zero.

        `checks` maps each check name to its plan (`SeriesPlan.of(check)`); a check whose
        labels or plan changed starts again at zero.
        """
        pairs = tuple(sorted(global_labels.items()))
        if pairs != self._global_labels:
            self._checks.clear()
            self._global_labels = pairs
        kept: dict[str, _CheckSeries] = {}
        for name, plan in checks.items():
            label_pairs = (("check", name), *plan.labels, *pairs)
            existing = self._checks.get(name)
            if existing is not None and (existing.label_pairs, existing.plan) == (
                label_pairs,
                plan,
            ):
                kept[name] = existing
            else:
                kept[name] = _CheckSeries(
                    labels=_labels(label_pairs), label_pairs=label_pairs, plan=plan
                )
        self._checks = kept

    def record(self, result: Result) -> None:
        """Update the check's series from one run's Result."""
        series = self._checks.get(result.check)
        if series is None:
            return  # removed by a reload while it ran
        series.record(result)
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
        checks from stalling probes for the whole join. With `openmetrics` it is OpenMetrics
        1.0 from the same cached per-check text (see prober/web/exposition.py).
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
        series.chunks = _render_check(series)
        return series.chunks

    def collect(self) -> Iterator[Metric]:
        """The per-check series as prometheus-client families (the reference rendering)."""
        for family in FAMILIES:
            name = family.name.removesuffix("_total") if family.kind == "counter" else family.name
            metric = Metric(name, family.help, family.kind)
            for s in self._checks.values():
                base = dict(s.label_pairs)
                for sample, extra, value in family.samples(s, family.name):
                    metric.add_sample(sample, {**base, **dict(extra)}, value)
            yield metric
