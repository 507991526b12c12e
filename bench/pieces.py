"""The daemon's per-run work, piece by piece: CPU microseconds per run of each part.

One process, one event loop, nothing pinned: real Results from `run_check` against a local
loopback server, then each piece the daemon runs per result timed alone over those Results:
APScheduler's dispatch of a job (a scheduler with N jobs at 1 s whose run does nothing, and
with 10N, where the loop wakes for several jobs at once as it does under load),
MetricsSink.record, StatusSink.record, the daemon's own metrics per run, the verdict
(forget_stale + evaluate, once a second, shared by the N runs of that second) and a scrape
of /metrics for N checks (once a second, likewise shared). It asserts nothing, is bounded
(a few seconds a piece) and is not part of `make bench`; trust relative shares on a loaded
machine, not absolute microseconds.

    python -m bench.pieces [--checks 300] [--runs 3000] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import cast

from prober.config.model import HttpCheck
from prober.engine.loop import LoopLagMonitor, use_event_loop
from prober.engine.runner import RunEnvironment, run_check
from prober.engine.scheduler import Scheduler
from prober.probes.context import HttpClients
from prober.probes.sessions import SessionStore
from prober.result import Result
from prober.sinks.metrics import MetricsSink, SeriesPlan
from prober.sinks.status import StatusSink, Watched

_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
_VARIANTS = 50


class _Answer(asyncio.Protocol):
    """Answers any request at once and closes: the cheapest real target."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(_BODY)
            self.transport.close()


