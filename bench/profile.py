"""Where the daemon's CPU goes per run: `prober run` under cProfile for a bounded time.

N identical http checks at a 1 s interval against the benchmark's 50 ms target, the daemon
on core 0 and the target plus a once-a-second /metrics scraper on core 1 (as `make bench`
lays them out); after the window the daemon is stopped with SIGTERM (a clean exit, so the
profile is written) and the top functions by own time and by cumulative time are printed.
It asserts nothing and is not part of `make bench`.

    python -m bench.profile [--checks 300] [--seconds 20] [--top 25] [--keep daemon.prof]
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.prober_side import write_config
from bench.procs import Child, free_port


def _profile(args: argparse.Namespace, workdir: Path) -> Path:
    target_port, web_port = free_port(), free_port()
    target = Child(
        "target",
        [sys.executable, "-m", "bench.target", "--port", str(target_port), "--delay", "0.05"],
        1,
        workdir / "target.log",
    )
    config, out = workdir / "prober.yml", workdir / "daemon.prof"
    try:
        target.wait_http(f"http://127.0.0.1:{target_port}/-/healthy")
        write_config(config, args.checks, 1.0, 5.0, f"http://127.0.0.1:{target_port}/probe")
        argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "bench.prober_main"]
        argv += ["run", "--config.file", str(config)]
        argv += ["--web.listen-address", f"127.0.0.1:{web_port}", "--log.level", "warn"]
        env = {"PROBER_UVLOOP": "auto"}
        daemon = Child("daemon", argv, 0, workdir / "daemon.log", env)
        try:
            base = f"http://127.0.0.1:{web_port}"
            daemon.wait_http(f"{base}/-/ready")
            os.sched_setaffinity(0, {1})
            stop_at = time.monotonic() + args.seconds
            while time.monotonic() < stop_at:
                with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                    response.read()
                time.sleep(1.0)
        finally:
            daemon.stop(limit=30)
    finally:
        target.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, default=None, help="save the raw profile here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        raw = _profile(args, Path(tmp))
        if args.keep is not None:
            shutil.copyfile(raw, args.keep)
        stats = pstats.Stats(str(raw))
        stats.strip_dirs()
        for order in ("tottime", "cumulative"):
            stats.sort_stats(order).print_stats(args.top)


if __name__ == "__main__":
    main()
