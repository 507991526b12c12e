"""Recent results per check, confirmed before they count, for the verdict, /api/status and
the status page."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prober.result import Reason, Result, StepResult
from prober.sinks.uptime import Uptime
from prober.sinks.verdict import CANARY, CheckState, Condition, Tally, Verdict, VerdictState, judge

HISTORY = 30
# Runs in a row that must agree before a confirmed state turns failing, or back to ok. The
# daemon re-runs a check at once when a run disagrees with its confirmed state, so one lost
# request never flips a component and a real outage is confirmed within seconds.
CONFIRM_RUNS = 2
# A vote older than this many intervals is unknown: a check that stopped running is not ok.
STALE_INTERVALS = 3
# At most this many other checks are re-run at once when a component changes state.
SWEEP_MAX = 50
PENDING, OK = Condition.PENDING, Condition.OK
# Passing canary runs remembered for vouching (about four minutes at a 15 s interval, and
# the reruns a failing platform asks for).
VOUCHES_KEPT = 32
# A canary that ran less than this long ago is not re-run when a platform check fails.
CANARY_RERUN_GAP = 1.0
# A pooled flow (accounts, fanout) is partial when, over its last PARTIAL_WINDOW account
# samples, the 95% Wilson lower bound of the failing share is above PARTIAL_MIN: one failed
# account in ten is noise (bound about 2%), three in twelve is not (about 9%). It stops
# being partial after RECOVERY_SAMPLES account samples in a row that passed.
PARTIAL_WINDOW = 24
PARTIAL_MIN = 0.05
RECOVERY_SAMPLES = 9
_Z = 1.96


def wilson_lower_bound(failed: int, total: int) -> float:
    """The 95% Wilson score lower bound of the share `failed / total` (0 when total is 0)."""
    if total == 0:
        return 0.0
    share = failed / total
    z2 = _Z * _Z
    centre = share + z2 / (2 * total)
    margin = _Z * math.sqrt(share * (1 - share) / total + z2 / (4 * total * total))
    return max(0.0, (centre - margin) / (1 + z2 / total))


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


@dataclass(slots=True)
class _Vote:
    """What the runs of one check say about one component, once confirmed."""

    check: str
    component: str
    confirmed: bool | None = None
    streak: int = 0  # runs in a row that disagreed with `confirmed`
    seen_at: float = 0.0  # monotonic time of the last run that exercised the component
    disagreeing_since: float = 0.0  # end of the first run of the current streak
    failing_since: float = 0.0  # end of the first failing run, once confirmed failing
    degraded: bool = False
    counted: CheckState | None = None  # what the component's tally holds for it now
    # A pooled flow's account samples (True: the account failed), newest last.
    samples: deque[bool] | None = None
    partial: bool = False
    clean_run: int = 0  # account samples in a row that passed
    last_failed: int = 0  # accounts the last pooled run failed for

    def sample(self, failed: int, probed: int, now: float) -> bool:
        """Count one pooled run's accounts; True when the partial state flips."""
        assert self.samples is not None
        self.samples.extend([True] * failed + [False] * (probed - failed))
        self.last_failed = failed
        self.clean_run = 0 if failed else self.clean_run + probed
        if not self.partial:
            share = wilson_lower_bound(sum(self.samples), len(self.samples))
            if share > PARTIAL_MIN and failed < probed:
                self.partial, self.failing_since = True, now
                return True
        elif self.clean_run >= RECOVERY_SAMPLES or failed == probed:
            self.partial = False  # over, or worse: every account fails (the down machinery)
            return True
        return False

    @property
    def share(self) -> float:
        """The failing share of the accounts in the window."""
        return sum(self.samples) / len(self.samples) if self.samples else 0.0

    @property
    def unsettled(self) -> bool:
        """A pooled run's word that a re-run would settle: failures while not partial, or
        a clean run while partial."""
        if not self.samples:
            return False
        return (self.last_failed > 0 and not self.partial) or (self.partial and self.clean_run > 0)

    def add(self, ok: bool, now: float) -> bool:
        """Count the word of one run that ended `now`; True when the confirmed state flips.

        The streak is dated by when its first run ended, not started: only a canary run
        that starts after a failure was seen can vouch that the prober was fine then (a
        canary that passed while a run which later failed was still waiting proves nothing).
        """
        self.seen_at = now
        if ok == self.confirmed:
            self.streak = 0
            return False
        if not self.streak:
            self.disagreeing_since = now
        self.streak += 1
        # An unknown check turns ok on its first success, but failing only when confirmed.
        if self.streak >= (1 if self.confirmed is None and ok else CONFIRM_RUNS):
            self.confirmed, self.streak = ok, 0
            self.failing_since = self.disagreeing_since
            return True
        return False

    def view(self, stale: bool) -> CheckState:
        success = None if stale else self.confirmed
        partial = self.partial and not stale
        return CheckState(self.check, self.component, success, self.degraded and not stale, partial)


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
    votes: dict[str, _Vote] = field(default_factory=dict)
    history: deque[Run] = field(default_factory=lambda: deque(maxlen=HISTORY))
    uptime: Uptime = field(default_factory=Uptime)

    @property
    def suspect(self) -> frozenset[str]:
        """The components on which a run disagreed with the confirmed state, or on which a
        pooled run's accounts left the partial state unsettled: run it again now."""
        return frozenset(c for c, v in self.votes.items() if v.streak or v.unsettled)


