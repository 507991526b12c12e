"""Uptime per check over the last 7 days, from the daemon's own runs, in bounded memory.

Two fixed arrays of 168 hourly counters (runs, and runs that passed) per check: 1,344 bytes
whatever the interval or the uptime of the daemon. A window of N hours is the current hour
plus the N-1 before it, so "24 h" covers between 23 and 24 hours of runs. History starts
when the daemon does: nothing survives a restart.
"""

from __future__ import annotations

from array import array

HOURS = 168
_HOUR_SECONDS = 3600


class Uptime:
    """Runs and passed runs per wall-clock hour, for the last HOURS hours."""

    __slots__ = ("_hour", "_passed", "_runs")

    def __init__(self) -> None:
        self._runs = array("I", bytes(4 * HOURS))
        self._passed = array("I", bytes(4 * HOURS))
        # The latest hour with a run; slots of hours before it by HOURS or more are zero.
        self._hour = -HOURS

    def record(self, at: float, success: bool) -> None:
        """Count one run that started at `at` (unix seconds)."""
        hour = int(at // _HOUR_SECONDS)
        if hour > self._hour:
            self._clear(self._hour + 1, hour)
            self._hour = hour
        elif hour <= self._hour - HOURS:
            return  # older than the window (the wall clock stepped back a week)
        slot = hour % HOURS
        self._runs[slot] += 1
        if success:
            self._passed[slot] += 1

    def _clear(self, first: int, last: int) -> None:
        """Zero the slots of hours first..last (they are reused from a week before)."""
        if last - first + 1 >= HOURS:
            for counts in (self._runs, self._passed):
                counts[:] = array("I", bytes(4 * HOURS))
            return
        for hour in range(first, last + 1):
            self._runs[hour % HOURS] = 0
            self._passed[hour % HOURS] = 0

    def share(self, now: float, hours: int) -> float | None:
        """The share (0..1) of runs in the last `hours` hours that passed; None if none ran."""
        current = int(now // _HOUR_SECONDS)
        first = max(current - hours + 1, self._hour - HOURS + 1)
        last = min(current, self._hour)
        if last < first:
            return None
        runs = _sum(self._runs, first, last)
        return _sum(self._passed, first, last) / runs if runs else None


def _sum(counts: array[int], first: int, last: int) -> int:
    """The sum of the slots of hours first..last (fewer than HOURS of them) in the ring."""
    start, end = first % HOURS, last % HOURS
    if start <= end:
        return sum(counts[start : end + 1])
    return sum(counts[start:]) + sum(counts[: end + 1])
