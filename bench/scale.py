"""10,000 checks in one daemon: start-up, memory, /metrics render, loop lag, full reload."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.prober_side import ProberDaemon, Snapshot
from prober.metrics import MetricsSink
from prober.result import Phases, Result, StepResult

_LAG = "prober_event_loop_lag_seconds_bucket{"


@dataclass(frozen=True, slots=True)
class ScaleFigures:
    checks: int
    interval: float
    startup: float
    rss: int
    render: float
    record: float
    scrape_p50: float
    scrape_max: float
    scrape_bytes: int
    lag_p99_bound: float
    lag_over_5ms: float
    lag_samples: int
    reload: float
    reload_window: float
    checks_missing_runs: int
    runs_expected: int
    runs_seen: int


def _lag_buckets(text: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(_LAG):
            le = line[line.index('le="') + 4 :].split('"', 1)[0]
            buckets[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def lag_quantile_bound(
    before: dict[float, float], after: dict[float, float], q: float
) -> tuple[float, float, int]:
    """From two cumulative histograms: (upper bound of the q-quantile, share over 5 ms, count)."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return 0.0, 0.0, 0
    bound = next(le for le, count in deltas if count >= q * total)
    within_5ms = max((count for le, count in deltas if le <= 0.005), default=0.0)
    return bound, 1.0 - within_5ms / total, int(total)


def measure_render(checks: int) -> tuple[float, float]:
    """In-process: (seconds to render /metrics for `checks` checks that all just ran once,
    seconds per Result recorded). Runs in the benchmark's process, not the daemon's."""
    sink = MetricsSink()
    sink.apply({f"c{i:05d}": (("component", f"part{i % 8}"),) for i in range(checks)}, {})
    results = []
    for i in range(checks):
        took = 0.05 + random.random() / 1000
        phases = Phases(resolve=0.0, connect=0.0001, processing=took - 0.0002, transfer=0.0001)
        step = StepResult("request", True, took, status_code=200, phases=phases)
        results.append(Result(f"c{i:05d}", True, took, time.time(), steps=(step,)))
    started = time.perf_counter()
    for result in results:
        sink.record(result)
    record = (time.perf_counter() - started) / checks
    started = time.perf_counter()
    sink.render()
    return time.perf_counter() - started, record


async def _scrape_text(session: aiohttp.ClientSession, base: str) -> tuple[str, float]:
    started = time.perf_counter()
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return text, time.perf_counter() - started


async def measure_scale(
    workdir: Path,
    core: int,
    url: str,
    loop: str,
    checks: int,
    interval: float,
    scrape_every: float,
    scrapes: int,
) -> ScaleFigures:
    """Start a daemon with `checks` checks, let all run once, scrape, reload, stop it."""
    render, record = measure_render(checks)
    daemon = ProberDaemon(workdir, core, checks, interval, url, loop)
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await daemon.wait_all_ran(session, limit=interval * 2 + 10)
            text, _ = await _scrape_text(session, daemon.base)
            lag_before = _lag_buckets(text)
            times: list[float] = []
            size = 0
            for _ in range(scrapes):
                await asyncio.sleep(scrape_every)
                text, took = await _scrape_text(session, daemon.base)
                times.append(took)
                size = len(text)
            lag_p99, over_5ms, lag_count = lag_quantile_bound(lag_before, _lag_buckets(text), 0.99)
            rss = daemon.child.rss()
            reload, window, missing, expected, seen = await _reload(daemon, session, interval)
    finally:
        daemon.stop()
    times.sort()
    return ScaleFigures(
        checks=checks,
        interval=interval,
        startup=daemon.startup,
        rss=rss,
        render=render,
        record=record,
        scrape_p50=times[len(times) // 2],
        scrape_max=times[-1],
        scrape_bytes=size,
        lag_p99_bound=lag_p99,
        lag_over_5ms=over_5ms,
        lag_samples=lag_count,
        reload=reload,
        reload_window=window,
        checks_missing_runs=missing,
        runs_expected=expected,
        runs_seen=seen,
    )


async def _reload(
    daemon: ProberDaemon, session: aiohttp.ClientSession, interval: float
) -> tuple[float, float, int, int, int]:
    """Reload the whole config mid-window; count checks that ran fewer times than they must.

    In a window of L seconds a check with interval I runs at least floor(L / I) times on a
    fixed-rate schedule, whatever its offset; a check below that missed a run.
    """
    before: Snapshot = await daemon.scrape(session)
    after_first = time.perf_counter()
    await asyncio.sleep(interval / 2)
    daemon.config.touch()
    took = await daemon.reload(session)
    await asyncio.sleep(max(0.0, after_first + 2 * interval + 1 - time.perf_counter()))
    scrape_started = time.perf_counter()
    after = await daemon.scrape(session)
    window = scrape_started - after_first
    must = math.floor(window / interval)
    missing = sum(
        1 for name, runs in before.runs.items() if after.runs.get(name, 0.0) - runs < must
    )
    return took, window, missing, must * len(before.runs), int(after.total - before.total)
