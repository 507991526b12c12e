"""A deadline for the task that is running, as one timer on the loop.

`asyncio.timeout_at` does the same with a context manager around a timer (about twice a
timer's CPU under uvloop); this runs twice per probe (the runner's attempt, h1's request),
so the hot path holds the timer alone. The bookkeeping is `asyncio.timeout`'s: the timer
cancels the task wherever it waits, and `reached` tells that cancellation from one that came
from outside (a shutdown, an outer deadline), which must go on.
"""

from __future__ import annotations

import asyncio


class Deadline:
    """Cancels the current task at `deadline` (loop time) unless closed first.

    Use: `late = Deadline(loop, when)`; `try: ... except CancelledError: if not
    late.reached(): raise ...; finally: late.close()`.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a Deadline bounds a task: call it from one")
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = False
        self._handle = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def reached(self) -> bool:
        """Whether the cancellation being handled is this deadline's alone; it is taken
        back then. False for one from outside (or none of this deadline's)."""
        if not self._fired:
            return False
        self._fired = False  # taken back once
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        """Stop the timer; a cancellation it made that no await saw is taken back."""
        self._handle.cancel()
        if self._fired:
            self._fired = False
            self._task.uncancel()
