"""The vote machinery on its own: confirmation, the failing share of accounts, vouching.
(How the status sink counts whole runs with it: test_verdict.py.)"""

from __future__ import annotations

from collections import deque

import pytest

from prober.sinks.verdict import CANARY, CheckState, Tally
from prober.sinks.votes import (
    CONFIRM_RUNS,
    PARTIAL_MIN,
    PARTIAL_WINDOW,
    RECOVERY_SAMPLES,
    Vote,
    Vouches,
    wilson_lower_bound,
)


@pytest.mark.parametrize(
    ("failed", "total", "partial"),
    [(0, 0, False), (1, 10, False), (2, 24, False), (3, 12, True), (24, 24, True)],
    ids=["no-samples", "one-in-ten", "two-in-24", "three-in-twelve", "all"],
)
def test_wilson_bound_tells_noise_from_a_share(failed: int, total: int, partial: bool) -> None:
    assert (wilson_lower_bound(failed, total) > PARTIAL_MIN) is partial


def test_a_failure_is_confirmed_by_runs_in_a_row_and_dated_by_the_first() -> None:
    vote = Vote("c", "api")
    assert vote.add(True, 1.0, 0.5)  # unknown -> ok on the first success
    flips = [vote.add(False, 2.0 + run, 1.5 + run) for run in range(CONFIRM_RUNS)]
    assert flips == [False] * (CONFIRM_RUNS - 1) + [True]
    assert (vote.confirmed, vote.failing_since, vote.seen_at) == (False, 2.0, 1.0 + CONFIRM_RUNS)


def test_a_run_that_agrees_again_ends_the_streak() -> None:
    vote = Vote("c", "api", confirmed=True)
    assert not vote.add(False, 1.0, 0.5)
    assert vote.streak == 1
    assert not vote.add(True, 2.0, 1.5)
    assert (vote.confirmed, vote.streak) == (True, 0)


def test_a_pooled_vote_turns_partial_then_recovers_after_clean_samples() -> None:
    vote = Vote("c", "timeline", samples=deque(maxlen=PARTIAL_WINDOW))
    assert not vote.sample(1, 10, 1.0, 0.5)  # one account in ten: noise
    assert vote.sample(3, 10, 2.0, 1.5)
    assert vote.partial and vote.failing_since == 2.0
    assert vote.share == pytest.approx(4 / 20)
    assert vote.unsettled is False
    assert not vote.sample(0, RECOVERY_SAMPLES - 1, 3.0, 2.5)
    assert vote.unsettled  # a clean run while partial: a re-run settles it
    assert vote.sample(0, 1, 4.0, 3.5)
    assert not vote.partial


def test_a_failing_run_is_dated_by_when_it_began_and_a_recovery_keeps_the_failures_date() -> None:
    vote = Vote("c", "api", confirmed=True)
    for run in range(CONFIRM_RUNS):
        vote.record(1, 1, now=10.0 + run, began=9.5 + run)
    assert (vote.confirmed, vote.failing_since, vote.failed_run_began) == (False, 10.0, 10.5)
    for run in range(CONFIRM_RUNS):
        vote.record(0, 1, now=20.0 + run, began=19.5 + run)
    assert (vote.confirmed, vote.failing_since, vote.failed_run_began) == (True, 10.0, 10.5)


def test_a_pooled_vote_moving_between_down_and_partial_keeps_its_failures_date() -> None:
    """Most accounts failing: run after run every account fails, or all but one. The vote
    stays failing in one sense or the other, and its failure began once."""
    vote = Vote("c", "timeline", confirmed=True, samples=deque(maxlen=PARTIAL_WINDOW))
    vote.record(0, 3, now=1.0, began=0.5)
    for run in range(CONFIRM_RUNS):
        vote.record(3, 3, now=2.0 + run, began=1.5 + run)
    assert (vote.confirmed, vote.failing_since) == (False, 2.0)
    for run, failed in enumerate((2, 3, 2, 3, 2, 2)):
        vote.record(failed, 3, now=10.0 + run, began=9.5 + run)
        assert vote.failing and vote.failing_since == 2.0, (run, vote.confirmed, vote.partial)
        assert vote.failed_run_began == 9.5 + run
    assert (vote.confirmed, vote.partial) == (True, True)  # two runs with a pass: ok, partial


def test_a_run_that_ends_a_confirmed_failure_and_starts_a_partial_one_keeps_its_date() -> None:
    """Two failed runs of one account among clean ones: confirmed failing, not yet partial
    (2 in 24). The run that confirms ok fails two accounts of three and turns it partial in
    the same count: the failure is the one that began before."""
    vote = Vote("c", "timeline", confirmed=True, samples=deque(maxlen=PARTIAL_WINDOW))
    for run in range(PARTIAL_WINDOW - 2):
        vote.record(0, 1, now=float(run), began=run - 0.5)
    for now in (30.0, 31.0):
        vote.record(1, 1, now=now, began=now - 0.5)
    assert (vote.confirmed, vote.partial, vote.failing_since) == (False, False, 30.0)
    vote.record(0, 1, now=32.0, began=31.5)
    assert vote.record(2, 3, now=33.0, began=32.5)
    assert (vote.confirmed, vote.partial, vote.failing_since) == (True, True, 30.0)


def failing(vote: Vote, since: float, seen: float, began: float | None = None) -> Vote:
    """A vote confirmed failing since `since`, its latest failing run begun at `began`
    (by default 2 s before it ended at `seen`)."""
    vote.confirmed, vote.failing_since, vote.seen_at = False, since, seen
    vote.failed_run_began = seen - 2.0 if began is None else began
    vote.counted = CheckState(vote.check, vote.component, False)
    return vote


def down_tally() -> Tally:
    tally = Tally()
    tally.add(CheckState("c", "api", False))
    return tally


def test_a_component_down_is_held_until_a_canary_pass_lies_within_its_failure() -> None:
    vouches = Vouches()
    tallies = {"api": down_tally(), CANARY: Tally()}
    voters = {"api": [failing(Vote("c", "api"), since=10.0, seen=20.0)]}
    assert vouches.held(tallies, voters) == {"api"}
    vouches.add(5.0, 11.0)  # started before the failure was first seen: proves nothing
    vouches.add(12.0, 25.0)  # answered after it was last seen: proves nothing
    vouches.add(12.0, 19.0)  # ended after the last failing run began (at 18): nor this
    assert vouches.held(tallies, voters) == {"api"}
    vouches.add(12.0, 13.0)
    assert vouches.held(tallies, voters) == frozenset()


def test_a_mended_probers_late_timeouts_are_vouched_by_no_pass_before_them() -> None:
    """Cut off from 10 to 30: runs that began in the cut time out after the mend. The
    canary passing at 31 must not vouch for them; a run begun after that pass does."""
    vouches = Vouches()
    tallies = {"api": down_tally(), CANARY: Tally()}
    vote = failing(Vote("c", "api"), since=15.0, seen=33.0, began=28.0)
    voters = {"api": [vote]}
    vouches.add(30.5, 31.0)
    assert vouches.held(tallies, voters) == {"api"}
    vote.failed_run_began, vote.seen_at = 31.5, 36.5  # a re-run after the pass fails too
    assert vouches.held(tallies, voters) == frozenset()


def test_without_a_canary_nothing_is_held() -> None:
    voters = {"api": [failing(Vote("c", "api"), since=10.0, seen=20.0)]}
    assert Vouches().held({"api": down_tally()}, voters) == frozenset()
