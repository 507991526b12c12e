"""Accelerated soak: many checks at short intervals against the sim, faults switching on and
off, watching the daemon's RSS, open fds, asyncio tasks and series count for growth.

    python -m bench.soak                                   # `make soak`: 1,000 checks, 15 min
    python -m bench.soak --checks 200 --interval 1 --duration 60 --warmup 25   # in make test

Exit 0 when nothing grows without bound (RSS within 10% of its value after warm-up; fds,
tasks and series flat), 1 otherwise. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Child, free_port

# Faults cycled through while the soak runs: each leaves some state behind if anything leaks
# (hung requests, reset connections, failed logins, big bodies).
FAULT_CYCLE: list[dict[str, dict[str, object]]] = [
    {},
    {"notifications": {"status": 503}},
    {"all": {"error_rate": 0.3, "status": 503}},
    {"timeline": {"hang": True}},
    {"login": {"status": 401}},
    {"api": {"reset": True}},
    {"all": {"body_bytes": 200_000}},
    {"notifications": {"malformed": "json"}},
]
RSS_GROWTH = 0.10
FD_SLACK = 16
TASK_SLACK = 0.25
SERIES_SLACK = 0.01


def write_config(directory: Path, checks: int, interval: float, platform: str) -> Path:
    """N checks spread over the four components and both kinds."""
    kinds = [
        ("api", "http", f"url: {platform}/api/v1/health"),
        ("login", "flow", _flow(platform, "read", None, "/api/v1/timeline/home?limit=5")),
        ("timeline", "flow", _flow(platform, "read", "soak", "/api/v1/timeline/home?limit=5")),
        ("notifications", "flow", _flow(platform, "read", "soak", "/api/v1/notifications")),
    ]
    lines = ["checks:"]
    for index in range(checks):
        component, kind, body = kinds[index % len(kinds)]
        lines.append(
            f"  - name: soak-{index}\n    kind: {kind}\n    component: {component}\n    {body}"
        )
    (directory / "checks.yml").write_text("\n".join(lines) + "\n")
    main = directory / "prober.yml"
    timeout = min(interval * 0.8, 2.0)
    main.write_text(
        f"interval: {interval}s\ntimeout: {timeout}s\ncheck_files: [checks.yml]\n"
        "secrets: {pw: {env: SOAK_PASSWORD, default: demo-password}}\n"
    )
    return main


def _flow(platform: str, read_step: str, session: str | None, path: str) -> str:
    login = (
        "      - name: login\n"
        + (f"        session: {session}\n        session_ttl: 20s\n" if session else "")
        + "        method: POST\n"
        f"        url: {platform}/api/v1/login\n"
        '        json: {username: demo, password: "${pw}"}\n'
        "        extract: {token: $.access_token}\n"
    )
    read = (
        f"      - name: {read_step}\n        url: {platform}{path}\n"
        '        headers: {Authorization: "Bearer ${token}"}\n'
    )
    return "steps:\n" + login + read


@dataclass
class Reading:
    at: float
    rss_mb: float
    fds: int
    tasks: int
    series: int


def read_daemon(child: Child, metrics_url: str, start: float) -> Reading:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    tasks = 0
    series = 0
    for line in text.splitlines():
        if line.startswith("prober_asyncio_tasks "):
            tasks = int(float(line.split()[1]))
        elif line and not line.startswith("#"):
            series += 1
    fds = len(list(Path(f"/proc/{child.pid}/fd").iterdir()))
    return Reading(time.monotonic() - start, child.rss() / 1e6, fds, tasks, series)


def set_faults(sim_url: str, faults: dict[str, dict[str, object]]) -> None:
    request = urllib.request.Request(f"{sim_url}/-/faults", method="DELETE")
    with urllib.request.urlopen(request, timeout=5):
        pass
    for component, fault in faults.items():
        request = urllib.request.Request(
            f"{sim_url}/-/faults/{component}",
            data=json.dumps(fault).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5):
            pass


def judge(readings: list[Reading], warmup: float) -> list[str]:
    """What grew without bound after warm-up; empty when the soak passed."""
    settled = [r for r in readings if r.at >= warmup]
    if len(settled) < 4:
        return ["too few samples after warm-up: run longer or sample more often"]
    half = len(settled) // 2
    first, second = settled[:half], settled[half:]
    baseline = settled[0].rss_mb
    problems = []
    peak = max(r.rss_mb for r in settled)
    if peak > baseline * (1 + RSS_GROWTH):
        problems.append(f"RSS grew from {baseline:.1f} MB to {peak:.1f} MB (> 10%)")
    if max(r.fds for r in second) > max(r.fds for r in first) + FD_SLACK:
        problems.append("open fds keep growing")
    task_bound = max(r.tasks for r in first) * (1 + TASK_SLACK) + 10
    if max(r.tasks for r in second) > task_bound:
        problems.append("asyncio tasks keep growing")
    # New (reason, step) failure series may still appear as faults come round; a leak (an
    # unbounded label) grows with every run instead.
    series_bound = max(r.series for r in first) * (1 + SERIES_SLACK)
    if max(r.series for r in second) > series_bound:
        problems.append("/metrics series keep growing")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between runs")
    parser.add_argument("--duration", type=float, default=900.0, help="seconds in all")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the baseline (default: 40 intervals, min 60 s)",
    )
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between readings")
    parser.add_argument(
        "--fault-period", type=float, default=None, help="seconds per fault (default: 3 intervals)"
    )
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = max(60.0, 40 * args.interval)
    if args.fault_period is None:
        args.fault_period = 3 * args.interval
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prober-soak-") as tmp:
        directory = Path(tmp)
        sim_port, prober_port = free_port(), free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        config = write_config(directory, args.checks, args.interval, sim_url)
        python = sys.executable
        sim = Child(
            "sim",
            [
                python,
                "-m",
                "prober",
                "sim",
                "--listen",
                f"127.0.0.1:{sim_port}",
                "--latency-ms",
                "1",
                "--latency-jitter-ms",
                "2",
            ],
            1,
            directory / "sim.log",
            None,
        )
        daemon: Child | None = None
        try:
            sim.wait_http(f"{sim_url}/-/healthy")
            daemon = Child(
                "prober",
                [
                    python,
                    "-m",
                    "prober",
                    "run",
                    "--config.file",
                    str(config),
                    "--web.listen-address",
                    f"127.0.0.1:{prober_port}",
                    "--log.level",
                    "error",
                ],
                0,
                directory / "prober.log",
                None,
            )
            metrics_url = f"http://127.0.0.1:{prober_port}/metrics"
            daemon.wait_http(f"http://127.0.0.1:{prober_port}/-/ready")
            readings = soak(daemon, sim_url, metrics_url, args)
        finally:
            if daemon is not None:
                daemon.stop()
            sim.stop()
    print(f"{'seconds':>8} {'RSS MB':>8} {'fds':>6} {'tasks':>6} {'series':>8}")
    for r in readings:
        print(f"{r.at:8.0f} {r.rss_mb:8.1f} {r.fds:6d} {r.tasks:6d} {r.series:8d}")
    problems = judge(readings, args.warmup)
    for problem in problems:
        print(f"LEAK: {problem}")
    summary = "FAIL" if problems else "PASS"
    print(
        f"soak {summary}: {args.checks} checks every {args.interval:g}s for "
        f"{args.duration:g}s, baseline after {args.warmup:g}s"
    )
    return 1 if problems else 0


def soak(daemon: Child, sim_url: str, metrics_url: str, args: argparse.Namespace) -> list[Reading]:
    start = time.monotonic()
    readings: list[Reading] = []
    next_sample = next_fault = 0.0
    fault_index = 0
    while (now := time.monotonic() - start) < args.duration:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"prober exited during the soak; see {daemon.log_path}")
        if now >= next_fault:
            with contextlib.suppress(OSError):
                set_faults(sim_url, FAULT_CYCLE[fault_index % len(FAULT_CYCLE)])
            fault_index += 1
            next_fault += args.fault_period
        if now >= next_sample:
            readings.append(read_daemon(daemon, metrics_url, start))
            next_sample += args.sample
        time.sleep(max(0.05, min(next_sample, next_fault) - (time.monotonic() - start)))
    return readings


if __name__ == "__main__":
    raise SystemExit(main())
