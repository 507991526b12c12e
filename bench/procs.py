"""Child processes of the benchmark, pinned to a core, and the /proc meters that watch them."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# Priorities (when allowed, i.e. as root) so that other work on a shared machine disturbs
# the measurement less: the target first (it is the ground truth), then the system under
# test (prober or blackbox_exporter, treated alike), then the benchmark's own process.
NICE_TARGET = -15
NICE_MEASURED = -10
NICE_BENCH = -5


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (stat fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def core_busy_seconds(core: int) -> float:
    """CPU time the core has spent on anything but idle and iowait since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            steal = values[7] if len(values) > 7 else 0
            return (sum(values[:8]) - idle - steal) / _TICKS
    raise ValueError(f"no cpu{core} in /proc/stat")


def cores() -> int:
    return len(os.sched_getaffinity(0))


class Child:
    """A server started for the benchmark, pinned to one core; stopped on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        core: int,
        log: Path,
        env: dict[str, str] | None = None,
        nice: int = NICE_MEASURED,
    ) -> None:
        self.name = name
        self.log_path = log
        prefix = ["taskset", "-c", str(core)]
        if os.geteuid() == 0:  # nice -n adds to our own niceness: ask for the difference
            prefix += ["nice", "-n", str(nice - os.nice(0))]
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [*prefix, *argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.started = time.perf_counter()

    @property
    def pid(self) -> int:
        """The server's own pid: taskset and nice exec into it, so it is the Popen's."""
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def wait_http(self, url: str, limit: float = 30.0) -> float:
        """Wait until url answers 200; return seconds since the start. Raise if it never does."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready within {limit:g}s; see {self.log_path}")

    def wait_line(self, prefix: str, limit: float = 15.0) -> str:
        """Wait for a line starting with prefix in the child's output; return the line."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not print {prefix!r}; see {self.log_path}")

    def stop(self, limit: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `limit` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU counters at one instant: one process, and both cores as a whole."""

    at: float
    process_cpu: float
    core_busy: tuple[float, ...]


def sample(pid: int, core_count: int = 2) -> Sample:
    return Sample(
        time.perf_counter(),
        cpu_seconds(pid),
        tuple(core_busy_seconds(c) for c in range(core_count)),
    )
