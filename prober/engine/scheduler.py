"""One APScheduler job per check; the only module that imports apscheduler.

APScheduler's AsyncIOScheduler runs each check's job at a fixed rate, never overlapping
itself (max_instances=1) and coalescing runs missed while the loop was stalled. This module
adds what a prober needs on top: first runs spread evenly over the interval on a shared grid
(runs due together share the loop's wake-ups), scheduler lag, a count of runs skipped or
coalesced, and a leaner executor (_RunExecutor).
`python -m bench.pieces` measures its cost per run (docs/PERFORMANCE.md).

APScheduler 3 reads the wall clock (`datetime.now`) to decide what is due and how long to
sleep. A wall-clock step back (NTP at boot, a VM resumed) would put every run minutes into
the future, and the loop timer it set would sleep through the clock being put right; a step
forward would make every check overdue at once. So this module gives APScheduler a `now`
that moves with the monotonic clock from an anchor taken at import (`SteadyClock`): wall
steps never reach the schedule, and intervals are intervals of elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from threading import TIMEOUT_MAX
from typing import Any

import apscheduler.executors.base
import apscheduler.jobstores.memory
import apscheduler.schedulers.base
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("prober.engine.scheduler")


class SteadyClock(datetime):
    """A datetime whose `now()` is the wall time at import plus monotonic time elapsed since.

    Handed to APScheduler in place of its `datetime`, so that the schedule follows elapsed
    time whatever happens to the wall clock (see the module docstring).
    """

    _wall_anchor = datetime.now(UTC)
    _monotonic_anchor = time.monotonic()

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        moment = cls._wall_anchor + timedelta(seconds=time.monotonic() - cls._monotonic_anchor)
        if tz is UTC:  # the scheduler's own zone: the anchor's already (called 3 times a run)
            return moment
        return moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None)


def _utc_timestamp(moment: datetime | None) -> float | None:
    """APScheduler's `datetime_to_utc_timestamp` for the aware datetimes its job store
    holds, without building a struct_time: the store converts twice per run."""
    return None if moment is None else moment.timestamp()


# APScheduler 3 calls `datetime.now(tz)` in these two modules only (its triggers get `now`
# passed in, and ours always get a start date).
apscheduler.schedulers.base.datetime = SteadyClock
apscheduler.executors.base.datetime = SteadyClock
apscheduler.jobstores.memory.datetime_to_utc_timestamp = _utc_timestamp


class _CountedSkipFilter(logging.Filter):
    """Drops APScheduler's warning for a run skipped because the previous one still runs.

    Every such skip is counted in `prober_scheduler_runs_skipped_total`; a warning per skip
    would flood the log of a loaded prober with what the metric already says.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_CountedSkipFilter())

RunCheck = Callable[[str], Coroutine[Any, Any, None]]


# Runs start on a grid of whole milliseconds since the epoch (on the scheduler's clock),
# its step chosen at each apply: about this many runs due per step, and never a step over
# _WIDEST_STEP. Runs that share a step start in one wake-up of the event loop, and their
# connects and answers then share wake-ups too: each wake-up of an idle loop costs more
# than a run's own work on some machines (docs/PERFORMANCE.md: 10 ms steps at 300 runs a
# second cut the daemon's CPU per run by a quarter). Few runs per step, because the runs
# of one step queue behind each other on the loop, and that wait is in what they report.
_RUNS_PER_STEP = 3
_WIDEST_STEP = 0.010


def grid_step(intervals: Iterable[float]) -> float:
    """The grid step for checks run at these intervals (whole milliseconds, 1 to 10)."""
    rate = sum(1.0 / interval for interval in intervals if interval > 0)
    step = _RUNS_PER_STEP / rate if rate > 0 else _WIDEST_STEP
    return min(_WIDEST_STEP, max(0.001, round(step * 1000) / 1000))


def _spread(interval: float, count: int, step: float) -> list[float]:
    """First offsets within the interval, one per equal slice, on the grid, in random order.

    Purely random offsets clump (some steps get several starts, others none); one offset
    per slice keeps the start rate even, which keeps the event loop's load even. An offset
    moves by at most half a step to reach the grid.
    """
    offsets = [round(interval * (k + random.random()) / count / step) * step for k in range(count)]
    random.shuffle(offsets)
    return offsets


