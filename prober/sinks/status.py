"""Recent results per check, confirmed before they count, for the verdict, /api/status and
the status page."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prober.result import Result
from prober.sinks.uptime import Uptime
from prober.sinks.verdict import (
    CANARY,
    CheckCondition,
    CheckState,
    Condition,
    Tally,
    Verdict,
    VerdictState,
    judge,
)
from prober.sinks.votes import (
    PARTIAL_WINDOW,
    PROBER_OWN_FAILURES,
    Followup,
    Vote,
    Vouches,
    account_votes,
)

HISTORY = 30
# A vote older than this many intervals is unknown: a check that stopped running is not ok.
STALE_INTERVALS = 3
# At most this many other checks are re-run at once when a component changes state.
SWEEP_MAX = 50
PENDING, OK = Condition.PENDING, Condition.OK
# A canary that ran less than this long ago is not re-run when a platform check fails.
CANARY_RERUN_GAP = 1.0


@dataclass(frozen=True, slots=True)
class Watched:
    """What the status sink needs to know of one configured check."""

    component: str
    kind: str
    interval: float
    # Flow steps that belong to another component than the check's (a login step).
    step_components: Mapping[str, str] = field(default_factory=dict)
    pooled: bool = False  # runs as several accounts (accounts, fanout)

    def component_of(self, step: str) -> str:
        return self.step_components.get(step, self.component)


class Run(NamedTuple):
    """One run as the history keeps it: when, whether it passed, why not, how long."""

    started_at: float
    success: bool
    reason: str
    duration: float


@dataclass
class _CheckStatus:
    watched: Watched
    last: Result | None = None
    last_run_at: float = 0.0  # monotonic
    last_success_at: float | None = None
    failing_since: float | None = None
    votes: dict[str, Vote] = field(default_factory=dict)
    history: deque[Run] = field(default_factory=lambda: deque(maxlen=HISTORY))
    uptime: Uptime = field(default_factory=Uptime)

    @property
    def suspect(self) -> frozenset[str]:
        """The components on which a run disagreed with the confirmed state, or on which a
        pooled run's accounts left the partial state unsettled: run it again now."""
        return frozenset(c for c, v in self.votes.items() if v.streak or v.unsettled)