def _cpu_us(calls: int, work: Callable[[], object], rounds: int = 5) -> float:
    """CPU microseconds per call of `work`, called `calls` times in `rounds` rounds: the
    best round's, as timeit does, since other work on the machine only ever adds."""
    per_round = max(calls // rounds, 1)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(per_round):
            work()
        best = min(best, (time.process_time() - start) / per_round)
    return best * 1e6


def _checks(count: int, url: str) -> dict[str, HttpCheck]:
    return {
        f"c{i:05d}": HttpCheck.model_validate(
            {
                "name": f"c{i:05d}",
                "kind": "http",
                "component": f"part{i % 8}",
                "url": url,
                "interval": 1.0,
                "timeout": 5.0,
            }
        )
        for i in range(count)
    }


async def _results(check: HttpCheck, runs: int) -> tuple[list[Result], float]:
    """Real Results of the check, and run_check's CPU microseconds per run (sequential)."""
    env = RunEnvironment(HttpClients("prober-pieces"), {}, frozenset(), SessionStore())
    try:
        results = [await run_check(check, env) for _ in range(_VARIANTS)]
        start = time.process_time()
        for _ in range(runs):
            await run_check(check, env)
        cpu = (time.process_time() - start) / runs * 1e6
    finally:
        await env.clients.close()
    return results, cpu


async def _dispatch_us(names: list[str], seconds: float) -> tuple[float, float]:
    """APScheduler's cost per job run, N jobs at 1 s whose run does nothing: the time spent
    in its `_process_jobs` (due jobs found, submitted, rescheduled, events dispatched) per
    run, and the process's whole CPU per run (the loop's own wake-ups included)."""
    done = 0
    inside = 0.0

    async def run(_: str) -> None:
        nonlocal done
        done += 1

    scheduler = Scheduler(run, lambda _lag: None)
    apscheduler = scheduler._scheduler
    process_jobs = apscheduler._process_jobs

    def timed() -> float | None:
        nonlocal inside
        start = time.perf_counter()
        try:
            return process_jobs()
        finally:
            inside += time.perf_counter() - start

    apscheduler._process_jobs = timed  # type: ignore[method-assign]
    scheduler.apply(dict.fromkeys(names, 1.0), set())
    scheduler.start()
    await asyncio.sleep(1.0)  # every job past its first run
    best = (float("inf"), float("inf"))
    for _ in range(max(int(seconds), 1)):  # the best second, as _cpu_us takes the best round
        start_cpu, start_runs, inside = time.process_time(), done, 0.0
        await asyncio.sleep(1.0)
        runs = max(done - start_runs, 1)
        best = min(best, (inside / runs * 1e6, (time.process_time() - start_cpu) / runs * 1e6))
    scheduler.shutdown()
    return best


def _sinks(checks: dict[str, HttpCheck]) -> tuple[MetricsSink, StatusSink]:
    metrics, status = MetricsSink(), StatusSink()
    metrics.apply({n: SeriesPlan.of(c) for n, c in checks.items()}, {"vantage": "bench"})
    status.apply({n: Watched(c.component, c.kind, c.interval) for n, c in checks.items()})
    return metrics, status


def _per_run(checks: dict[str, HttpCheck], results: list[Result], runs: int) -> dict[str, float]:
    """Each recording piece's CPU microseconds per run, over `runs` Results cycling the
    checks (renamed copies of real Results, made before the clock starts)."""
    names = list(checks)
    feed = [
        dataclasses.replace(results[i % len(results)], check=names[i % len(names)])
        for i in range(runs)
    ]
    metrics, status = _sinks(checks)
    for result in feed[: len(names)]:  # every check past its first rendering
        metrics.record(result)
        status.record(result)
    it = iter(feed)
    figures = {"MetricsSink.record": _cpu_us(runs, lambda: metrics.record(next(it)))}
    it = iter(feed)
    figures["StatusSink.record"] = _cpu_us(runs, lambda: status.record(next(it)))
    daemon = metrics.daemon
    figures["daemon metrics (scheduler lag observe)"] = _cpu_us(
        runs, lambda: daemon.scheduler_lag.observe(0.0005)
    )
    lag = LoopLagMonitor()
    evaluations = max(runs // len(names) // 4, 3)

    def verdict() -> None:
        status.forget_stale()
        daemon.set_verdict(status.evaluate(lag.p99(), 0.1).state)

    per_call = _cpu_us(evaluations, verdict)
    figures["verdict once a second (per run)"] = per_call / len(names)
    per_scrape = _cpu_us(evaluations, lambda: [None for _ in metrics.render_chunks()])
    figures[f"/metrics render of {len(names)} checks once a second (per run)"] = per_scrape / len(
        names
    )
    figures["_render_call_us"] = per_scrape
    figures["_verdict_call_us"] = per_call
    return figures


async def _measure(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    checks = _checks(args.checks, f"http://127.0.0.1:{port}/probe")
    try:
        results, runner_us = await _results(next(iter(checks.values())), min(args.runs, 2000))
    finally:
        server.close()
    dispatch_us, idle_cpu_us = await _dispatch_us(list(checks), args.seconds)
    dense = [f"d{i:05d}" for i in range(args.checks * 10)]
    dense_us, dense_cpu_us = await _dispatch_us(dense, args.seconds)
    figures = {"APScheduler dispatch of a job run (in _process_jobs)": dispatch_us}
    figures.update(_per_run(checks, results, args.runs))
    render_call, verdict_call = figures.pop("_render_call_us"), figures.pop("_verdict_call_us")
    print(f"pieces: {args.checks} checks, {args.runs} recorded runs, loop {type(loop).__name__}")
    print(f"  {'run_check (lean path, loopback, sequential)':58s} {runner_us:8.1f} us/run")
    for name, value in figures.items():
        print(f"  {name:58s} {value:8.1f} us/run")
    print(
        f"  {'daemon pieces together (all but run_check)':58s} {sum(figures.values()):8.1f} us/run"
    )
    print(f"  (one /metrics render {render_call / 1000:.2f} ms; one verdict {verdict_call:.0f} us)")
    print(
        f"  (N no-op jobs: process CPU {idle_cpu_us:.1f} us per run, the loop's wake-ups included;"
    )
    print(
        f"   {len(dense)} no-op jobs: {dense_us:.1f} us per run in _process_jobs, process CPU"
        f" {dense_cpu_us:.1f} us per run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    use_event_loop()
    asyncio.run(_measure(args))


if __name__ == "__main__":
    main()
