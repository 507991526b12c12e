"""The verdict from the latest check states, table-driven."""

from __future__ import annotations

import random

import pytest

from prober.result import Reason, Result
from prober.status import StatusSink
from prober.verdict import CheckState, compute_verdict

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
    ("nothing-ran-yet", states(api=[None], login=[None]), 0.0, "ok"),
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
    ("loop-lag-over-budget", states(api=[OK]), 0.5, "prober_impaired"),
]


@pytest.mark.parametrize(
    ("checks", "lag", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_verdict(checks: list[CheckState], lag: float, expected: str) -> None:
    assert compute_verdict(checks, lag, lag_budget=0.1).state == expected


def _result(check: str, success: bool) -> Result:
    return Result(check, success, 0.01, 1.0, reason=None if success else Reason.STATUS)


def test_one_failed_run_of_three_does_not_mark_a_check_failing() -> None:
    sink = StatusSink()
    sink.apply({"a": ("api", "http")})
    for success in (OK, OK, FAIL):
        sink.record(_result("a", success))
    assert sink.states()[0].success is True
    sink.record(_result("a", FAIL))
    assert sink.states()[0].success is False


def test_incremental_counts_agree_with_judging_from_scratch() -> None:
    """StatusSink keeps per-component counts as results arrive; they must never drift."""
    rng = random.Random(7)
    sink = StatusSink()
    components = ["api", "login", "timeline", "notifications", "canary"]
    checks = {f"c{i}": (components[i % 5], "http") for i in range(20)}
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
            checks = {n: c for n, c in checks.items() if n != "c3"} | {"new": ("api", "http")}
            sink.apply(checks)
        assert sink.evaluate(0.0, 0.1) == compute_verdict(sink.states(), 0.0, 0.1)
    assert {s.name for s in sink.states()} == set(checks)
