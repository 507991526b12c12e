"""The verdict from confirmed check states, table-driven; confirmation, blame and staleness."""

from __future__ import annotations

import random

import pytest

from prober.result import Reason, Result, StepResult
from prober.sinks.status import StatusSink, Watched
from prober.sinks.verdict import CheckState, Condition, Tally, compute_verdict, judge, tally
from prober.sinks.votes import Followup

OK = True
FAIL = False


def states(**components: list[bool | None]) -> list[CheckState]:
    return [
        CheckState(f"{component}-{i}", component, success)
        for component, results in components.items()
        for i, success in enumerate(results)
    ]


CASES = [
    ("all-ok", states(api=[OK, OK], login=[OK]), 0.0, "ok"),
    ("nothing-ran-yet", states(api=[None], login=[None]), 0.0, "pending"),
    ("no-checks", [], 0.0, "pending"),
    ("a-component-with-only-unknown-checks", states(api=[OK], login=[None]), 0.0, "pending"),
    ("one-check-of-two-failing", states(api=[OK, FAIL], login=[OK]), 0.0, "degraded"),
    (
        "one-component-down",
        states(api=[FAIL, FAIL], login=[OK], timeline=[OK]),
        0.0,
        "component_down",
    ),
    ("two-components-down", states(api=[FAIL], login=[FAIL], timeline=[OK]), 0.0, "platform_wide"),
    (
        "canary-failing-wins",
        states(api=[FAIL], login=[FAIL], canary=[FAIL]),
        0.0,
        "prober_impaired",
    ),
    ("canary-alone-is-not-a-component", states(api=[OK], canary=[OK]), 0.0, "ok"),
    (
        "one-canary-of-three-failing-is-not-impairment",
        states(api=[FAIL], login=[FAIL], canary=[FAIL, OK, OK]),
        0.0,
        "platform_wide",
    ),
    (
        "most-canaries-failing-is-impairment",
        states(api=[OK], canary=[FAIL, FAIL, OK]),
        0.0,
        "prober_impaired",
    ),
    (
        "platform-unreachable-canary-passing-is-platform-wide",
        states(api=[FAIL, FAIL], login=[FAIL], timeline=[FAIL], canary=[OK]),
        0.0,
        "platform_wide",
    ),
    ("loop-lag-over-budget", states(api=[OK]), 0.5, "prober_impaired"),
]


