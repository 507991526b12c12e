"""What a per-check family is: its name, type and help, how it keeps what a run's facts say
(`FactsFamily.note`) and how it reads its samples back off a check's state (`samples`).

Two sorts: a `CheckFamily` reads the run-wide state with a sampler of its own; a
`FactsFamily` reads one value off each step's facts of its types and keeps it per step and,
combined over the run's steps, per check. The tables of families are in families.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from prober.sinks.metrics.state import CheckSeries, Pairs, Sample, StepSeries, Value, with_labels

_F = TypeVar("_F")


class Scope(Enum):
    """Where a facts family's samples come from."""

    CHECK = "check"  # one per check, from its last run's steps combined
    RUN = "run"  # per step with `detail: full`, else per check
    FULL = "full"  # per step, with `detail: full` only


# ---- check-wide families: read off the run-wide state

_Sampler = Callable[[CheckSeries, str], Iterator[Sample]]


@dataclass(frozen=True, slots=True)
class CheckFamily:
    """A family read off a check's run-wide state by its own sampler."""

    name: str
    type: str
    help: str
    sampler: _Sampler

    def samples(self, series: CheckSeries) -> Iterator[Sample]:
        return self.sampler(series, self.name)


def per_check(read: Callable[[CheckSeries], float | None]) -> _Sampler:
    """A gauge with one value per check."""

    def samples(s: CheckSeries, name: str) -> Iterator[Sample]:
        value = read(s)
        if value is not None:
            yield name, (), value

    return samples


def per_step(read: Callable[[StepSeries], float | None]) -> _Sampler:
    """A gauge per step, for checks whose steps have series of their own."""

    def samples(s: CheckSeries, name: str) -> Iterator[Sample]:
        for step in s.steps.values() if s.keeps_steps else ():
            value = read(step)
            if value is not None:
                yield name, step.extra, value

    return samples


def check_histogram(s: CheckSeries, name: str) -> Iterator[Sample]:
    return s.histogram.samples(name)


def step_histograms(s: CheckSeries, name: str) -> Iterator[Sample]:
    for step in s.steps.values() if s.plan.full else ():
        if step.duration is not None:
            yield from step.duration.samples(name, step.extra)


def runs(s: CheckSeries, name: str) -> Iterator[Sample]:
    for result, count in s.runs.items():
        yield name, (("result", result),), count


def failures(s: CheckSeries, name: str) -> Iterator[Sample]:
    keys = list(s.failures) if s.plan.full else [s.last_failure] if s.last_failure else []
    for reason, step in keys:
        yield name, (("reason", reason), ("failed_step", step)), s.failures[(reason, step)]


def attempts(s: CheckSeries, name: str) -> Iterator[Sample]:
    if s.plan.attempts:
        yield name, (), s.attempts


def degraded(s: CheckSeries, name: str) -> Iterator[Sample]:
    if s.plan.degraded and s.degraded is not None:
        yield name, (), s.degraded


# ---- facts families: what a step's facts say, kept per check and per step

# How a check's value is made of its run's steps' values: (step name, value) in step order,
# and the step that failed the run ("" if none).
_Combine = Callable[[Sequence[tuple[str, Any]], str], Any]
# How a kept value becomes samples: (family name, extra labels, value).
_Shape = Callable[[str, Pairs, Any], Iterator[Sample]]


def shown(values: Sequence[tuple[str, Any]], failed_step: str) -> Any:
    """The value of the step that failed the run, else of the last step."""
    return next((v for step, v in values if step == failed_step), values[-1][1])


def last(values: Sequence[tuple[str, Any]], _failed_step: str) -> Any:
    """The value of the last step that had one."""
    return values[-1][1]


def summed(values: Sequence[tuple[str, Any]], _failed_step: str) -> Any:
    """Each phase summed over the steps: the check's phases, which add up to its run."""
    return tuple(sum(column) for column in zip(*(v for _, v in values), strict=True))


def earliest(values: Sequence[tuple[str, Any]], _failed_step: str) -> Any:
    """The smallest value (the earliest time) of any step."""
    return min(v for _, v in values)


def _scalar(name: str, extra: Pairs, value: float) -> Iterator[Sample]:
    yield name, extra, value


def phased(phase_names: tuple[str, ...]) -> _Shape:
    """One sample per phase, labelled `phase`."""

    def samples(name: str, extra: Pairs, value: tuple[float, ...]) -> Iterator[Sample]:
        for labels, seconds in zip(with_labels(extra, "phase", phase_names), value, strict=False):
            yield name, labels, seconds

    return samples


def info(label: str) -> _Shape:
    """One sample of 1 whose `label` holds the value (`probe_tls_version_info{version}`)."""

    def samples(name: str, extra: Pairs, value: str) -> Iterator[Sample]:
        yield name, (*extra, (label, value)), 1.0

    return samples


def labelled(name: str, extra: Pairs, value: Pairs) -> Iterator[Sample]:
    """One sample of 1 whose labels are the value (`probe_ssl_last_chain_info{...}`)."""
    yield name, (*extra, *value), 1.0


@dataclass(frozen=True, slots=True, eq=False)  # keyed by identity: hashed per run
class FactsFamily:
    """A gauge read off the facts of each step that has facts of its `sources`' types.

    A value read as None leaves the one kept (a failed run keeps the last TLS version seen).
    """

    name: str
    help: str
    sources: tuple[type, ...]
    read: Callable[[Any], Value | None]
    scope: Scope
    combine: _Combine = shown
    shape: _Shape = _scalar
    type: str = "gauge"

    def note(self, series: CheckSeries, values: Sequence[tuple[str, Value]], failed: str) -> bool:
        """Keep what the run's steps said: per step where they have series, and combined
        per check where this family has check-wide samples. False when this check keeps
        nothing of it (a `detail: full` family of a basic check): its samples stay as
        they were, so its rendered text need not be looked at again."""
        kept = False
        if series.keeps_steps:
            for step, value in values:
                series.step(step).values[self.name] = value
            kept = True
        if self.scope is not Scope.FULL:
            series.values[self.name] = self.combine(values, failed)
            kept = True
        return kept

    def samples(self, series: CheckSeries) -> Iterator[Sample]:
        for extra, values in self._kept(series):
            value = values.get(self.name)
            if value is not None:
                yield from self.shape(self.name, extra, value)

    def _kept(self, series: CheckSeries) -> Iterator[tuple[Pairs, Mapping[str, Value]]]:
        """Where the values to show are: the check's, or each step's with `detail: full`."""
        if self.scope is Scope.CHECK or (self.scope is Scope.RUN and not series.plan.full):
            yield (), series.values
        elif series.plan.full:
            for step in series.steps.values():
                yield step.extra, step.values


def facts_family(
    source: type[_F],
    name: str,
    help: str,
    read: Callable[[_F], Value | None],
    scope: Scope,
    combine: _Combine = shown,
    shape: _Shape = _scalar,
    also: tuple[type, ...] = (),
) -> FactsFamily:
    """A family of facts of the `source` type (and of the `also` types, which have the same
    fields that `read` reads)."""
    return FactsFamily(name, help, (source, *also), read, scope, combine, shape)


Family = CheckFamily | FactsFamily


@dataclass(frozen=True, slots=True)
class FamilyTable:
    """The families of one kind. The exposition shows every table's `leading` families
    (blackbox_exporter's headline series) before every table's `trailing` ones."""

    leading: tuple[Family, ...] = ()
    trailing: tuple[Family, ...] = ()
