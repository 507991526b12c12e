"""Fire requests at a fixed rate for a bounded time; percentiles of what came back."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

# Never sleep less than this between bursts: uvloop rounds timers to whole milliseconds.
_TICK = 0.001


async def paced(
    rate: float, seconds: float, fire: Callable[[], Coroutine[Any, Any, None]], max_inflight: int
) -> int:
    """Start `fire()` `rate` times a second for `seconds`; return how many were not started.

    Requests due in the same millisecond start together. A request is skipped (and counted)
    when `max_inflight` are already running, so an overloaded server cannot make the load
    generator grow without bound. Waits for the last requests at most 10 s.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * seconds)
    start = loop.time()
    skipped = 0
    sent = 0
    while sent < total:
        due_now = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due_now:
            sent += 1
            if len(tasks) >= max_inflight:
                skipped += 1
                continue
            task = asyncio.create_task(fire())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        next_due = start + sent / rate
        await asyncio.sleep(max(_TICK, math.ceil((next_due - loop.time()) * 1000) / 1000))
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=10.0)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
    return skipped


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of already sorted values (nearest rank); 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * q) - 1))]