@dataclass(frozen=True, slots=True)
class Followup:
    """What the daemon should run now after recording a result.

    Each entry names the components the extra run is for: its session steps of those
    components log in afresh, so the run exercises what it is re-checking (a cached token's
    success says nothing about login now), while its other steps reuse their sessions.
    """

    confirm: frozenset[str] = frozenset()  # re-run this check, for these components
    sweep: Mapping[str, frozenset[str]] = field(default_factory=dict)  # other checks


# Failures of the prober itself, not of what it probes: they vote on no component.
PROBER_OWN_FAILURES = frozenset({Reason.RESOURCE, Reason.INTERNAL})


def component_votes(result: Result, watched: Watched) -> dict[str, bool]:
    """component -> ok, for each component a run exercised.

    Steps that passed vouch for their component; the first critical step that failed counts
    against its own component (a flow that fails at its login step blames `login`, not the
    flow's component); steps after it and reused logins say nothing. A component is ok for
    the run only when every one of its steps that ran passed.
    """
    votes: dict[str, bool] = {}
    if result.reason in PROBER_OWN_FAILURES:
        return votes  # the prober's own trouble (no descriptor left, a bug) says nothing
    final: dict[str, StepResult] = {}
    for step in result.steps:
        final[step.name] = step  # a step retried after a fresh login: its last attempt counts
    for step in final.values():
        if step.cached:
            continue
        component = watched.component_of(step.name)
        if not step.success and step.critical:
            votes[component] = False
            return votes
        if step.success:
            votes[component] = votes.get(component, True)
    if not result.success:
        votes[watched.component_of(result.failed_step)] = False
    elif not votes:
        votes[watched.component] = True  # every step reused a login: the check still passed
    return votes


def account_votes(result: Result, watched: Watched) -> dict[str, tuple[int, int]]:
    """component -> (accounts that exercised it, accounts it failed for), for one run.

    A run as one account counts as one; a pooled run counts each account's own Result.
    """
    counts: dict[str, tuple[int, int]] = {}
    for run in result.accounts or (result,):
        for component, ok in component_votes(run, watched).items():
            probed, failed = counts.get(component, (0, 0))
            counts[component] = (probed + 1, failed + (0 if ok else 1))
    return counts


class StatusSink:
    """Keeps a bounded history per check, confirmed votes per component, and the verdict."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._checks: dict[str, _CheckStatus] = {}
        self._tallies: dict[str, Tally] = {}
        self._voters: dict[str, list[_Vote]] = {}
        # Starts of the recent canary runs that passed: the prober could reach a healthy
        # endpoint then. A component is reported down only if one of them lies between its
        # failure being first seen and last seen: the prober was fine while the platform
        # failed. Otherwise a prober that was cut off (or has just been mended, with its
        # failures from while it was cut off still standing) would blame the platform.
        self._vouches: deque[tuple[float, float]] = deque(maxlen=VOUCHES_KEPT)
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

    def _recount(self, vote: _Vote, stale: bool) -> bool:
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
            self._vouches.append((now - result.duration, now))
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
        # The down machinery: the run is failing when every account it tried failed.
        changed = vote.add(failed < probed, now)
        if vote.samples is not None:
            changed = vote.sample(failed, probed, now) or changed
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

    def _vote(self, status: _CheckStatus, check: str, component: str) -> _Vote:
        vote = status.votes.get(component)
        if vote is None:
            samples: deque[bool] | None = (
                deque(maxlen=PARTIAL_WINDOW) if status.watched.pooled else None
            )
            vote = status.votes[component] = _Vote(check, component, samples=samples)
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
        """Components down that no canary has vouched for since they began to fail.

        With no canary configured there is nothing to wait for, and nothing is held.
        """
        if CANARY not in self._tallies:
            return frozenset()
        held = set()
        for name, tally in self._tallies.items():
            if name == CANARY or tally.state() not in (Condition.DOWN, Condition.PARTIAL):
                continue
            failing = [
                v
                for v in self._voters.get(name, [])
                if v.counted is not None and (v.counted.success is False or v.counted.partial)
            ]
            if not failing:
                continue
            first = max(v.failing_since for v in failing)
            last = max(v.seen_at for v in failing)
            # The pass must start after the failure was first seen and end before it was
            # last seen: a canary request that hung through a cut and was answered once
            # the prober was mended proves nothing about the time of the failures.
            if not any(first <= start and end <= last for start, end in self._vouches):
                held.add(name)
        return frozenset(held)

    def forget_stale(self) -> None:
        """Turn votes unknown whose check has not run for STALE_INTERVALS intervals."""
        now = self._clock()
        for status in self._checks.values():
            limit = STALE_INTERVALS * status.watched.interval
            for vote in status.votes.values():
                self._recount(vote, stale=now - vote.seen_at > limit)

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
        state = "pending" if confirmed is None else ("ok" if confirmed else "failing")
        return {
            "name": name,
            "component": status.watched.component,
            "kind": status.watched.kind,
            "state": state,
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
