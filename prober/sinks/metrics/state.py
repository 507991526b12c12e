"""What each check's series hold between scrapes: the state a run's Result updates.

Run-wide values (success, duration, counts, histograms, each step's success) are fields;
the values read off the steps' facts are kept by family name in `values` (the check's, and
each step's), written by the family tables (families.py), which say how each is read.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from prober.config.model import Check
from prober.result import Result, StepResult

# Buckets of the check and step duration histograms, chosen for API calls: a probe pays DNS,
# TCP and TLS on every run, so a healthy API answers it in tens to hundreds of milliseconds;
# the bounds sit at the latency objectives set for API calls (100 ms to 1 s) plus 2.5 s for
# "badly slow". Slower runs land in +Inf; probe_duration_seconds keeps the exact figure.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5)

Pairs = tuple[tuple[str, str], ...]
# One sample of a family: its full name (`_bucket`, `_total`, ...), the labels it adds to
# the check's own, and its value.
Sample = tuple[str, Pairs, float]
# What a family keeps of a step's facts: a number, one per phase, or a label's value.
# A kept value: a number, phases, an info label's value, or an info series' labels.
Value = float | tuple[float, ...] | str | Pairs


def number_text(value: float) -> str:
    """A sample value as the text formats write it."""
    if value - value == 0:  # finite: the common case, checked first (inf - inf is nan)
        return repr(float(value))
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


_BUCKET_LABELS = tuple(number_text(bound) for bound in (*DURATION_BUCKETS, math.inf))


@lru_cache(maxsize=1024)
def with_labels(extra: Pairs, label: str, values: tuple[str, ...]) -> tuple[Pairs, ...]:
    """`extra` plus `label="value"`, one tuple per value, made once and shared: the label
    sets of buckets and phases are few, and a check keeps the samples it last rendered."""
    return tuple((*extra, (label, value)) for value in values)


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
class Histogram:
    """A duration histogram over DURATION_BUCKETS."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def samples(self, name: str, extra: Pairs = ()) -> Iterator[Sample]:
        """Cumulative buckets, then count and sum, as the text format orders them."""
        running = 0
        bucket = f"{name}_bucket"
        for labels, count in zip(
            with_labels(extra, "le", _BUCKET_LABELS), self.counts, strict=True
        ):
            running += count
            yield bucket, labels, running
        yield f"{name}_count", extra, running
        yield f"{name}_sum", extra, self.total


@dataclass(kw_only=True)
class StepSeries:
    """One step's last run, kept for flows and for checks with `detail: full`."""

    extra: Pairs
    success: float | None = None
    duration: Histogram | None = None  # only with detail: full
    accounts_failed: float | None = None  # a pooled flow's step: accounts it failed for
    reused: float | None = None  # a session step: 1 if its last run reused a login
    waited: float | None = None  # a polled step: how long its write took to show
    values: dict[str, Value] = field(default_factory=dict)  # by family, from its facts

    def update(self, step: StepResult) -> None:
        """What one run of the step says besides its facts."""
        self.success = 1.0 if step.success else 0.0
        if step.accounts:
            self.accounts_failed = float(step.accounts_failed)
        if step.waited is not None:
            self.waited = step.waited
        if self.reused is not None:
            self.reused = 0.0
        if self.duration is not None:
            self.duration.observe(step.duration)


@dataclass(kw_only=True)
class CheckSeries:
    """Everything exported for one check, plus its cached text per family."""

    labels: str
    label_pairs: Pairs
    plan: SeriesPlan
    success: float | None = None
    duration: float | None = None
    last_success: float | None = None
    degraded: float | None = None
    accounts_probed: float | None = None  # a pooled flow's last run
    accounts_failed: float | None = None
    runs: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    attempts: int = 0
    # Every (reason, failed step) ever seen is counted; `detail: basic` exports only the
    # latest, so a check's failure series stay bounded at one.
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    last_failure: tuple[str, str] | None = None
    histogram: Histogram = field(default_factory=Histogram)
    steps: dict[str, StepSeries] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)  # by family, from the run's facts
    chunks: tuple[bytes, ...] | None = None
    # The samples `chunks` were rendered from, per family: unchanged families keep their bytes.
    rendered: tuple[tuple[Sample, ...], ...] | None = None

    @property
    def keeps_steps(self) -> bool:
        """Whether the check's steps have series of their own (a flow, or `detail: full`)."""
        return self.plan.full or self.plan.steps

    def step(self, name: str) -> StepSeries:
        series = self.steps.get(name)
        if series is None:
            histogram = Histogram() if self.plan.full else None
            series = StepSeries(extra=(("step", name),), duration=histogram)
            self.steps[name] = series
        return series

    def record(self, result: Result) -> None:
        """Update the run-wide series from one run's Result (the facts go by family)."""
        self.success = 1.0 if result.success else 0.0
        self.duration = result.duration
        self.degraded = 1.0 if result.degraded else 0.0
        self.runs["success" if result.success else "failure"] += 1
        self.attempts += result.attempts
        self.histogram.observe(result.duration)
        if result.success:
            self.last_success = result.started_at + result.duration
        if result.accounts:
            self.accounts_probed = float(len(result.accounts))
            self.accounts_failed = float(result.accounts_failed)
        for failure in result.failures:
            key = (str(failure.reason), failure.failed_step)
            self.failures[key] = self.failures.get(key, 0) + 1
            self.last_failure = key
        if self.keeps_steps:
            for step in ran_steps(result):
                self.step(step.name).update(step)
            for step in result.steps:
                if step.cached:  # the step keeps its series; this says its login was reused
                    self.step(step.name).reused = 1.0


def ran_steps(result: Result) -> Sequence[StepResult]:
    """The steps of a run that made a request (not a reused login)."""
    return [step for step in result.steps if not step.cached]