class StatusSink:
    """Keeps a bounded history per check, confirmed votes per component, and the verdict."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._checks: dict[str, _CheckStatus] = {}
        self._tallies: dict[str, Tally] = {}
        self._voters: dict[str, list[Vote]] = {}
        self._vouches = Vouches()  # the canary passes that vouch for the prober
        self.verdict = Verdict(VerdictState.PENDING, "no results yet")
        self.verdict_at = 0.0

    def apply(self, checks: Mapping[str, Watched]) -> None:
        """Track exactly these checks, keeping the history of those that did not change."""
        kept: dict[str, _CheckStatus] = {}
        for name, watched in checks.items():
            existing = self._checks.get(name)
            if existing is not None and existing.watched == watched:
                kept[name] = existing
            else:
                kept[name] = _CheckStatus(watched)
        self._checks = kept
        self._tallies = {}
        self._voters = {}
        for status in kept.values():
            for component in {status.watched.component, *status.watched.step_components.values()}:
                self._tallies.setdefault(component, Tally())
            for vote in status.votes.values():
                self._voters.setdefault(vote.component, []).append(vote)
                vote.counted = None
                self._recount(vote, stale=False)

    def _recount(self, vote: Vote, stale: bool) -> bool:
        """Bring the component's tally in line with the vote; True when it changed."""
        new = vote.view(stale)
        if new == vote.counted:
            return False
        tally = self._tallies.setdefault(vote.component, Tally())
        if vote.counted is not None:
            tally.add(vote.counted, -1)
        tally.add(new)
        vote.counted = new
        return True

    def record(self, result: Result) -> Followup:
        """Take one run's result; say whether to confirm it and which checks to re-run."""
        status = self._checks.get(result.check)
        if status is None:
            return Followup()
        now = self._clock()
        status.last, status.last_run_at = result, now
        status.history.append(
            Run(result.started_at, result.success, str(result.reason or ""), result.duration)
        )
        if result.reason not in PROBER_OWN_FAILURES:  # the prober's trouble is not downtime
            status.uptime.record(result.started_at, result.success)
        if result.success:
            status.last_success_at = result.started_at + result.duration
        if status.watched.component == CANARY and result.success:
            self._vouches.add(now - result.duration, now)
        flipped: set[str] = set()
        newly_suspect = False
        for component, (probed, failed) in account_votes(result, status.watched).items():
            changed, suspect = self._count(status, result, component, probed, failed, now)
            if changed:
                flipped.add(component)
            newly_suspect |= suspect
        self._note_failing_since(status, result)
        return Followup(status.suspect, self._reruns(status, result, flipped, newly_suspect, now))

    def _count(
        self,
        status: _CheckStatus,
        result: Result,
        component: str,
        probed: int,
        failed: int,
        now: float,
    ) -> tuple[bool, bool]:
        """Count one run's word on a component: (its state changed, it just turned suspect)."""
        vote = self._vote(status, result.check, component)
        if component == status.watched.component:
            vote.degraded = result.degraded
        before = self._tallies[component].state()
        was_suspect = vote.streak > 0
        changed = vote.record(failed, probed, now, began=now - result.duration)
        self._recount(vote, stale=False)
        after = self._tallies[component].state()
        # A component that changed state is re-checked at once; becoming known and ok (every
        # start) is no change worth a sweep.
        flipped = changed and after != before and (before, after) != (PENDING, OK)
        suspect = (vote.streak > 0 and not was_suspect and failed == probed) or (
            vote.unsettled and failed > 0
        )
        return flipped, suspect

    def _reruns(
        self,
        status: _CheckStatus,
        result: Result,
        flipped: set[str],
        newly_suspect: bool,
        now: float,
    ) -> dict[str, frozenset[str]]:
        """Other checks to run at once, each with the components it re-checks."""
        sweep = dict.fromkeys(self._sweep(result.check, flipped), frozenset(flipped))
        canary = status.watched.component == CANARY
        if not canary and (newly_suspect or self.held_components()) and self._canaries_idle(now):
            # Ask the canaries as soon as a platform check starts failing, so one has
            # vouched by the time the failure is confirmed; and again while a component
            # is held for want of one (at most once a second, however many checks report).
            sweep.update(dict.fromkeys(self._canaries(), frozenset({CANARY})))
        if canary and result.success:
            # Vouching needs a platform failure seen after this pass: re-run what is held.
            for component in self.held_components():
                for vote in self._voters.get(component, []):
                    sweep.setdefault(vote.check, frozenset({component}))
        return sweep

    def _vote(self, status: _CheckStatus, check: str, component: str) -> Vote:
        vote = status.votes.get(component)
        if vote is None:
            samples: deque[bool] | None = (
                deque(maxlen=PARTIAL_WINDOW) if status.watched.pooled else None
            )
            vote = status.votes[component] = Vote(check, component, samples=samples)
            self._voters.setdefault(component, []).append(vote)
            self._tallies.setdefault(component, Tally())
        return vote

    @staticmethod
    def _note_failing_since(status: _CheckStatus, result: Result) -> None:
        if not any(v.confirmed is False for v in status.votes.values()):
            status.failing_since = None
        elif status.failing_since is None:
            status.failing_since = result.started_at

    def _sweep(self, origin: str, components: set[str]) -> frozenset[str]:
        """Other checks voting on components that just changed state, least recent first."""
        if not components or components == {CANARY}:
            return frozenset()
        others = [
            (s.last_run_at, name)
            for name, s in self._checks.items()
            if name != origin and any(c in s.votes for c in components)
        ]
        return frozenset(name for _, name in sorted(others)[:SWEEP_MAX])

    def _canaries(self) -> frozenset[str]:
        """The canaries: one that passes after a platform check began to fail vouches that
        the prober itself could still reach a healthy endpoint then."""
        return frozenset(n for n, s in self._checks.items() if s.watched.component == CANARY)

    def _canaries_idle(self, now: float) -> bool:
        """No canary has run in the last CANARY_RERUN_GAP seconds."""
        return all(
            now - s.last_run_at > CANARY_RERUN_GAP
            for s in self._checks.values()
            if s.watched.component == CANARY
        )

    def held_components(self) -> frozenset[str]:
        """Components down that no canary has vouched for since they began to fail (none
        when no canary is configured)."""
        return self._vouches.held(self._tallies, self._voters)

    def forget_stale(self) -> None:
        """Turn votes unknown whose check has not run for STALE_INTERVALS intervals.

        Only stale votes are recounted: `record` (and `apply`) recount a vote as fresh
        whenever it changes, so a fresh vote's count is already right (recounting all took
        3 ms a second at 1,000 checks)."""
        now = self._clock()
        for status in self._checks.values():
            stale_before = now - STALE_INTERVALS * status.watched.interval
            for vote in status.votes.values():
                if vote.seen_at < stale_before:
                    self._recount(vote, stale=True)

    def failing_since(self, name: str) -> float | None:
        """When the check's confirmed failure began (unix time); None while not failing."""
        status = self._checks.get(name)
        return status.failing_since if status is not None else None

    def states(self) -> list[CheckState]:
        """Each check as confirmed: failing when any component it exercises is confirmed
        failing, ok when the others are ok, None while nothing is known."""
        return [self._check_state(name, s) for name, s in self._checks.items()]

    def votes(self) -> list[CheckState]:
        """Each (check, component) pair as the component tallies count it."""
        return [
            v.counted
            for s in self._checks.values()
            for v in s.votes.values()
            if v.counted is not None
        ]

    @staticmethod
    def _check_state(name: str, status: _CheckStatus) -> CheckState:
        known = [v.counted.success for v in status.votes.values() if v.counted is not None]
        known_ok = [k for k in known if k is not None]
        success = None if not known_ok else all(known_ok)
        degraded = bool(status.last and status.last.degraded)
        return CheckState(name, status.watched.component, success, degraded)

    def evaluate(self, loop_lag_p99: float, lag_budget: float) -> Verdict:
        """The verdict from per-component counts kept up to date by `record`."""
        self.verdict = judge(self._tallies, loop_lag_p99, lag_budget, self.held_components())
        self.verdict_at = time.time()
        return self.verdict

    def component_shares(self) -> dict[str, float]:
        """Each component's failing share of accounts over its pooled checks' windows
        (components without a pooled check are left out)."""
        shares: dict[str, float] = {}
        for name, voters in self._voters.items():
            windows = [v.samples for v in voters if v.samples]
            total = sum(len(w) for w in windows)
            if total:
                shares[name] = sum(sum(w) for w in windows) / total
        return shares

    def component_conditions(self) -> dict[str, Condition]:
        """Every component's state now, the canary's included; a component held until a
        canary vouches for the prober is pending."""
        held = self.held_components()
        return {
            name: Condition.PENDING if name in held else tally.state()
            for name, tally in self._tallies.items()
        }

    def snapshot(self, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Plain JSON for /api/status: verdict, components, checks. Messages are secret-free.

        `labels` are the config's global labels (`vantage`, ...), shown with the verdict.
        """
        verdict = self.verdict
        shares = self.component_shares()
        now = time.time()
        return {
            "labels": dict(labels or {}),
            "verdict": verdict.state.value,
            "scope": verdict.scope.value,
            "summary": verdict.summary,
            "evaluated_at": self.verdict_at,
            "components": [
                {
                    "name": c.name,
                    "state": c.state.value,
                    "failing": c.failing,
                    "checks": c.total,
                    "failing_share": shares.get(c.name),
                }
                for c in verdict.components
            ],
            "checks": [self._check_json(name, s, now) for name, s in sorted(self._checks.items())],
        }

    def _check_json(self, name: str, status: _CheckStatus, now: float) -> dict[str, Any]:
        last = status.last
        confirmed = self._check_state(name, status).success
        state = CheckCondition.of(confirmed)
        return {
            "name": name,
            "component": status.watched.component,
            "kind": status.watched.kind,
            "state": state.value,
            "confirming": bool(status.suspect),
            "last_run_ok": None if last is None else last.success,
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
