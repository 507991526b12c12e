"""Results -> Prometheus text exposition, within a series budget per check.

The sink keeps each check's series (state.py), updated from each run's Result by the family
tables (families.py); it renders a check's text once per run and a scrape joins the cached
chunks (render.py), as text 0.0.4 or OpenMetrics 1.0. The daemon's own series use
prometheus-client in a private registry (daemon.py).

By default (`detail: basic`) a check exports one latency histogram, and its phases and
status once per check rather than once per step: a one-step http check stays within 20
series (docs/METRICS.md). `detail: full` adds histograms, phases and HTTP facts per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from prober.result import Result
from prober.sinks.metrics.daemon import DaemonMetrics, SessionCollector, VerdictCollector
from prober.sinks.metrics.families import record
from prober.sinks.metrics.render import (
    OPENMETRICS_HEADS,
    TEXT_HEADS,
    label_text,
    reference_families,
    render_check,
)
from prober.sinks.metrics.state import CheckSeries, Pairs, SeriesPlan
from prober.sinks.verdict import Condition, Scope

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape's pieces: the handler yields to the loop between them. Each piece holds the loop
# for its join (a 1 MB piece held it 5-15 ms at 1,000 checks, the p99 of probes then).
RENDER_CHUNK = 1 << 16
# prometheus-client's OpenMetrics writer has no type hints; this is its signature.
_openmetrics_latest: Callable[[CollectorRegistry], bytes] = openmetrics_exposition.generate_latest


class MetricsSink:
    """Turns Results into series; renders them fast; forgets checks removed by a reload."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.daemon = DaemonMetrics(self.registry)
        self._checks: dict[str, CheckSeries] = {}
        self._global_labels: Pairs = ()

    def watch_sessions(self, events: Mapping[tuple[str, str], int]) -> None:
        """Export the session store's event counts."""
        self.registry.register(SessionCollector(events))

    def watch_verdict(
        self,
        conditions: Callable[[], Mapping[str, Condition]],
        scope: Callable[[], Scope],
        shares: Callable[[], Mapping[str, float]],
    ) -> None:
        """Export each component's confirmed state (and failing share of accounts) and the
        verdict's scope, read at scrape time, with the global labels (`vantage`) that the
        rules' vantage vote needs."""
        collector = VerdictCollector(conditions, scope, shares, lambda: self._global_labels)
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
        kept: dict[str, CheckSeries] = {}
        for name, plan in checks.items():
            label_pairs = (("check", name), *plan.labels, *pairs)
            existing = self._checks.get(name)
            if existing is not None and (existing.label_pairs, existing.plan) == (
                label_pairs,
                plan,
            ):
                kept[name] = existing
            else:
                kept[name] = CheckSeries(
                    labels=label_text(label_pairs), label_pairs=label_pairs, plan=plan
                )
        self._checks = kept

    def record(self, result: Result) -> None:
        """Update the check's series from one run's Result."""
        series = self._checks.get(result.check)
        if series is None:
            return  # removed by a reload while it ran
        noted = record(series, result)
        # Render the check's text now, one check at a time, rather than all dirty checks
        # in the scrape: at 10,000 checks that would stall the event loop for a second.
        series.chunks = render_check(series, noted)

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
        heads = OPENMETRICS_HEADS if openmetrics else TEXT_HEADS
        parts: list[bytes] = []
        pending = 0
        for index, head in enumerate(heads):
            parts.append(head)
            for column in columns:
                chunk = column[index]
                if not chunk:  # most families have no samples for most checks
                    continue
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
    def _cache(series: CheckSeries) -> tuple[bytes, ...]:
        series.chunks = render_check(series)
        return series.chunks

    def collect(self) -> Iterator[Metric]:
        """The per-check series as prometheus-client families (the reference rendering):
        register the sink in a registry of its own to compare it with `render`."""
        return reference_families(self._checks.values())
