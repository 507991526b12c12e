"""`prober demo`: the simulated platform and the canary's reference endpoint, each in a child
process, and the daemon probing them.

Each child runs apart, so the sim's load never shows as the prober's own event-loop lag and
stopping the sim leaves the canary's target up. The daemon learns each child's address from
its banner (so `--sim.listen-address 127.0.0.1:0` works), never by polling a port: a port
held by another process fails the demo instead of probing that process. The children's
output goes through the daemon's logger.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

log = logging.getLogger("prober.cli.demo")

START_SECONDS = 15.0


# The end of the sim's banner with --grpc-listen (docs/SIMULATOR.md).
_GRPC_ADDRESS = re.compile(r"gRPC health (\S+)$")


def platform_env(url: str, banner: str) -> dict[str, str]:
    """Where the shipped checks find the sim: its URL, the same as ws://, its gRPC health
    service (from the banner's end)."""
    env = {"PLATFORM_URL": url, "PLATFORM_WS_URL": "ws" + url.removeprefix("http")}
    grpc = _GRPC_ADDRESS.search(banner)
    if grpc is not None:
        env["PLATFORM_GRPC"] = grpc.group(1)
    return env


def canary_env(url: str, banner: str) -> dict[str, str]:
    return {"CANARY_URL": url}


@dataclass(frozen=True, slots=True)
class ChildServer:
    """A `prober` subcommand that serves HTTP, and where the demo points at it."""

    what: str  # for the log: "simulated platform"
    banner: str  # the first line it prints once it listens, up to the URL
    env: Callable[[str, str], dict[str, str]]  # the variables the shipped checks read


SIM = ChildServer("simulated platform", "prober sim: serving ", platform_env)  # sim/server.py
REFERENCE = ChildServer("reference endpoint", "prober reference: serving ", canary_env)


class ChildProcess:
    """A child server; its stdout and stderr relayed to the log by two threads."""

    def __init__(self, server: ChildServer, command: list[str]) -> None:
        self.server = server
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._banner: queue.Queue[str | None] = queue.Queue(maxsize=1)
        assert self.process.stdout is not None and self.process.stderr is not None
        self._relays = [
            threading.Thread(target=self._relay_stdout, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._relay_stderr, args=(self.process.stderr,), daemon=True),
        ]
        for relay in self._relays:
            relay.start()

    def _relay_stdout(self, stream: IO[str]) -> None:
        """Take the banner (logged as the URL and the variables it sets: the rest of it, the
        sim's demo password, is not logged)."""
        announced = False
        for line in stream:
            if not announced and line.startswith(self.server.banner):
                banner = line.removeprefix(self.server.banner).strip()
                env = self.server.env(banner.split()[0], banner)
                log.info(f"{self.server.what} serving", extra={"url": banner.split()[0], **env})
                self._banner.put(banner)
                announced = True
            else:
                log.info(line.rstrip("\n"), extra={"source": self.server.what})
        if not announced:
            self._banner.put(None)

    def _relay_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            log.warning(line.rstrip("\n"), extra={"source": self.server.what})

    def env(self, limit: float = START_SECONDS) -> dict[str, str] | None:
        """The variables that point the checks at the child once it listens; None if it
        exits or stays silent that long."""
        try:
            banner = self._banner.get(timeout=limit)
        except queue.Empty:
            return None
        return None if banner is None else self.server.env(banner.split()[0], banner)

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
    """`prober sim` with the demo's `--sim.listen-address`, `--sim.grpc-listen-address` and
    scenario flags."""
    command = [sys.executable, "-m", "prober", "sim", "--listen", args.sim_listen]
    command += ["--grpc-listen", args.sim_grpc_listen]
    if args.scenario:
        command += ["--scenario", args.scenario, "--speed", args.speed]
    return command


def reference_command(args: argparse.Namespace) -> list[str]:
    """`prober reference` on the demo's `--reference.listen-address`."""
    return [sys.executable, "-m", "prober", "reference", "--listen", args.reference_listen]


def run_demo(args: argparse.Namespace, run_daemon: Callable[[], int]) -> int:
    """Start the sim and the reference endpoint, point PLATFORM_URL (PLATFORM_WS_URL,
    PLATFORM_GRPC) and CANARY_URL at them, run the daemon; exit 1 if either child fails to
    start.

    The variables are set, not defaulted: the demo probes its own children, wherever they
    listen, never what an earlier shell left in the environment.
    """
    children: list[ChildProcess] = []
    try:
        for server, command in ((SIM, sim_command(args)), (REFERENCE, reference_command(args))):
            child = ChildProcess(server, command)
            children.append(child)
            env = child.env()
            if env is None:
                code = child.stop()
                log.error(f"the {server.what} did not start", extra={"exit_code": code})
                return 1
            os.environ.update(env)
        return run_daemon()
    finally:
        for child in children:
            child.stop()
