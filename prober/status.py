"""Recent results per check, for the verdict, /api/status and the status page."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prober.result import Result
from prober.uptime import Uptime
from prober.verdict import CheckState, Tally, Verdict, judge

HISTORY = 30
# The verdict judges each check by its last few runs, so one lost request (or one lucky one
# during an outage with a 60% error rate) does not flip the platform's state.
VERDICT_RUNS = 3


class Run(NamedTuple):
    """One run as the history keeps it: when, whether it passed, why not, how long."""

    started_at: float
    success: bool
    reason: str
    duration: float


@dataclass
class _CheckStatus:
    component: str
    kind: str
    last: Result | None = None
    last_success_at: float | None = None
    failing_since: float | None = None
    history: deque[Run] = field(default_factory=lambda: deque(maxlen=HISTORY))
    uptime: Uptime = field(default_factory=Uptime)


def _recent_success(status: _CheckStatus) -> bool | None:
    if not status.history:
        return None
    recent = list(status.history)[-VERDICT_RUNS:]
    failures = sum(1 for run in recent if not run.success)
    return failures * 2 <= len(recent)


def _verdict_view(name: str, status: _CheckStatus) -> CheckState:
    return CheckState(
        name, status.component, _recent_success(status), bool(status.last and status.last.degraded)
    )


class StatusSink:
    """Keeps a bounded history per check and the latest verdict."""

    def __init__(self) -> None:
        self._checks: dict[str, _CheckStatus] = {}
        self._states: dict[str, CheckState] = {}
        self._tallies: dict[str, Tally] = {}
        self.verdict = Verdict("ok", "no results yet")
        self.verdict_at = 0.0

    def apply(self, checks: Mapping[str, tuple[str, str]]) -> None:
        """Track exactly these checks (name -> (component, kind)), keeping known history."""
        kept: dict[str, _CheckStatus] = {}
        for name, (component, kind) in checks.items():
            existing = self._checks.get(name)
            if existing is not None and existing.component == component:
                existing.kind = kind
                kept[name] = existing
            else:
                kept[name] = _CheckStatus(component, kind)
        self._checks = kept
        self._states = {name: _verdict_view(name, s) for name, s in kept.items()}
        self._tallies = {}
        for state in self._states.values():
            self._tallies.setdefault(state.component, Tally()).add(state)

    def record(self, result: Result) -> None:
        status = self._checks.get(result.check)
        if status is None:
            return
        status.last = result
        if result.success:
            status.last_success_at = result.started_at + result.duration
            status.failing_since = None
        elif status.failing_since is None:
            status.failing_since = result.started_at
        status.history.append(
            Run(result.started_at, result.success, str(result.reason or ""), result.duration)
        )
        status.uptime.record(result.started_at, result.success)
        new = _verdict_view(result.check, status)
        old = self._states[result.check]
        if new != old:
            tally = self._tallies[status.component]
            tally.add(old, -1)
            tally.add(new)
            self._states[result.check] = new

    def failing_since(self, name: str) -> float | None:
        """When the check's current run of failures began (unix time); None if passing."""
        status = self._checks.get(name)
        return status.failing_since if status is not None else None

    def states(self) -> list[CheckState]:
        """Each check as the verdict sees it: failing when most of its last runs failed."""
        return list(self._states.values())

    def evaluate(self, loop_lag_p99: float, lag_budget: float) -> Verdict:
        """The verdict from per-component counts kept up to date by `record`."""
        self.verdict = judge(self._tallies, loop_lag_p99, lag_budget)
        self.verdict_at = time.time()
        return self.verdict

    def snapshot(self, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Plain JSON for /api/status: verdict, components, checks. Messages are secret-free.

        `labels` are the config's global labels (`vantage`, ...), shown with the verdict.
        """
        verdict = self.verdict
        now = time.time()
        return {
            "labels": dict(labels or {}),
            "verdict": verdict.state,
            "summary": verdict.summary,
            "evaluated_at": self.verdict_at,
            "components": [
                {"name": c.name, "state": c.state, "failing": c.failing, "checks": c.total}
                for c in verdict.components
            ],
            "checks": [self._check_json(name, s, now) for name, s in sorted(self._checks.items())],
        }

    @staticmethod
    def _check_json(name: str, status: _CheckStatus, now: float) -> dict[str, Any]:
        last = status.last
        return {
            "name": name,
            "component": status.component,
            "kind": status.kind,
            "state": "pending" if last is None else ("ok" if last.success else "failing"),
            "degraded": bool(last and last.degraded),
            "reason": str(last.reason) if last and last.reason else None,
            "failed_step": last.failed_step if last and last.failed_step else None,
            "message": last.message if last else "",
            "duration_seconds": last.duration if last else None,
            "last_run": last.started_at if last else None,
            "last_success": status.last_success_at,
            "failing_since": status.failing_since,
            "uptime_24h": status.uptime.share(now, 24),
            "uptime_7d": status.uptime.share(now, 24 * 7),
            "history": [run.success for run in status.history],
            "recent_runs": [_run_json(run) for run in status.history],
        }


def _run_json(run: Run) -> dict[str, Any]:
    """One history entry for the status page's dots, tooltips and response-time sparkline."""
    return {
        "at": run.started_at,
        "ok": run.success,
        "reason": run.reason or None,
        "seconds": round(run.duration, 6),
    }