@pytest.mark.parametrize(
    ("checks", "lag", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_verdict(checks: list[CheckState], lag: float, expected: str) -> None:
    assert compute_verdict(checks, lag, lag_budget=0.1).state == expected


def _result(check: str, success: bool, steps: tuple[StepResult, ...] = ()) -> Result:
    failed = next((st.name for st in steps if not st.success), "")
    reason = None if success else Reason.STATUS
    return Result(check, success, 0.01, 1.0, reason=reason, failed_step=failed, steps=steps)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_failed_run_asks_for_confirmation_and_only_a_second_flips_the_check() -> None:
    sink = StatusSink()
    sink.apply({"a": Watched("api", "http", 15.0)})
    assert sink.record(_result("a", OK)) == Followup()
    assert sink.states()[0].success is True  # an unknown check is ok on its first success
    assert sink.record(_result("a", FAIL)).confirm
    assert sink.states()[0].success is True
    assert not sink.record(_result("a", OK)).confirm  # the blip is refuted
    sink.record(_result("a", FAIL))
    assert not sink.record(_result("a", FAIL)).confirm  # confirmed: nothing more to ask
    assert sink.states()[0].success is False
    assert sink.record(_result("a", OK)).confirm  # a recovery is confirmed the same way
    sink.record(_result("a", OK))
    assert sink.states()[0].success is True


def test_first_failure_of_an_unknown_check_is_confirmed_too() -> None:
    sink = StatusSink()
    sink.apply({"a": Watched("api", "http", 15.0)})
    assert sink.record(_result("a", FAIL)).confirm
    assert sink.states()[0].success is None
    sink.record(_result("a", FAIL))
    assert sink.states()[0].success is False


def test_a_component_that_changes_state_sweeps_its_other_checks() -> None:
    sink = StatusSink()
    sink.apply(
        {n: Watched("api", "http", 15.0) for n in ("a", "b", "c")}
        | {"other": Watched("login", "http", 15.0)}
    )
    for name in ("a", "b", "c", "other"):
        sink.record(_result(name, OK))
    sink.record(_result("a", FAIL))
    followup = sink.record(_result("a", FAIL))
    assert set(followup.sweep) == {"b", "c"}


def _step(name: str, success: bool, cached: bool = False) -> StepResult:
    return StepResult(name, success, 0.01, None if success else Reason.STATUS, cached=cached)


def test_a_flow_failing_at_its_login_step_blames_login_not_its_own_component() -> None:
    sink = StatusSink()
    watched = Watched("timeline", "flow", 15.0, {"login": "login"})
    sink.apply({"timeline": watched, "login-check": Watched("login", "flow", 15.0)})
    sink.record(_result("login-check", OK))
    passing = (_step("login", OK), _step("home", OK))
    sink.record(_result("timeline", OK, passing))
    failing = (_step("login", FAIL),)
    for _ in range(2):
        sink.record(_result("timeline", FAIL, failing))
    conditions = sink.component_conditions()
    assert conditions["login"] is Condition.DEGRADED  # one of its two voters failing
    assert conditions["timeline"] is Condition.OK  # not run this time: still its last word
    assert sink.evaluate(0.0, 0.1).state != "platform_wide"


def test_a_reused_login_says_nothing_about_the_login_component() -> None:
    sink = StatusSink()
    sink.apply({"timeline": Watched("timeline", "flow", 15.0, {"login": "login"})})
    sink.record(_result("timeline", OK, (_step("login", OK, cached=True), _step("home", OK))))
    assert sink.component_conditions() == {"timeline": Condition.OK, "login": Condition.PENDING}


def test_a_check_that_stops_running_becomes_unknown_not_ok() -> None:
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({"a": Watched("api", "http", 15.0)})
    sink.record(_result("a", OK))
    assert sink.evaluate(0.0, 0.1).state == "ok"
    clock.now += 3 * 15.0 + 1
    sink.forget_stale()
    assert sink.states()[0].success is None
    verdict = sink.evaluate(0.0, 0.1)
    assert verdict.state == "pending"
    assert sink.snapshot()["components"] == [
        {"name": "api", "state": "pending", "failing": 0, "checks": 0, "failing_share": None}
    ]
    sink.record(_result("a", OK))
    assert sink.evaluate(0.0, 0.1).state == "ok"


def test_an_outage_is_reported_only_once_a_canary_vouches_for_the_prober() -> None:
    """A prober cut off from everything must not call that a platform outage: a component
    stays pending until a canary run that started after it began to fail has passed."""
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({"a": Watched("api", "http", 15.0), "canary": Watched("canary", "http", 15.0)})
    sink.record(_result("canary", OK))
    sink.record(_result("a", OK))
    clock.now += 5
    followup = sink.record(_result("a", FAIL))
    assert followup.confirm
    assert "canary" in followup.sweep  # the canary is asked at once
    clock.now += 1
    sink.record(_result("a", FAIL))
    assert sink.component_conditions()["api"] is Condition.PENDING
    assert sink.evaluate(0.0, 0.1).state == "pending"
    clock.now += 1
    # A canary passing after `a`'s last failure asks for `a` again: a failure seen after a
    # pass shows the prober was fine while the platform failed.
    assert "a" in sink.record(_result("canary", OK)).sweep
    clock.now += 1
    sink.record(_result("a", FAIL))
    assert sink.component_conditions()["api"] is Condition.DOWN
    assert sink.evaluate(0.0, 0.1).state == "component_down"


def test_a_canary_that_passed_while_a_failing_run_was_still_waiting_does_not_vouch() -> None:
    """Cut off mid-run: a platform run started before the cut, hung, and failed after it;
    a canary run that passed meanwhile (before the cut) must not vouch for that failure."""
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({"a": Watched("api", "http", 15.0), "canary": Watched("canary", "http", 15.0)})
    sink.record(_result("a", OK))
    clock.now += 6
    sink.record(_result("canary", OK))  # started at 1005.99, before the cut
    clock.now += 4
    hung = Result("a", False, 5.0, 1.0, reason=Reason.TIMEOUT)  # started at 1005, ended now
    sink.record(hung)
    clock.now += 1
    sink.record(Result("a", False, 0.5, 1.0, reason=Reason.TIMEOUT))
    assert sink.states()[0].success is False
    assert sink.component_conditions()["api"] is Condition.PENDING  # held, not down
    assert sink.evaluate(0.0, 0.1).state == "pending"


def test_failures_from_while_the_prober_was_cut_off_are_not_vouched_when_it_is_mended() -> None:
    """The prober was cut off: platform and canary failed. Mended, the canary passes first;
    the platform's failures from before must not now read as an outage."""
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({"a": Watched("api", "http", 15.0), "canary": Watched("canary", "http", 15.0)})
    sink.record(_result("a", OK))
    sink.record(_result("canary", OK))
    for _ in range(2):  # cut off: both confirmed failing
        clock.now += 1
        sink.record(_result("a", FAIL))
        sink.record(_result("canary", FAIL))
    assert sink.evaluate(0.0, 0.1).state == "prober_impaired"
    clock.now += 5
    sink.record(_result("canary", OK))  # mended: the canary passes before `a` runs again
    sink.record(_result("canary", OK))
    assert sink.component_conditions()["api"] is Condition.PENDING
    assert sink.evaluate(0.0, 0.1).state == "pending"
    clock.now += 1
    sink.record(_result("a", FAIL))  # a failure seen after a canary pass: that is vouched
    assert sink.component_conditions()["api"] is Condition.DOWN


def test_a_canary_request_that_hung_through_a_cut_does_not_vouch_when_answered() -> None:
    """Cut off: a canary request sent during the cut is answered once the prober is mended;
    it started while the platform failed, but proves nothing about that time."""
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({"a": Watched("api", "http", 15.0), "canary": Watched("canary", "http", 15.0)})
    sink.record(_result("a", OK))
    sink.record(_result("canary", OK))
    clock.now += 1
    sink.record(_result("a", FAIL))
    clock.now += 1
    sink.record(_result("a", FAIL))  # confirmed during the cut
    clock.now += 4  # mended: the canary request sent 4.5 s ago is answered now
    sink.record(Result("canary", True, 4.5, 1.0))
    assert sink.component_conditions()["api"] is Condition.PENDING


def test_a_held_component_asks_the_canaries_again() -> None:
    """A canary that ran just before the first failure cannot vouch for it, and was not
    re-run then (it had just run): once the component is confirmed down and held, the
    canaries are asked again, at most once a second."""
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({"a": Watched("api", "http", 15.0), "canary": Watched("canary", "http", 15.0)})
    sink.record(_result("a", OK))
    clock.now += 5
    sink.record(_result("canary", OK))
    clock.now += 0.5
    assert "canary" not in sink.record(_result("a", FAIL)).sweep  # it ran 0.5 s ago
    clock.now += 1
    assert "canary" in sink.record(_result("a", FAIL)).sweep  # down, held: ask again
    assert sink.component_conditions()["api"] is Condition.PENDING


def test_incremental_counts_agree_with_judging_from_scratch() -> None:
    """StatusSink keeps per-component counts as results arrive; they must never drift."""
    rng = random.Random(7)
    sink = StatusSink()
    components = ["api", "login", "timeline", "notifications", "canary"]
    checks = {f"c{i}": Watched(components[i % 5], "http", 15.0) for i in range(20)}
    sink.apply(checks)
    for step in range(600):
        name = rng.choice(list(checks))
        success = rng.random() < (0.3 if step % 200 > 100 else 0.9)
        result = Result(
            name,
            success,
            0.01,
            1.0,
            reason=None if success else Reason.STATUS,
            degraded=success and rng.random() < 0.1,
        )
        sink.record(result)
        if step == 300:  # a reload that drops some checks and adds others
            checks = {n: c for n, c in checks.items() if n != "c3"} | {
                "new": Watched("api", "http", 15.0)
            }
            sink.apply(checks)
        from_scratch = tally(sink.votes())
        for watched in checks.values():
            from_scratch.setdefault(watched.component, Tally())
        assert sink.evaluate(0.0, 0.1) == judge(from_scratch, 0.0, 0.1, sink.held_components())
    assert {s.name for s in sink.states()} == set(checks)


def _pooled(check: str, failing: int, of: int) -> Result:
    """A pooled run of `of` accounts, the first `failing` of them failing."""
    runs = tuple(_result(check, i >= failing) for i in range(of))
    return Result(check, failing == 0, 0.01, 1.0, reason=None if failing == 0 else Reason.STATUS,
                  accounts=runs)  # fmt: skip


def _pooled_sink(*names: str, component: str = "timeline") -> StatusSink:
    sink = StatusSink()
    sink.apply({n: Watched(component if n != "other" else "api", "flow", 15.0, pooled=True)
                for n in names})  # fmt: skip
    return sink


def test_a_share_of_accounts_failing_is_partial_with_its_share() -> None:
    sink = _pooled_sink("t")
    sink.record(_pooled("t", 0, 3))
    for _ in range(3):  # 1 of 3 accounts fails, run after run
        sink.record(_pooled("t", 1, 3))
    assert sink.component_conditions()["timeline"] is Condition.PARTIAL
    assert sink.evaluate(0.0, 0.1).state == "partial"
    assert 0.2 < sink.component_shares()["timeline"] < 0.35
    for _ in range(3):  # nine clean account samples in a row: over
        sink.record(_pooled("t", 0, 3))
    assert sink.component_conditions()["timeline"] is Condition.OK


def test_one_failed_account_in_ten_is_not_partial() -> None:
    sink = _pooled_sink("t")
    for run in range(8):  # 24 samples, failures at 1 in 12: well under the bound
        sink.record(_pooled("t", 1 if run in (2, 6) else 0, 3))
    assert sink.component_conditions()["timeline"] is Condition.OK


def test_every_account_failing_is_down_not_partial() -> None:
    sink = _pooled_sink("t")
    sink.record(_pooled("t", 0, 3))
    for _ in range(2):
        sink.record(_pooled("t", 3, 3))
    assert sink.component_conditions()["timeline"] is Condition.DOWN
    assert sink.evaluate(0.0, 0.1).state == "component_down"


def test_two_components_failing_for_a_share_of_accounts_is_platform_wide() -> None:
    sink = _pooled_sink("t", "other")
    for name in ("t", "other"):
        sink.record(_pooled(name, 0, 3))
        for _ in range(3):
            sink.record(_pooled(name, 1, 3))
    assert sink.evaluate(0.0, 0.1).state == "platform_wide"


def test_a_pooled_run_with_failures_asks_for_another_run() -> None:
    sink = _pooled_sink("t")
    sink.record(_pooled("t", 0, 3))
    assert sink.record(_pooled("t", 1, 3)).confirm  # not partial yet: settle it now


def test_a_pooled_vote_moving_between_down_and_partial_is_not_held_again() -> None:
    """Most accounts failing (dec-2022's notifications at 90%): run after run the pooled vote
    moves between confirmed failing (every account failed) and partial (one passed). Its
    failure began once and a canary vouched for it then: the component stays down, never
    pending again until another canary run."""
    clock = Clock()
    sink = StatusSink(clock)
    sink.apply({
        "t": Watched("timeline", "flow", 15.0, pooled=True),
        "u": Watched("timeline", "http", 15.0),
        "canary": Watched("canary", "http", 15.0),
    })  # fmt: skip
    sink.record(_result("canary", OK))
    sink.record(_pooled("t", 0, 3))
    sink.record(_result("u", OK))
    for _ in range(2):
        clock.now += 1
        sink.record(_pooled("t", 3, 3))
        sink.record(_result("u", FAIL))
    clock.now += 1
    sink.record(_result("canary", OK))
    clock.now += 1
    sink.record(_pooled("t", 3, 3))
    sink.record(_result("u", FAIL))
    assert sink.component_conditions()["timeline"] is Condition.DOWN
    for failing in (2, 3, 2, 3, 2, 3):  # one account passes every other run
        clock.now += 1
        sink.record(_pooled("t", failing, 3))
        sink.record(_result("u", FAIL))
        assert sink.component_conditions()["timeline"] is Condition.DOWN, failing
