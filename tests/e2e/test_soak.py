"""A one-minute version of `make soak`: the same leak checks, run in `make test`."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import REPO


def test_short_soak_finds_no_leak() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--checks",
            "200",
            "--interval",
            "1",
            "--duration",
            "60",
            "--warmup",
            "30",
            "--sample",
            "5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "soak PASS" in run.stdout
