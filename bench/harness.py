"""prober's probe path without the daemon: `run_check` called at a fixed rate, nothing else.

No scheduler, no metrics, no status, no web server: the difference between this and the
daemon is what the daemon costs. Started by bench/run.py on the prober's core:

    python -m bench.harness --url http://127.0.0.1:PORT/probe --rate 1000 --seconds 12

prints one JSON line: probes done and their reported durations, measured over the last
`--window` seconds (the rest is warm-up). CPU is read from /proc by the caller.
`--path aiohttp` sends every request through aiohttp instead of the lean path
(`prober.probes.lean`), to show what the lean path saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

from bench.load import paced
from bench.procs import Child, sample
from bench.stage import Stage, TargetFigures
from prober.config.model import HttpCheck
from prober.engine.loop import use_event_loop
from prober.engine.runner import RunEnvironment, run_check
from prober.probes import lean
from prober.probes.context import HttpClients
from prober.probes.sessions import SessionStore


async def _run(url: str, rate: float, seconds: float, window: float) -> dict[str, object]:
    check = HttpCheck.model_validate(
        {"name": "h", "kind": "http", "component": "bench", "url": url, "timeout": 5.0}
    )
    env = RunEnvironment(HttpClients("prober-bench"), {}, frozenset(), SessionStore())
    done: list[tuple[float, float, bool]] = []

    async def probe() -> None:
        result = await run_check(check, env)
        done.append((time.perf_counter(), result.duration, result.success))

    started = time.perf_counter()
    print(json.dumps({"window_starts_in": seconds - window}), flush=True)
    try:
        await paced(rate, seconds, probe, max_inflight=int(rate * 2) + 100)
    finally:
        await env.clients.close()
    start = started + seconds - window
    inside = [d for d in done if start <= d[0] < start + window]
    return {
        "done": len(inside),
        "failed": sum(1 for d in inside if not d[2]),
        "durations": [d[1] for d in inside if d[2]],
    }


async def harness_stage(
    workdir: Path,
    core: int,
    target: str,
    delay: float,
    rate: float,
    warmup: float,
    window: float,
    loop: str,
    path: str = "lean",
) -> Stage:
    """Run the harness on `core` and measure it like the daemon: CPU from /proc, errors.

    `path` is the request path (`lean` or `aiohttp`); the stage's system is `harness` for
    the lean path and `harness-aiohttp` for the other.
    """
    argv = [sys.executable, "-m", "bench.harness", "--url", f"{target}/probe", "--path", path]
    argv += ["--rate", str(rate), "--seconds", str(warmup + window), "--window", str(window)]
    log = workdir / f"harness-{path}-{rate:.0f}.log"
    child = Child("harness", argv, core, log, {"PROBER_UVLOOP": loop})
    try:
        child.wait_line('{"window_starts_in"')
        begun = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(max(0.0, begun + warmup - time.perf_counter()))
            await TargetFigures.take(session, target)
            start = sample(child.pid)
            await asyncio.sleep(window)
            end = sample(child.pid)
            target_figures = await TargetFigures.take(session, target)
        line = child.wait_line('{"done"', limit=warmup + window + 20)
    finally:
        child.stop()
    figures = json.loads(line)
    errors = [d - delay for d in figures["durations"]]
    system = "harness" if path == "lean" else f"harness-{path}"
    return Stage.measured(
        system, rate, start, end, figures["done"], figures["failed"], errors, target_figures
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--path", choices=("lean", "aiohttp"), default="lean")
    args = parser.parse_args()
    lean.ENABLED = args.path == "lean"
    use_event_loop()
    figures = asyncio.run(_run(args.url, args.rate, args.seconds, args.window))
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
