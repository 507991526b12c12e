"""The status snapshot: failing-since, uptime, recent runs and labels, from recorded Results."""

from __future__ import annotations

import time

import pytest

from prober.result import Reason, Result
from prober.status import HISTORY, StatusSink


def result(check: str, success: bool, started_at: float, duration: float = 0.01) -> Result:
    return Result(
        check,
        success,
        duration,
        started_at=started_at,
        reason=None if success else Reason.STATUS,
        failed_step="" if success else "request",
    )


@pytest.fixture
def sink() -> StatusSink:
    sink = StatusSink()
    sink.apply({"api": ("api", "http"), "login": ("login", "flow")})
    return sink


def check(sink: StatusSink, name: str) -> dict[str, object]:
    (found,) = [c for c in sink.snapshot()["checks"] if c["name"] == name]
    return found


def test_failing_since_is_the_first_failure_of_the_streak_and_clears_on_success(
    sink: StatusSink,
) -> None:
    now = time.time()
    sink.record(result("api", True, now - 30))
    assert check(sink, "api")["failing_since"] is None
    sink.record(result("api", False, now - 20))
    sink.record(result("api", False, now - 10))
    assert check(sink, "api")["failing_since"] == now - 20
    assert sink.failing_since("api") == now - 20
    sink.record(result("api", True, now))
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
