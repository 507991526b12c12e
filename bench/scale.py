"""10,000 checks in one daemon: start-up, memory, /metrics render, loop lag, full reload."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from bench.prober_side import ProberDaemon, parse
from prober.config.load import load_config
from prober.result import HttpFacts, Phases, Result, StepResult
from prober.sinks.metrics import MetricsSink, SeriesPlan

_LAG = "prober_event_loop_lag_seconds_bucket{"
_LATE = "prober_scheduler_lag_seconds_bucket{"
_SKIPPED = "prober_scheduler_runs_skipped_total"


@dataclass(frozen=True, slots=True)
class ReloadFigures:
    """A full reload in the middle of a window of about two intervals."""

    seconds: float
    window: float
    runs_skipped: int
    late_p99_bound: float
    late_max_bound: float
    runs_due: int
    runs_done: int

    @property
    def missed(self) -> bool:
        return self.runs_skipped > 0


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
    scrape_lines: int
    lag_p99_bound: float
    lag_over_5ms: float
    lag_samples: int
    reload: ReloadFigures
    config_load: float
    yaml_python: float
    yaml_libyaml: float


def _buckets(text: str, prefix: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound, from exposition text."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line[line.index('le="') + 4 :].split('"', 1)[0]
            buckets[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def quantile_bound(
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
    sink.apply(
        {f"c{i:05d}": SeriesPlan((("component", f"part{i % 8}"),)) for i in range(checks)}, {}
    )
    results = []
    for i in range(checks):
        took = 0.05 + random.random() / 1000
        phases = Phases(resolve=0.0, connect=0.0001, processing=took - 0.0002, transfer=0.0001)
        step = StepResult("request", True, took, facts=HttpFacts(200, phases))
        results.append(Result(f"c{i:05d}", True, took, time.time(), steps=(step,)))
    started = time.perf_counter()
    for result in results:
        sink.record(result)
    record = (time.perf_counter() - started) / checks
    started = time.perf_counter()
    sink.render()
    return time.perf_counter() - started, record


def measure_config_load(path: Path) -> tuple[float, float, float]:
    """In-process: (load_config seconds, YAML compose with PyYAML's pure-Python SafeLoader,
    the same with libyaml's CSafeLoader). Where start-up and reload time go."""
    started = time.perf_counter()
    load_config(path)
    load = time.perf_counter() - started
    text = path.read_text()
    timings = []
    for loader in (yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        started = time.perf_counter()
        yaml.compose(text, Loader=loader)
        timings.append(time.perf_counter() - started)
    return load, timings[0], timings[1]


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
    config_load, yaml_python, yaml_libyaml = measure_config_load(daemon.config)
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await daemon.wait_all_ran(session, limit=interval * 2 + 10)
            text, _ = await _scrape_text(session, daemon.base)
            lag_before = _buckets(text, _LAG)
            times: list[float] = []
            size = lines = 0
            for _ in range(scrapes):
                await asyncio.sleep(scrape_every)
                text, took = await _scrape_text(session, daemon.base)
                times.append(took)
                size, lines = len(text), text.count("\n")
            lag_after = _buckets(text, _LAG)
            lag_p99, over_5ms, lag_count = quantile_bound(lag_before, lag_after, 0.99)
            rss = daemon.child.rss()
            reload = await _reload(daemon, session, interval)
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
        scrape_lines=lines,
        lag_p99_bound=lag_p99,
        lag_over_5ms=over_5ms,
        lag_samples=lag_count,
        reload=reload,
        config_load=config_load,
        yaml_python=yaml_python,
        yaml_libyaml=yaml_libyaml,
    )


async def _reload(
    daemon: ProberDaemon, session: aiohttp.ClientSession, interval: float
) -> ReloadFigures:
    """Reload the whole config (same 10,000 checks, re-read and re-validated) mid-window.

    A missed run is one the scheduler did not start: prober_scheduler_runs_skipped_total
    counts them exactly. How late the others started comes from
    prober_scheduler_lag_seconds over the same window.
    """
    text_before, _ = await _scrape_text(session, daemon.base)
    before = parse(text_before, 0.0)
    window_start = time.perf_counter()
    await asyncio.sleep(interval / 2)
    daemon.config.touch()
    took = await daemon.reload(session)
    await asyncio.sleep(max(0.0, window_start + 2 * interval - time.perf_counter()))
    window = time.perf_counter() - window_start
    text_after, _ = await _scrape_text(session, daemon.base)
    after = parse(text_after, 0.0)
    skipped = int(_counter(text_after, _SKIPPED) - _counter(text_before, _SKIPPED))
    late_before, late_after = _buckets(text_before, _LATE), _buckets(text_after, _LATE)
    late_p99, _, _ = quantile_bound(late_before, late_after, 0.99)
    late_max, _, _ = quantile_bound(late_before, late_after, 1.0)
    due = int(window / interval * len(before.runs))
    return ReloadFigures(
        took, window, skipped, late_p99, late_max, due, int(after.total - before.total)
    )


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
