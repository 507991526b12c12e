"""`prober demo`: the simulated platform in a child process, and the daemon probing it.

The sim runs apart so its load never shows as the prober's own event-loop lag. The daemon
learns the sim's address from the sim's banner (so `--sim.listen-address 127.0.0.1:0`
works), never by polling a port: a port held by another process fails the demo instead of
probing that process. The sim's output goes through the daemon's logger.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

log = logging.getLogger("prober.demo")

SIM_START_SECONDS = 15.0
# The first line `prober sim` prints once it listens (prober/sim/server.py).
_SIM_BANNER = "prober sim: serving "


class SimProcess:
    """A `prober sim` child; its stdout and stderr relayed to the log by two threads."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._url: queue.Queue[str | None] = queue.Queue(maxsize=1)
        assert self.process.stdout is not None and self.process.stderr is not None
        self._relays = [
            threading.Thread(target=self._relay_stdout, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._relay_stderr, args=(self.process.stderr,), daemon=True),
        ]
        for relay in self._relays:
            relay.start()

    def _relay_stdout(self, stream: IO[str]) -> None:
        """Take the URL from the banner (the banner's demo password is not logged)."""
        announced = False
        for line in stream:
            if not announced and line.startswith(_SIM_BANNER):
                url = line.removeprefix(_SIM_BANNER).split()[0]
                log.info("simulated platform serving", extra={"url": url})
                self._url.put(url)
                announced = True
            else:
                log.info(line.rstrip("\n"), extra={"source": "sim"})
        if not announced:
            self._url.put(None)

    @staticmethod
    def _relay_stderr(stream: IO[str]) -> None:
        for line in stream:
            log.warning(line.rstrip("\n"), extra={"source": "sim"})

    def url(self, limit: float = SIM_START_SECONDS) -> str | None:
        """The sim's base URL once it listens; None if it exits or stays silent that long."""
        try:
            return self._url.get(timeout=limit)
        except queue.Empty:
            return None

    def stop(self) -> int:
        """Terminate (kill after 5 s), relay what it still wrote; return its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for relay in self._relays:
            relay.join(timeout=2)
        return self.process.returncode


def sim_command(args: argparse.Namespace) -> list[str]:
    """`prober sim` with the demo's `--sim.listen-address` and scenario flags."""
    command = [sys.executable, "-m", "prober", "sim", "--listen", args.sim_listen]
    if args.scenario:
        command += ["--scenario", args.scenario, "--speed", args.speed]
    return command


def run_demo(args: argparse.Namespace, run_daemon: Callable[[], int]) -> int:
    """Start the sim, point PLATFORM_URL at it, run the daemon; exit 1 if the sim fails."""
    sim = SimProcess(sim_command(args))
    try:
        url = sim.url()
        if url is None:
            code = sim.stop()
            log.error("the simulated platform did not start", extra={"sim_exit_code": code})
            return 1
        os.environ["PLATFORM_URL"] = url
        return run_daemon()
    finally:
        sim.stop()
