"""Uptime over 24 h and 7 d from hourly counts: right windows, bounded, robust to gaps."""

from __future__ import annotations

import pytest

from prober.sinks.uptime import HOURS, Uptime

HOUR = 3600.0
# A fixed instant, half past an hour: the counts are keyed by the runs' own start times.
NOW = 1_800_000_000.0 + HOUR / 2


def uptime(*runs: tuple[float, bool]) -> Uptime:
    """An Uptime after these (hours before NOW, passed) runs, oldest first."""
    counts = Uptime()
    for hours_ago, passed in runs:
        counts.record(NOW - hours_ago * HOUR, passed)
    return counts


@pytest.mark.parametrize(
    ("runs", "day", "week"),
    [
        ((), None, None),
        (((0, True), (0, False), (0, True), (0, True)), 0.75, 0.75),
        (((30, False), (0, True)), 1.0, 0.5),
        (((8 * 24, False), (0, True)), 1.0, 1.0),
        (((23.5, False), (24.5, False), (0, True)), 0.5, 1 / 3),
        (((50, True),), None, 1.0),
    ],
    ids=["nothing-ran", "this-hour", "yesterday-failed", "older-than-a-week",
         "day-edge", "quiet-today"],
)  # fmt: skip
def test_share_counts_the_runs_of_each_window(
    runs: tuple[tuple[float, bool], ...], day: float | None, week: float | None
) -> None:
    counts = uptime(*runs)
    assert counts.share(NOW, 24) == (None if day is None else pytest.approx(day))
    assert counts.share(NOW, HOURS) == (None if week is None else pytest.approx(week))


def test_a_gap_of_more_than_a_week_forgets_everything_before_it() -> None:
    counts = uptime((0, False))
    later = NOW + 200 * HOUR
    counts.record(later, True)
    assert counts.share(later, HOURS) == 1.0


def test_slots_reused_after_a_week_start_from_zero() -> None:
    counts = Uptime()
    for hour in range(HOURS + 5):  # one failed run an hour, one week and five hours long
        counts.record(NOW + hour * HOUR, False)
    last = NOW + (HOURS + 4) * HOUR
    counts.record(last, True)
    # This hour: one failure and one pass; the other 167 hours of the window one failure each.
    assert counts.share(last, 1) == 0.5
    assert counts.share(last, HOURS) == pytest.approx(1 / (HOURS + 1))


def test_a_clock_stepped_back_counts_within_the_window_and_drops_beyond() -> None:
    counts = uptime((0, True))
    counts.record(NOW - 2 * HOUR, False)  # wall clock stepped back two hours
    counts.record(NOW - 9 * 24 * HOUR, False)  # and, once, nine days: ignored
    assert counts.share(NOW, 24) == 0.5
    assert counts.share(NOW, HOURS) == 0.5
