"""A whole detection stack as real processes on loopback: the simulated platform, the canary's
reference endpoint, one or more `prober run` daemons (vantage points), and a real Prometheus
with the shipped rules. `make detect` and the end-to-end detection test both use it.

Every part is its own process, so an outage can be made the way it happens: a host that stops
answering (SIGSTOP), a host that is gone (SIGKILL, connections refused), or one vantage's
path cut (a TCP relay in front of the platform that stops relaying).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
# Alert name -> label set (sorted pairs) -> state (pending or firing).
AlertStates = dict[str, dict[tuple[tuple[str, str], ...], str]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, limit: float = 30.0) -> None:
    """Wait until `url` answers 200, or raise TimeoutError."""
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {limit:g}s")


@dataclass
class Proc:
    """A child process of the stack; stopped (and reaped) by `stop()`."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    log: Path | None = None
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> Proc:
        out: Any = asyncio.subprocess.DEVNULL
        if self.log is not None:
            out = self.log.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        if self.log is not None:
            out.close()
        return self

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


def prober_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "prober", *args]


def shipped_config(directory: Path, interval: str = "15s", timeout: str = "5s") -> Path:
    """The shipped prober.yml and checks/, with the given interval and timeout."""
    text = (REPO / "prober.yml").read_text()
    text = text.replace("checks/*.yml", str(REPO / "checks" / "*.yml"))
    text = text.replace("interval: 15s", f"interval: {interval}")
    text = text.replace("timeout: 5s", f"timeout: {timeout}")
    path = directory / "prober.yml"
    path.write_text(text)
    return path


class Relay:
    """A TCP relay in front of the platform for one vantage point; `cut()` makes its path
    black-hole (connections accepted, nothing relayed), `mend()` relays again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.transport.abort()  # pooled connections die with the path

    def mend(self) -> None:
        self.cut_off = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.cut_off:
                await reader.read()  # swallow whatever comes, answer nothing
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self.cut_off and (data := await reader.read(65536)):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()


@dataclass
class Vantage:
    """One prober daemon and where it sends its platform traffic."""

    name: str
    daemon: Proc
    port: int
    relay: Relay | None = None


@dataclass
class Stack:
    """Sim + reference + vantage daemons + Prometheus, all on loopback; `close()` ends all."""

    directory: Path
    sim: Proc
    sim_port: int
    reference: Proc
    reference_port: int
    vantages: list[Vantage]
    prometheus: Proc
    prometheus_url: str
    relays: list[Relay] = field(default_factory=list)

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    async def alerts(self) -> AlertStates:
        """Every alert Prometheus has now, pending or firing, by name and labels."""
        url = f"{self.prometheus_url}/api/v1/alerts"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            data: dict[str, Any] = await resp.json()
        states: AlertStates = {}
        for alert in data["data"]["alerts"]:
            labels = dict(alert["labels"])
            name = labels.pop("alertname")
            states.setdefault(name, {})[tuple(sorted(labels.items()))] = alert["state"]
        return states

    async def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.prometheus_url}/api/v1/query"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params={"query": expr}) as r,
        ):
            data: dict[str, Any] = await r.json()
            return data

    async def fault(self, component: str, spec: Mapping[str, Any] | None) -> None:
        """PUT (or, with None, DELETE) a fault on the sim's admin API."""
        url = f"{self.sim_url}/-/faults/{component}"
        async with aiohttp.ClientSession() as session:
            request = session.delete(url) if spec is None else session.put(url, json=spec)
            async with request as resp:
                if resp.status not in (200, 204):
                    raise RuntimeError(f"fault {component}: {resp.status} {await resp.text()}")

    async def restart_sim(self) -> None:
        """Start the platform again on the same port after it was killed."""
        await self.sim.stop()
        await self.sim.start()
        await wait_http(f"{self.sim_url}/-/healthy")

    async def close(self) -> None:
        for proc in (self.prometheus, *(v.daemon for v in self.vantages), self.sim):
            await proc.stop()
        await self.reference.stop()
        for relay in self.relays:
            await relay.stop()


