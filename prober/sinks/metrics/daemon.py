"""The daemon's own series (loop lag, scheduling, reloads, verdict, sessions), kept in the
private prometheus-client registry the daemon owns: no global registry, so tests can run
several daemons in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from prober import __version__
from prober.sinks.verdict import Condition, Scope, VerdictState

LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# prober_verdict's series are made best state first, so the exposition lists them so.
_VERDICT_ORDER = tuple(reversed(VerdictState))


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
        self.set_verdict(VerdictState.PENDING)

    def set_verdict(self, state: VerdictState) -> None:
        """1 for the current state, 0 for every other one."""
        for each in _VERDICT_ORDER:
            self.verdict.labels(state=each.value).set(1 if each is state else 0)


class VerdictCollector:
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


class SessionCollector:
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
