"""What runs say about components, confirmed before they count: one vote per (check,
component), a pooled flow's failing share of accounts, and the canary passes that vouch for
the prober before a component is told down."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prober.result import Reason, Result, StepResult
from prober.sinks.verdict import CANARY, CheckState, Condition, Tally

# Runs in a row that must agree before a confirmed state turns failing, or back to ok. The
# daemon re-runs a check at once when a run disagrees with its confirmed state, so one lost
# request never flips a component and a real outage is confirmed within seconds.
CONFIRM_RUNS = 2
# Passing canary runs remembered for vouching (about four minutes at a 15 s interval, and
# the reruns a failing platform asks for).
VOUCHES_KEPT = 32
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


class CheckComponents(Protocol):
    """Which component each step of a check votes on (the status sink's `Watched`)."""

    @property
    def component(self) -> str: ...

    def component_of(self, step: str) -> str: ...


@dataclass(slots=True)
class Vote:
    """What the runs of one check say about one component, once confirmed."""

    check: str
    component: str
    confirmed: bool | None = None
    streak: int = 0  # runs in a row that disagreed with `confirmed`
    seen_at: float = 0.0  # monotonic time of the last run that exercised the component
    # When the latest run that failed for it (for any account) began, monotonic.
    failed_run_began: float = 0.0
    disagreeing_since: float = 0.0  # end of the first run of the current streak
    failing_since: float = 0.0  # end of the first failing run, once failing (down or partial)
    degraded: bool = False
    counted: CheckState | None = None  # what the component's tally holds for it now
    # A pooled flow's account samples (True: the account failed), newest last.
    samples: deque[bool] | None = None
    partial: bool = False
    clean_run: int = 0  # account samples in a row that passed
    last_failed: int = 0  # accounts the last pooled run failed for

    def record(self, failed: int, probed: int, now: float, began: float) -> bool:
        """Count one run's word, `failed` of `probed` accounts (a run as one account is 1 of
        1), that began at `began` and ended `now`; True when the vote's state flips.

        A pooled vote's share is counted before the down machinery, so a run that ends a
        confirmed failure and starts a partial one finds the vote still failing and keeps
        the date its failure began.
        """
        changed = self.sample(failed, probed, now, began) if self.samples is not None else False
        # The down machinery: the run is failing when every account it tried failed.
        return self.add(failed < probed, now, began) or changed

    def sample(self, failed: int, probed: int, now: float, began: float) -> bool:
        """Count one pooled run's accounts; True when the partial state flips.

        A vote already confirmed failing that turns partial keeps the date its failure
        began (most accounts failing, a run with one that passed), or each move between
        the two would hold its component until another canary vouched.
        """
        assert self.samples is not None
        self.samples.extend([True] * failed + [False] * (probed - failed))
        self.last_failed = failed
        self.clean_run = 0 if failed else self.clean_run + probed
        if failed:
            self.failed_run_began = began
        if not self.partial:
            share = wilson_lower_bound(sum(self.samples), len(self.samples))
            if share > PARTIAL_MIN and failed < probed:
                if not self.failing:
                    self.failing_since = now
                self.partial = True
                return True
        elif self.clean_run >= RECOVERY_SAMPLES or failed == probed:
            self.partial = False  # over, or worse: every account fails (the down machinery)
            return True
        return False

    @property
    def failing(self) -> bool:
        """Confirmed failing, or failing for a share of its accounts: what vouching dates."""
        return self.confirmed is False or self.partial

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

    def add(self, ok: bool, now: float, began: float) -> bool:
        """Count the word of one run that began at `began` and ended `now`; True when the
        confirmed state flips.

        The streak is dated by when its first run ended, not started: only a canary run
        that starts after a failure was seen can vouch that the prober was fine then (a
        canary that passed while a run which later failed was still waiting proves nothing).
        A failing run is also dated by when it began: a pass vouches only before that. A
        vote already partial that is confirmed failing keeps the date its failure began.
        """
        self.seen_at = now
        if not ok:
            self.failed_run_began = began
        if ok == self.confirmed:
            self.streak = 0
            return False
        if not self.streak:
            self.disagreeing_since = now
        self.streak += 1
        # An unknown check turns ok on its first success, but failing only when confirmed.
        if self.streak >= (1 if self.confirmed is None and ok else CONFIRM_RUNS):
            if not ok and not self.failing:
                self.failing_since = self.disagreeing_since
            self.confirmed, self.streak = ok, 0
            return True
        return False

    def view(self, stale: bool) -> CheckState:
        success = None if stale else self.confirmed
        partial = self.partial and not stale
        return CheckState(self.check, self.component, success, self.degraded and not stale, partial)


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


def component_votes(result: Result, watched: CheckComponents) -> dict[str, bool]:
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


def account_votes(result: Result, watched: CheckComponents) -> dict[str, tuple[int, int]]:
    """component -> (accounts that exercised it, accounts it failed for), for one run.

    A run as one account counts as one; a pooled run counts each account's own Result.
    """
    counts: dict[str, tuple[int, int]] = {}
    for run in result.accounts or (result,):
        for component, ok in component_votes(run, watched).items():
            probed, failed = counts.get(component, (0, 0))
            counts[component] = (probed + 1, failed + (0 if ok else 1))
    return counts


class Vouches:
    """The recent canary passes, each (start, end): the prober could reach a healthy
    endpoint then.

    A component is reported down only if one of them lies between its failure being first
    seen and last seen: the prober was fine while the platform failed. Otherwise a prober
    that was cut off (or has just been mended, with its failures from while it was cut off
    still standing) would blame the platform.
    """

    def __init__(self) -> None:
        self._passes: deque[tuple[float, float]] = deque(maxlen=VOUCHES_KEPT)

    def add(self, start: float, end: float) -> None:
        self._passes.append((start, end))

    def held(
        self, tallies: Mapping[str, Tally], voters: Mapping[str, Sequence[Vote]]
    ) -> frozenset[str]:
        """Components down that no canary has vouched for since they began to fail.

        With no canary configured there is nothing to wait for, and nothing is held.
        """
        if CANARY not in tallies:
            return frozenset()
        held = set()
        for name, tally in tallies.items():
            if name == CANARY or tally.state() not in (Condition.DOWN, Condition.PARTIAL):
                continue
            failing = [
                v
                for v in voters.get(name, [])
                if v.counted is not None and (v.counted.success is False or v.counted.partial)
            ]
            if not failing:
                continue
            first = max(v.failing_since for v in failing)
            last = max(v.failed_run_began for v in failing)
            # The pass must start after the failure was first seen and end before a failing
            # run began: a canary request that hung through a cut and was answered once the
            # prober was mended proves nothing about the time of the failures, nor does a
            # pass next to a run that began while the prober was cut off and timed out after
            # it was mended (a daemon re-runs what is held right after a pass).
            if not any(first <= start and end <= last for start, end in self._passes):
                held.add(name)
        return frozenset(held)
