"""One APScheduler job per check; the only module that imports apscheduler."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

RunCheck = Callable[[str], Awaitable[None]]


class Scheduler:
    """Runs `run_check(name)` every interval for each check.

    Each job starts at a random offset within its interval so that thousands of checks do
    not fire together; a job never overlaps itself (max_instances=1) and missed runs are
    coalesced into one.
    """

    def __init__(self, run_check: RunCheck, on_lag: Callable[[float], None]) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        self._run_check = run_check
        self._on_lag = on_lag
        self._intervals: dict[str, float] = {}
        self._scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)

    def _submitted(self, event: JobSubmissionEvent) -> None:
        if event.scheduled_run_times:
            late = datetime.now(UTC) - event.scheduled_run_times[-1]
            self._on_lag(max(late.total_seconds(), 0.0))

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop starting runs; runs already going are the caller's to finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def apply(self, intervals: Mapping[str, float], changed: set[str]) -> None:
        """Schedule exactly these checks; unchanged ones keep their timing.

        `changed` names checks whose settings differ from the running ones: they restart.
        """
        for name in set(self._intervals) - set(intervals):
            self._scheduler.remove_job(name)
            del self._intervals[name]
        now = datetime.now(UTC)
        for name, interval in intervals.items():
            if name in self._intervals and name not in changed:
                continue
            first = now + timedelta(seconds=random.uniform(0, interval))
            self._scheduler.add_job(
                self._run_check,
                IntervalTrigger(seconds=interval, start_date=first),
                args=[name],
                id=name,
                name=name,
                replace_existing=True,
            )
            self._intervals[name] = interval