def _on_grid(moment: datetime, step: float) -> datetime:
    """The grid's first step at or after `moment` (whole microseconds, as datetimes are)."""
    micros, width = round(moment.timestamp() * 1_000_000), round(step * 1_000_000)
    return datetime.fromtimestamp(-(-micros // width) * width / 1_000_000, UTC)


class _RunExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """AsyncIOExecutor cut to what the prober's jobs use: each run is one task, named
    `check:NAME`, running the job's coroutine function itself.

    The stock executor wraps every run in a second coroutine (a logger lookup, an info log
    call and an `EVENT_JOB_EXECUTED` event dispatched to listeners, none of which the
    prober has) and takes a thread lock twice; that was a third of APScheduler's CPU per
    run. Kept: the count of running instances that `max_instances` checks (and that makes
    APScheduler skip and report a run due while the last one runs) and cancelling what
    runs at shutdown. It relies on what Scheduler configures: coalescing (one run time per
    submission) and no misfire grace time, and on being used from the event loop only.
    Added: runs due together start one at a time, every other turn of the loop
    (`submit_job`).
    """

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        # Runs submitted, not yet started: one starts every other turn of the loop (`_start_next`).
        self._waiting: deque[Job] = deque()
        self._turn = False

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        """Start the run, or queue it behind the runs of this round not started yet.

        Runs due together start one at a time, so the loop takes in what has
        arrived (a connection made, an answer) between one run's start and the next's:
        started all at once, each run's connect and answer callbacks would wait for the
        others' start-up work, and that wait would show in every reported latency.
        """
        instances: dict[str, int] = self._instances
        if instances[job.id] >= job.max_instances:
            raise MaxInstancesReachedError(job)
        instances[job.id] += 1
        if self._waiting:
            self._waiting.append(job)
            return
        self._start(job)
        self._waiting.append(job)  # a marker: the next run submitted this turn waits
        self._eventloop.call_soon(self._start_next)

    def _start(self, job: Job) -> None:
        task = self._eventloop.create_task(job.func(*job.args), name=f"check:{job.id}")
        self._pending_futures.add(task)
        task.add_done_callback(self._finished)

    def _start_next(self) -> None:
        """Start the next waiting run (the first entry is the run started last time).

        Called every other turn of the loop: the run started last time made its connect
        in the turn between, and the loop's callbacks for that connect (queued behind
        this call) run before the next run's start-up work does.
        """
        waiting = self._waiting
        self._turn = not self._turn
        if self._turn:
            self._eventloop.call_soon(self._start_next)
            return
        waiting.popleft()
        while waiting:
            job = waiting[0]
            if self._scheduler._jobstores["default"].lookup_job(job.id) is not job:
                waiting.popleft()  # removed or replaced (a reload) before it started
                self._release(job.id)
                continue
            self._start(job)
            self._eventloop.call_soon(self._start_next)
            return

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        self._waiting.clear()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._pending_futures.discard(task)
        self._release(task.get_name().removeprefix("check:"))

    def _release(self, job_id: str) -> None:
        instances: dict[str, int] = self._instances
        instances[job_id] -= 1
        if not instances[job_id]:
            del instances[job_id]


# Told of each run due: the check, when it was due, and whether it started (False: the
# previous run still runs).
OnDue = Callable[[str, datetime, bool], None]


class _AsyncIOScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler with a leaner round of due jobs, whose timer waits whole milliseconds
    when the loop counts in them.

    uvloop rounds timers to the nearest millisecond, so a sub-millisecond wait can wake
    early and spin until the job is due; rounding the wait up avoids that.
    """

    whole_ms = False
    on_due: OnDue | None = None

    def _process_jobs(self) -> float | None:
        """BaseScheduler._process_jobs for what Scheduler configures: the one memory job
        store and executor, interval triggers, coalescing, no misfire grace time.

        The same steps (due jobs from the store, each submitted to the executor or refused
        for max_instances, rescheduled by its trigger, the store re-sorted, the wait to the
        next due job) without what the prober does not use: three debug log calls, the
        executor and store lookups, an event object per run dispatched to listeners (one
        direct `on_due` call instead), Job._modify's checks of a next run time the trigger
        itself made, and a second trigger call per run for the time _get_run_times already
        computed (`python -m bench.pieces` times the round per run).
        """
        if self.state == STATE_PAUSED:
            return None
        now = SteadyClock.now(UTC)
        store, executor = self._jobstores["default"], self._executors["default"]
        due_runs: list[tuple[str, datetime, bool]] = []
        with self._jobstores_lock:
            for job in store.get_due_jobs(now):
                due, trigger = job.next_run_time, job.trigger
                later = trigger.get_next_fire_time(due, now)
                while later is not None and later <= now:  # runs missed: coalesced into one
                    due, later = later, trigger.get_next_fire_time(later, now)
                try:
                    executor.submit_job(job, [due])
                    due_runs.append((job.id, due, True))
                except MaxInstancesReachedError:
                    due_runs.append((job.id, due, False))
                except Exception:  # a bug: the other jobs and the timer must go on
                    log.exception("starting a run of check %r failed", job.id)
                if later is None:
                    self.remove_job(job.id, "default")
                else:
                    job.next_run_time = later
                    store.update_job(job)
            next_run = store.get_next_run_time()
        if self.on_due is not None:
            for job_id, due, started in due_runs:
                self.on_due(job_id, due, started)
        if next_run is None:
            return None
        return float(
            min(max(next_run.timestamp() - SteadyClock.now(UTC).timestamp(), 0), TIMEOUT_MAX)
        )

    def _start_timer(self, wait_seconds: float | None) -> None:
        if wait_seconds is not None and self.whole_ms:
            wait_seconds = math.ceil(wait_seconds * 1000) / 1000
        super()._start_timer(wait_seconds)


class Scheduler:
    """Runs `run_check(name)` every interval for each check.

    Each check starts at a random offset within its interval (checks that start together
    are spread evenly over it, on the grid of `grid_step`), then runs at a fixed rate. A
    run that comes due while the previous one still runs is skipped, and runs missed while
    the loop was stalled are coalesced into one; both are counted in `runs_skipped`.
    """

    def __init__(
        self,
        run_check: RunCheck,
        on_lag: Callable[[float], None],
        on_skipped: Callable[[int], None] | None = None,
    ) -> None:
        self._scheduler = _AsyncIOScheduler(
            timezone=UTC,
            executors={"default": _RunExecutor()},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        self._scheduler.on_due = self._on_due
        self._run_check = run_check
        self._on_lag = on_lag
        self._on_skipped = on_skipped
        self._intervals: dict[str, float] = {}
        self._last_due: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.runs_skipped = 0

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def next_runs(self) -> dict[str, float]:
        """When each scheduled check runs next, as unix time (nothing once shut down)."""
        return {
            job.id: job.next_run_time.timestamp()
            for job in self._scheduler.get_jobs()
            if job.next_run_time is not None
        }

    def start(self) -> None:
        """Start running jobs; call from the running event loop."""
        if not self._scheduler.running:
            loop = asyncio.get_running_loop()
            self._scheduler.whole_ms = not isinstance(loop, asyncio.BaseEventLoop)
            self._scheduler.start()

    def shutdown(self) -> None:
        """Start no more runs and cancel runs still going (the caller drains them first)."""
        if self._scheduler.running:
            # APScheduler's asyncio shutdown happens on the loop's next turn; removing the
            # jobs now makes "no more runs" true at once.
            self._scheduler.remove_all_jobs()
            self._scheduler.shutdown(wait=False)
        self._intervals.clear()
        self._last_due.clear()
        for task in list(self._tasks):
            task.cancel()

    def apply(self, intervals: Mapping[str, float], changed: set[str]) -> None:
        """Schedule exactly these checks; unchanged ones keep their timing.

        `changed` names checks whose settings differ from the running ones: they restart at
        a new random offset. Runs already going are left to finish (or to the caller).
        """
        for name in [n for n in self._intervals if n not in intervals]:
            self._drop(name)
        starting: dict[float, list[str]] = {}
        for name, interval in intervals.items():
            known = self._intervals.get(name)
            if known is not None and name not in changed and known == interval:
                continue
            if known is not None:
                self._drop(name)
            starting.setdefault(interval, []).append(name)
        step = grid_step(intervals.values())
        start = _on_grid(SteadyClock.now(UTC), step)
        for interval, names in starting.items():
            for name, offset in zip(names, _spread(interval, len(names), step), strict=True):
                self._scheduler.add_job(
                    self._run,
                    IntervalTrigger(seconds=interval, start_date=start + timedelta(seconds=offset)),
                    args=[name],
                    id=name,
                    name=name,
                )
                self._intervals[name] = interval

    def _drop(self, name: str) -> None:
        self._scheduler.remove_job(name)
        del self._intervals[name]
        self._last_due.pop(name, None)

    def _on_due(self, name: str, due: datetime, started: bool) -> None:
        """Scheduler lag for each run started; skipped and coalesced runs counted."""
        interval = self._intervals.get(name)
        if interval is None:
            return
        skipped = 0 if started else 1
        previous = self._last_due.get(name)
        if previous is not None:
            # Coalesced runs leave a gap of several intervals between consecutive runs.
            skipped += max(round((due - previous).total_seconds() / interval) - 1, 0)
        self._last_due[name] = due
        if started:
            self._on_lag(max((SteadyClock.now(UTC) - due).total_seconds(), 0.0))
        if skipped:
            self.runs_skipped += skipped
            if self._on_skipped is not None:
                self._on_skipped(skipped)

    async def _run(self, name: str) -> None:
        """APScheduler's job, run by _RunExecutor in a task of its own, named `check:NAME`.

        The daemon cancels that task when a reload removes or changes the check, or at
        shutdown; the executor takes a cancelled run as over, never as an error to log.
        """
        run = asyncio.current_task()
        if run is not None:
            self._tasks.add(run)
            run.add_done_callback(self._tasks.discard)
        try:
            await self._run_check(name)
        except Exception:
            # A bug in the daemon, not a target failure (probes map those to a Reason):
            # report it with its traceback and keep scheduling the other runs.
            log.exception("run of check %r raised", name)
