"""The event loop the daemon runs on: which one (uvloop or asyncio), how the garbage
collector is tuned for it, and how late it wakes (loop lag, the prober's own health)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import time
from collections import deque
from collections.abc import Callable

UVLOOP_MODES = ("auto", "on", "off")
LAG_TICK = 0.1
_LAG_WINDOW = 100
# A full garbage collection after this many middle ones (CPython's default: 10).
_GC_FULL_EVERY = 100
_GC_FULL_EVERY_STDLIB = 10
# Under uvloop, a young collection after this many more container objects than were freed
# (CPython's default: 700). A probe's objects are freed by reference counting within
# milliseconds; at 700, in-flight probes' objects were scanned again and again: at 1,000
# checks a second, eleven young collections (1.4 ms each) and one middle one (6 ms) a
# second, the daemon's main stalls. At 5,000: one collection every few seconds.
_GC_YOUNG_UVLOOP = 5000


def use_event_loop(mode: str | None = None) -> str:
    """Install uvloop's event loop policy if `mode` asks for it; return "uvloop" or "asyncio".

    `auto` uses uvloop when installed (the `fast` extra), `on` requires it, `off` keeps
    asyncio's. Without a mode, PROBER_UVLOOP decides (1/on, 0/off, else auto). Call it
    before `asyncio.run`. uvloop cuts probe CPU; its clock and timers work in whole
    milliseconds, so the scheduler rounds its timer up to whole milliseconds and loop lag
    is timed with perf_counter.
    """
    if mode is None:
        raw = os.environ.get("PROBER_UVLOOP", "auto").strip().lower()
        mode = {"1": "on", "true": "on", "0": "off", "false": "off"}.get(raw, raw)
    if mode not in UVLOOP_MODES:
        raise ValueError(f"uvloop mode {mode!r} must be one of {', '.join(UVLOOP_MODES)}")
    if mode == "off":
        return "asyncio"
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if mode == "on":
            raise ValueError("uvloop is not installed: pip install 'prober[fast]'") from None
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def settle_heap() -> None:
    """Collect, then move every object alive now (config, checks, modules) out of the
    garbage collector's sight. Called after start and after each reload.

    The objects a config creates live until the next reload; with 10,000 checks, scanning
    them in every full collection stalled the event loop for over 100 ms each time. Under
    uvloop a probe leaves no reference cycles behind (asyncio's selector transports do), so
    there full collections, each still tens of milliseconds at that scale, are made rarer,
    and young ones too (_GC_YOUNG_UVLOOP).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    try:
        stdlib_loop = isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)
    except RuntimeError:
        stdlib_loop = True
    if stdlib_loop:
        gc.set_threshold(young, middle, _GC_FULL_EVERY_STDLIB)
    else:
        gc.set_threshold(_GC_YOUNG_UVLOOP, middle, _GC_FULL_EVERY)


class LoopLagMonitor:
    """Measures how late the event loop wakes from a short sleep: the prober's own health."""

    def __init__(self) -> None:
        self.window: deque[float] = deque(maxlen=_LAG_WINDOW)
        self.over_budget_at = 0.0

    def p99(self) -> float:
        """The 99th percentile of the last lags measured (0 before the first)."""
        if not self.window:
            return 0.0
        ordered = sorted(self.window)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    async def watch(self, budget: float, observe: Callable[[float], None]) -> None:
        """Sleep a tick at a time, forever, and note how late each wake-up was.

        Timed with perf_counter, not loop.time(): uvloop's loop clock moves in whole
        milliseconds. `observe` gets every lag (the loop-lag histogram).
        """
        while True:
            expected = time.perf_counter() + LAG_TICK
            await asyncio.sleep(LAG_TICK)
            now = time.perf_counter()
            lag = max(now - expected, 0.0)
            self.window.append(lag)
            observe(lag)
            if lag > budget:
                self.over_budget_at = now
