"""blackbox_exporter driven at a fixed rate: one /probe request per probe, as Prometheus does."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp

from bench.load import paced
from bench.procs import Child, free_port, sample
from bench.stage import Stage, TargetFigures

EXPORTER = "prometheus-blackbox-exporter"
CONFIG = Path(__file__).with_name("blackbox.yml")


def find_exporter() -> str | None:
    return shutil.which(EXPORTER) or (
        "/usr/bin/" + EXPORTER if Path("/usr/bin/" + EXPORTER).exists() else None
    )


def _parse(text: str) -> tuple[float, bool]:
    duration, success = -1.0, False
    for line in text.splitlines():
        if line.startswith("probe_duration_seconds "):
            duration = float(line.split()[1])
        elif line.startswith("probe_success "):
            success = line.split()[1] == "1"
    return duration, success


class Blackbox:
    """A running blackbox_exporter on one core, with the load generator that drives it."""

    def __init__(self, exporter: str, workdir: Path, core: int) -> None:
        config = workdir / "blackbox.yml"
        shutil.copyfile(CONFIG, config)
        self.port = free_port()
        self.child = Child(
            "blackbox_exporter",
            [
                exporter,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=error",
            ],
            core,
            workdir / "blackbox.log",
            # One core: Go would size GOMAXPROCS from the affinity mask anyway; say it.
            {"GOMAXPROCS": "1"},
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.child.wait_http(f"{self.base}/-/healthy")

    async def stage(
        self, target: str, delay: float, rate: float, warmup: float, window: float
    ) -> Stage:
        """Offer `rate` probes a second for warmup + window; measure over the window."""
        url = f"{self.base}/probe"
        params = {"module": "http_2xx", "target": f"{target}/probe"}
        done: list[tuple[float, float, bool]] = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def probe() -> None:
                try:
                    async with session.get(url, params=params) as response:
                        text = await response.text()
                except (aiohttp.ClientError, OSError):
                    done.append((time.perf_counter(), -1.0, False))
                    return
                duration, success = _parse(text)
                done.append((time.perf_counter(), duration, success))

            driver = asyncio.create_task(
                paced(rate, warmup + window, probe, max_inflight=int(rate * 2) + 100)
            )
            await asyncio.sleep(warmup)
            await TargetFigures.take(session, target)
            start = sample(self.child.pid)
            await asyncio.sleep(window)
            end = sample(self.child.pid)
            target_figures = await TargetFigures.take(session, target)
            await driver
        inside = [d for d in done if start.at <= d[0] < end.at]
        errors = [d[1] - delay for d in inside if d[2]]
        failed = sum(1 for d in inside if not d[2])
        return Stage.measured(
            "blackbox", rate, start, end, len(inside), failed, errors, target_figures
        )

    @staticmethod
    def version(exporter: str) -> str:
        return _version_of(exporter)

    def stop(self) -> None:
        self.child.stop()


def _version_of(exporter: str) -> str:
    output = subprocess.run(
        [exporter, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    first = (output.stdout or output.stderr).splitlines()
    return first[0].strip() if first else "unknown version"