def _prometheus_config(targets: list[str], interval: str | None) -> dict[str, Any]:
    """The shipped prometheus.yml's intervals and rules, scraping these targets.

    With `interval` None the shipped intervals stay (15 s): `make detect` measures those.
    """
    shipped = yaml.safe_load((REPO / "prometheus.yml").read_text())
    globals_ = dict(shipped["global"])
    scrape = dict(shipped["scrape_configs"][0])
    if interval is not None:
        globals_.update(scrape_interval=interval, evaluation_interval=interval)
        scrape["scrape_interval"] = interval
    scrape["static_configs"] = [{"targets": targets}]
    return {
        "global": globals_,
        "rule_files": [str(REPO / rule) for rule in shipped["rule_files"]],
        "scrape_configs": [scrape],
    }


async def start_stack(
    directory: Path,
    vantages: Sequence[str] = ("local",),
    relayed: Sequence[str] = (),
    check_interval: str = "15s",
    check_timeout: str = "5s",
    prometheus_interval: str | None = None,
    prometheus: str = "prometheus",
) -> Stack:
    """Start every part and wait until each answers. `relayed` vantages reach the platform
    through a Relay of their own (so their path can be cut alone)."""
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before any I/O)
    log = directory / "stack.log"
    sim_port, grpc_port, reference_port = free_port(), free_port(), free_port()
    sim = await Proc(
        "sim",
        prober_argv("sim", "--listen", f"127.0.0.1:{sim_port}", "--latency-ms", "1",
                    "--latency-jitter-ms", "0", "--seed", "7",
                    "--grpc-listen", f"127.0.0.1:{grpc_port}"),
        log=log,
    ).start()  # fmt: skip
    reference = await Proc(
        "reference", prober_argv("reference", "--listen", f"127.0.0.1:{reference_port}"), log=log
    ).start()
    await wait_http(f"http://127.0.0.1:{sim_port}/-/healthy")
    await wait_http(f"http://127.0.0.1:{reference_port}/-/healthy")
    config = shipped_config(directory, check_interval, check_timeout)
    started: list[Vantage] = []
    relays: list[Relay] = []
    for name in vantages:
        relay = await Relay(sim_port).start() if name in relayed else None
        grpc_relay = await Relay(grpc_port).start() if name in relayed else None
        if relay is not None and grpc_relay is not None:
            relays += [relay, grpc_relay]  # a cut path cuts both
        platform_port = relay.port if relay is not None else sim_port
        grpc_at = grpc_relay.port if grpc_relay is not None else grpc_port
        env = dict(os.environ)
        env.update(
            PLATFORM_URL=f"http://127.0.0.1:{platform_port}",
            PLATFORM_WS_URL=f"ws://127.0.0.1:{platform_port}",
            PLATFORM_GRPC=f"127.0.0.1:{grpc_at}",
            CANARY_URL=f"http://127.0.0.1:{reference_port}",
            PROBER_VANTAGE=name,
        )
        port = free_port()
        daemon = await Proc(
            f"daemon-{name}",
            prober_argv("run", "--config.file", str(config),
                        "--web.listen-address", f"127.0.0.1:{port}"),
            env=env,
            log=log,
        ).start()  # fmt: skip
        started.append(Vantage(name, daemon, port, relay))
    for vantage in started:
        await wait_http(f"http://127.0.0.1:{vantage.port}/-/ready")
    prom_port = free_port()
    prom_dir = directory / "prometheus"
    prom_dir.mkdir(exist_ok=True)
    prom_config = prom_dir / "prometheus.yml"
    targets = [f"127.0.0.1:{v.port}" for v in started]
    prom_config.write_text(yaml.safe_dump(_prometheus_config(targets, prometheus_interval)))
    prom = await Proc(
        "prometheus",
        [prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={prom_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        log=directory / "prometheus.log",
    ).start()  # fmt: skip
    stack = Stack(
        directory, sim, sim_port, reference, reference_port, started, prom,
        f"http://127.0.0.1:{prom_port}", relays,
    )  # fmt: skip
    try:
        await wait_http(f"{stack.prometheus_url}/-/ready")
    except BaseException:
        await stack.close()
        raise
    return stack
