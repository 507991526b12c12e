"""`prober` as a child process, its log lines, tools the integration tests need, waiting."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


REPO = Path(__file__).resolve().parents[2]


# How much later than its deadline a probe may end on a loaded machine. Tests that check a
# deadline hold their target far longer than deadline + this, so the bound still proves the
# deadline cut the run short while leaving room for a busy CI machine.
DEADLINE_SLACK = 5.0


def require_tool(name: str) -> str:
    """Path of a Prometheus tool: in CI a missing tool fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package: prometheus); .ci/run installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


async def wait_for(condition: Callable[[], object], limit: float = 10.0) -> None:
    """Wait until condition() (plain or async) is truthy, or fail after `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {limit}s")
        await asyncio.sleep(0.05)


def run_prober(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """`python -m prober ARGS` to completion, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "prober", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )


async def spawn_prober(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path = REPO, merge_stderr: bool = False
) -> asyncio.subprocess.Process:
    """`python -m prober ARGS` as a child process without blocking the event loop; stdout and
    stderr are pipes (one pipe with `merge_stderr`)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prober",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )


async def read_log_until(
    process: asyncio.subprocess.Process, done: Callable[[dict[str, object]], bool]
) -> list[str]:
    """stderr lines of a `prober` child up to and including the first whose log fields satisfy
    `done`; fails if the child exits first."""
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), timeout=60)).decode()
        if not line:
            pytest.fail(f"prober exited before the expected line: {''.join(lines)}")
        lines.append(line)
        if done(log_fields(line)):
            return lines


def log_message(text: str) -> Callable[[dict[str, object]], bool]:
    """A `read_log_until` condition: the line's `msg` is `text`."""
    return lambda fields: fields.get("msg") == text


async def read_base_url(process: asyncio.subprocess.Process, scheme: str = "http") -> str:
    """The base URL a `prober run` child logs (stderr) in its "serving" line once it serves."""
    lines = await read_log_until(process, log_message("serving"))
    metrics = str(log_fields(lines[-1])["metrics"])
    assert metrics.startswith(f"{scheme}://"), lines[-1]
    return metrics.removesuffix("/metrics")


def log_fields(line: str) -> dict[str, object]:
    """One log line of the daemon (JSON, or logfmt with JSON-quoted values) as a dict."""
    line = line.strip()
    if line.startswith("{"):
        fields: dict[str, object] = json.loads(line)
        return fields
    return {key: _logfmt_value(value) for key, value in _LOGFMT_PAIR.findall(line)}


_LOGFMT_PAIR = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)')


def _logfmt_value(text: str) -> str:
    return str(json.loads(text)) if text.startswith('"') else text
