"""The runner's record of one attempt while it runs, so a run cut short still tells its story.

The runner makes one per attempt and hands it to the probe in its context; the probe says
which step it is in (`begin`) and which steps are over (`done`), and nothing else. When the
runner cuts the attempt short (its deadline, or a bug in the probe) it asks the recorder for
the steps done and for the step under way, failed: ended by the probe's own `finish` where
the probe gave one (so it keeps the phases and facts reached), named by its `stage`.
"""

from __future__ import annotations

from collections.abc import Callable

from prober.result import Reason, StepResult

# How a probe ends its step under way when the run is cut short: given why and the message,
# the step as far as it got (its phases and facts so far), failed.
Finish = Callable[[Reason, str], StepResult]
# What the step under way is doing ("connecting", "reading the body"), for a timeout message.
Stage = Callable[[], str]


class StepRecorder:
    """The steps an attempt has done and the one it is in; written by probes, read by the runner."""

    def __init__(self) -> None:
        self._done: list[StepResult] = []
        self._current = ""
        self._finish: Finish | None = None
        self._stage: Stage | None = None
        # When the bytes the attempt waited for last arrived (perf_counter, taken in the
        # transport's callback), for probes that stamp them; 0.0 = not told. The runner
        # ends the attempt's clock there, so the loop's other work before this run's
        # coroutine resumes (other runs' recording, a scrape) is not in what it reports.
        self.last_byte = 0.0

    def begin(self, name: str, finish: Finish | None = None, stage: Stage | None = None) -> None:
        """The step `name` starts (or, with `finish`/`stage`, says how to end it if cut)."""
        self._current, self._finish, self._stage = name, finish, stage
        self.last_byte = 0.0  # a stamp of an earlier step is not when this one ends

    def done(self, step: StepResult) -> None:
        """A step is over: it joins the steps done; the run is in no step until the next begins."""
        self._done.append(step)
        if step.name == self._current:
            self._current, self._finish, self._stage = "", None, None

    @property
    def current(self) -> str:
        """The step under way ("" between steps)."""
        return self._current

    @property
    def steps(self) -> tuple[StepResult, ...]:
        """The steps done so far, in order."""
        return tuple(self._done)

    def interrupt(self, reason: Reason, message: str, elapsed: float) -> StepResult | None:
        """The step under way, failed with `reason`; None when the run was in no step.

        A timeout's message says what the step was doing where the probe told (`stage`).
        Without a `finish` the step has no facts and lasted the whole attempt (`elapsed`).
        """
        if not self._current:
            return None
        if reason is Reason.TIMEOUT and self._stage is not None:
            message = f"{message} while {self._stage()}"
        if self._finish is not None:
            return self._finish(reason, message)
        return StepResult(self._current, False, elapsed, reason, message)
