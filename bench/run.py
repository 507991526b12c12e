"""`make bench`: prober against blackbox_exporter on this machine, then prober at 10,000 checks.

Layout (2 cores): core 0 runs the system under test (prober's daemon, or blackbox_exporter);
core 1 runs the 50 ms target, this process (the load generator for blackbox_exporter, the
scraper for prober) and nothing else of ours. Every figure is printed, then written with the
machine and date to docs/PERFORMANCE.md (unless --no-write).

    make bench                 # about 5 minutes
    make bench ARGS=--quick    # about 2 minutes, shorter windows, fewer steps
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from bench.blackbox import Blackbox, find_exporter
from bench.harness import harness_stage
from bench.prober_side import ProberDaemon
from bench.procs import NICE_BENCH, NICE_TARGET, Child, cores, free_port
from bench.report import Report, write_report
from bench.scale import measure_scale
from bench.stage import Stage
from prober.engine.loop import use_event_loop

DELAY = 0.05
PROBE_CORE = 0
LOAD_CORE = 1
DEFAULT_OUTPUT = Path("docs/PERFORMANCE.md")


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and at what rates to measure."""

    rates: tuple[float, ...]
    window: float
    step_rates: tuple[float, ...]
    step_window: float
    warmup: float
    scale_checks: int
    scale_interval: float
    scrape_every: float
    scrapes: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                rates=(300, 1000),
                window=8,
                step_rates=(1500, 2000, 2500, 3000, 4000),
                step_window=5,
                warmup=2,
                scale_checks=10_000,
                scale_interval=15,
                scrape_every=5,
                scrapes=3,
            )
        return cls(
            rates=(300, 1000),
            window=20,
            step_rates=(1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000),
            step_window=8,
            warmup=3,
            scale_checks=10_000,
            scale_interval=15,
            scrape_every=10,
            scrapes=4,
        )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer steps")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--loop", choices=("auto", "on", "off"), default="auto", help="uvloop for prober"
    )
    parser.add_argument("--skip-blackbox", action="store_true")
    parser.add_argument("--skip-compare", action="store_true", help="no 300/s, 1000/s stages")
    parser.add_argument("--skip-steps", action="store_true", help="no step-up to the limit")
    parser.add_argument("--skip-scale", action="store_true", help="no 10,000-check figures")
    return parser.parse_args(argv)


def _check_machine() -> None:
    if not sys.platform.startswith("linux"):
        raise SystemExit("bench: needs Linux (/proc, taskset)")
    if cores() < 2 or shutil.which("taskset") is None:
        raise SystemExit("bench: needs 2 cores and taskset (util-linux)")


async def _prober_stage(workdir: Path, target: str, rate: float, window: float, loop: str) -> Stage:
    """A fresh daemon with `rate` checks at a 1 s interval; measured once all have run."""
    daemon = ProberDaemon(workdir, PROBE_CORE, int(rate), 1.0, f"{target}/probe", loop)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await daemon.wait_all_ran(session, limit=10)
            await asyncio.sleep(1.0)
            return await daemon.stage(session, target, DELAY, rate, window)
    finally:
        daemon.stop()


async def _compare(
    plan: Plan, workdir: Path, target: str, blackbox: Blackbox | None, loop: str, report: Report
) -> None:
    for rate in plan.rates:
        report.add_stage(await _prober_stage(workdir, target, rate, plan.window, loop))
        if blackbox is not None:
            stage = await blackbox.stage(target, DELAY, rate, plan.warmup, plan.window)
            report.add_stage(stage)
        # Where prober's time goes: the probe path alone, without the daemon around it, on
        # the lean request path and on aiohttp's.
        half = plan.window / 2
        for path in ("lean", "aiohttp"):
            stage = await harness_stage(
                workdir, PROBE_CORE, target, DELAY, rate, plan.warmup, half, loop, path
            )
            report.add_stage(stage)
    if loop != "off":  # and what uvloop is worth: the daemon on asyncio's own loop
        rate = max(plan.rates)
        stage = await _prober_stage(workdir, target, rate, plan.window / 2, "off")
        report.add_stage(replace(stage, system="prober-asyncio"))


async def _step_up(
    plan: Plan, workdir: Path, target: str, blackbox: Blackbox | None, loop: str, report: Report
) -> None:
    """Raise the rate until a system no longer sustains it; both start from 1000/s."""
    prober_ok = blackbox_ok = True
    for rate in plan.step_rates:
        if prober_ok:
            stage = await _prober_stage(workdir, target, rate, plan.step_window, loop)
            report.add_step(stage)
            prober_ok = stage.sustained
        if blackbox is not None and blackbox_ok:
            stage = await blackbox.stage(target, DELAY, rate, plan.warmup, plan.step_window)
            report.add_step(stage)
            blackbox_ok = stage.sustained
        if not prober_ok and not (blackbox is not None and blackbox_ok):
            break


async def _run(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    plan = Plan.of(args.quick)
    port = free_port()
    target = Child(
        "target",
        [sys.executable, "-m", "bench.target", "--port", str(port), "--delay", str(DELAY)],
        LOAD_CORE,
        workdir / "target.log",
        nice=NICE_TARGET,
    )
    base = f"http://127.0.0.1:{port}"
    blackbox: Blackbox | None = None
    try:
        target.wait_http(f"{base}/-/healthy")
        exporter = None if args.skip_blackbox else find_exporter()
        if exporter is not None:
            blackbox = Blackbox(exporter, workdir, PROBE_CORE)
            report.blackbox_version = Blackbox.version(exporter)
        elif not args.skip_blackbox:
            print("bench: prometheus-blackbox-exporter not found; prober only", flush=True)
        if not args.skip_compare:
            await _compare(plan, workdir, base, blackbox, args.loop, report)
        if not args.skip_steps:
            await _step_up(plan, workdir, base, blackbox, args.loop, report)
        if blackbox is not None:
            blackbox.stop()
            blackbox = None
        if not args.skip_scale:
            report.scale = await measure_scale(
                workdir,
                PROBE_CORE,
                f"{base}/probe",
                args.loop,
                plan.scale_checks,
                plan.scale_interval,
                plan.scrape_every,
                plan.scrapes,
            )
            print(report.scale_summary(), flush=True)
    finally:
        if blackbox is not None:
            blackbox.stop()
        target.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _check_machine()
    os.sched_setaffinity(0, {LOAD_CORE})
    if os.geteuid() == 0:
        os.nice(NICE_BENCH)  # see bench/procs.py: the target and the servers come first
    loop_name = use_event_loop("auto")
    if loop_name != "uvloop":
        print(
            "bench: uvloop is not installed, so prober runs on asyncio's loop; for the "
            "figures prober ships with: .venv/bin/pip install -e '.[fast]'",
            flush=True,
        )
    report = Report(quick=args.quick, prober_loop=args.loop, bench_loop=loop_name)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prober-bench-") as tmp:
        asyncio.run(_run(args, Path(tmp), report))
    report.took = time.perf_counter() - started
    text = report.render()
    print(text)
    if not args.no_write:
        write_report(args.output, text)
        print(f"bench: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
