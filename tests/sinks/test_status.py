"""The status snapshot: failing-since, uptime, recent runs and labels, from recorded Results."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from prober.result import Reason, Result
from prober.sinks.status import HISTORY, StatusSink, Watched
from prober.sinks.votes import CONFIRM_RUNS
from prober.web.status_page import render_status_page


def result(
    check: str,
    success: bool,
    started_at: float,
    duration: float = 0.01,
    reason: Reason = Reason.STATUS,
) -> Result:
    return Result(
        check,
        success,
        duration,
        started_at=started_at,
        reason=None if success else reason,
        failed_step="" if success else "request",
    )


@pytest.fixture
def sink() -> StatusSink:
    sink = StatusSink()
    sink.apply({"api": Watched("api", "http", 15.0), "login": Watched("login", "flow", 15.0)})
    return sink


def check(sink: StatusSink, name: str) -> dict[str, Any]:
    (found,) = [c for c in sink.snapshot()["checks"] if c["name"] == name]
    return cast(dict[str, Any], found)


def test_failing_since_is_set_when_a_failure_is_confirmed_and_clears_when_recovery_is(
    sink: StatusSink,
) -> None:
    assert CONFIRM_RUNS == 2  # the runs below confirm with their second run
    now = time.time()
    sink.record(result("api", True, now - 50))
    assert check(sink, "api")["failing_since"] is None
    sink.record(result("api", False, now - 40))  # one lost request: not yet failing
    assert check(sink, "api")["failing_since"] is None
    sink.record(result("api", False, now - 30))  # confirmed: failing since this run began
    assert check(sink, "api")["failing_since"] == now - 30
    assert sink.failing_since("api") == now - 30
    sink.record(result("api", True, now - 20))  # one success: still failing
    assert sink.failing_since("api") == now - 30
    sink.record(result("api", True, now - 10))  # confirmed ok
    assert check(sink, "api")["failing_since"] is None
    assert sink.failing_since("api") is None
    assert sink.failing_since("no-such-check") is None


def test_uptime_windows_come_from_the_runs_start_times(sink: StatusSink) -> None:
    now = time.time()
    sink.record(result("api", False, now - 3 * 86400))  # three days ago
    sink.record(result("api", True, now))
    api = check(sink, "api")
    assert api["uptime_24h"] == 1.0
    assert api["uptime_7d"] == 0.5
    login = check(sink, "login")
    assert login["uptime_24h"] is None and login["uptime_7d"] is None


def test_the_probers_own_failures_are_not_downtime(sink: StatusSink) -> None:
    now = time.time()
    sink.record(result("api", True, now - 20))
    sink.record(result("api", False, now - 10, reason=Reason.RESOURCE))
    assert check(sink, "api")["uptime_24h"] == 1.0
    assert check(sink, "api")["recent_runs"][-1]["reason"] == "resource"  # still in the history


def test_recent_runs_say_when_how_and_how_long_and_stay_bounded(sink: StatusSink) -> None:
    now = time.time()
    for i in range(HISTORY + 5):
        sink.record(result("api", i % 2 == 0, now - 100 + i, duration=0.002 * (i + 1)))
    runs = check(sink, "api")["recent_runs"]
    assert isinstance(runs, list) and len(runs) == HISTORY
    last = runs[-1]
    assert last == {"at": now - 100 + HISTORY + 4, "ok": True, "reason": None,
                    "seconds": pytest.approx(0.002 * (HISTORY + 5))}  # fmt: skip
    assert runs[-2]["ok"] is False and runs[-2]["reason"] == "status"
    assert check(sink, "api")["history"] == [run["ok"] for run in runs]


def test_snapshot_carries_the_global_labels(sink: StatusSink) -> None:
    assert sink.snapshot({"vantage": "eu-west"})["labels"] == {"vantage": "eu-west"}
    assert sink.snapshot()["labels"] == {}


def test_the_page_shows_scope_partial_and_pending_components_and_their_failing_share(
    sink: StatusSink,
) -> None:
    snapshot = sink.snapshot({"vantage": "eu-west"})
    snapshot["scope"] = "component"
    snapshot["components"] = [
        {"name": "timeline", "state": "partial", "failing": 0, "checks": 1, "failing_share": 0.25},
        {"name": "login", "state": "pending", "failing": 1, "checks": 1, "failing_share": None},
    ]
    page = render_status_page(snapshot)
    assert 'scope <b data-scope="component">component</b>' in page
    assert 'data-component="timeline" data-state="partial"' in page
    assert "25% of accounts failing" in page
    assert 'data-component="login" data-state="pending"' in page
    assert page.count("of accounts failing") == 1  # none where there is no pooled flow


def test_the_page_says_confirming_only_while_the_last_run_disagrees(sink: StatusSink) -> None:
    now = time.time()
    sink.record(result("api", True, now - 30))
    sink.record(result("api", False, now - 20))  # disagrees with the confirmed ok
    row = render_status_page(sink.snapshot()).split('data-check="api"', 1)[1].split("</tr>")[0]
    assert ">confirming</small>" in row
    sink.record(result("api", False, now - 10))  # confirmed failing: nothing left to confirm
    row = render_status_page(sink.snapshot()).split('data-check="api"', 1)[1].split("</tr>")[0]
    assert ">confirming</small>" not in row and "failing since" in row
