"""Shared fixtures and helpers: loopback servers, run environments, config writers, metric
samples, the `prober` command as a child process, tool lookup."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from prober.config_model import HttpCheck
from prober.metrics import MetricsSink, SeriesPlan
from prober.probes.context import HttpClients
from prober.probes.sessions import SessionStore
from prober.result import AttemptFailure, Phases, Reason, Result, StepResult
from prober.runner import RunEnvironment
from prober.sim.reference import create_reference_app
from tests.certs import CertFactory

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parent.parent
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


@dataclass
class Target:
    """A local HTTP server whose behaviour a test can change while the daemon probes it."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    body: bytes = b'{"status": "ok", "items": [1, 2, 3]}'
    hits: int = 0
    recover_after: int | None = None
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    def at(self, path: str) -> str:
        return self.url + path


def _target_app(target: Target) -> web.Application:
    async def main(request: web.Request) -> web.StreamResponse:
        target.hits += 1
        if target.recover_after is not None and target.hits > target.recover_after:
            target.status = 200
        if target.delay:
            await asyncio.sleep(target.delay)
        return web.Response(status=target.status, body=target.body, content_type="application/json")

    async def hang(request: web.Request) -> web.StreamResponse:
        await target.hang.wait()
        return web.Response(text="late")

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * int(request.query.get("n", "100000")))

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "headers": dict(request.headers),
                "body": await request.text(),
                "query": dict(request.query),
            }
        )

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ok")

    app = web.Application()
    app.router.add_route("*", "/ok", main)
    app.router.add_get("/hang", hang)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/redirect", redirect)
    return app


async def serve_app(
    app: web.Application, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free port of `host`; returns the runner (the caller cleans it up) and
    the base URL (`https` with an SSL context, IPv6 hosts in brackets)."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, 0, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def free_port() -> int:
    """A loopback port nothing listens on (a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    state = Target()
    runner, state.url = await serve_app(_target_app(state))
    yield state
    state.hang.set()
    await runner.cleanup()


@contextlib.asynccontextmanager
async def run_environment(
    values: Mapping[str, str] | None = None, sensitive: frozenset[str] = frozenset()
) -> AsyncIterator[RunEnvironment]:
    """What `run_check` needs: fresh HTTP clients (closed on exit) and sessions."""
    clients = HttpClients("prober-test")
    try:
        yield RunEnvironment(clients, dict(values or {}), sensitive, SessionStore())
    finally:
        await clients.close()


@pytest.fixture
async def env() -> AsyncIterator[RunEnvironment]:
    """A run environment with no template values and no secrets."""
    async with run_environment() as environment:
        yield environment


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("certs"))


def http_check(url: str, **settings: Any) -> HttpCheck:
    """An http check named `t` on `url` (10s interval, 2s timeout); `settings` override."""
    fields: dict[str, Any] = {
        "name": "t",
        "kind": "http",
        "component": "api",
        "url": url,
        "interval": 10.0,
        "timeout": 2.0,
    }
    fields.update(settings)
    return HttpCheck.model_validate(fields)


# A DNS zone served over loopback UDP (tests of dns checks).
ZONE: dict[tuple[str, str], list[str]] = {
    ("api.example.test.", "A"): ["10.0.0.1", "10.0.0.2"],
    ("api.example.test.", "AAAA"): ["2001:db8::1"],
    ("api.example.test.", "TXT"): ['"v=prober1 ok"'],
    ("www.example.test.", "CNAME"): ["api.example.test."],
}
NAMES = {name for name, _ in ZONE} | {"broken.example.test."}

StartDnsServer = Callable[..., Awaitable[str]]


class _Zone(asyncio.DatagramProtocol):
    """Answers from ZONE; NXDOMAIN for unknown names; SERVFAIL for broken.*; or never."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.silent or self.transport is None:
            return
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        if name not in NAMES:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif name.startswith("broken."):
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            values = ZONE.get((name, rdtype), [])
            if values:
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", rdtype, values))
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[StartDnsServer]:
    """Start servers of ZONE on loopback UDP (`silent` ones never answer): HOST:PORT each."""
    transports: list[asyncio.DatagramTransport] = []

    async def start(host: str = "127.0.0.1", silent: bool = False) -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Zone(silent), local_addr=(host, 0)
        )
        transports.append(transport)
        port = transport.get_extra_info("sockname")[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    yield start
    for transport in transports:
        transport.close()


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write prober.yml (and optional check files) into tmp_path; return prober.yml's path."""

    def write(main: str, **check_files: str) -> Path:
        for name, text in check_files.items():
            (tmp_path / "checks").mkdir(exist_ok=True)
            (tmp_path / "checks" / f"{name}.yml").write_text(textwrap.dedent(text))
        path = tmp_path / "prober.yml"
        path.write_text(textwrap.dedent(main))
        return path

    return write


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


def fast_shipped_config(
    directory: Path, interval: str = "1s", timeout: str = "0.8s", extra: str = ""
) -> Path:
    """The shipped prober.yml and checks/, with short intervals, written into `directory`.

    `extra` is appended to prober.yml (e.g. a looser `loop_lag_budget` where a test runs the
    simulated platform in the daemon's own event loop).
    """
    text = (REPO / "prober.yml").read_text()
    text = text.replace("checks/*.yml", str(REPO / "checks" / "*.yml"))
    text = text.replace("interval: 15s", f"interval: {interval}")
    text = text.replace("timeout: 5s", f"timeout: {timeout}")
    path = directory / "prober.yml"
    path.write_text(text + extra)
    return path


@pytest.fixture
async def reference(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The canary's reference endpoint on a free port, apart from any sim; CANARY_URL set."""
    runner = web.AppRunner(create_reference_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    monkeypatch.setenv("CANARY_URL", url)
    try:
        yield url
    finally:
        await runner.cleanup()


# (name, labels, value) of one sample of a text exposition.
Sample = tuple[str, frozenset[tuple[str, str]], float]


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, in order; the `_created` timestamps that
    prometheus-client adds to counters are left out (prober's own renderer has none)."""
    return [
        (s.name, frozenset(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def sample_value(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """The value of the first sample named `name` whose labels include `labels`, else None."""
    for sample_name, sample_labels, value in samples:
        if sample_name == name and set(labels.items()) <= sample_labels:
            return value
    return None


def login_result(check: str, success: bool, duration: float) -> Result:
    """A one-step (`login`) run that passed (status 200) or failed (503), with phases."""
    step = StepResult(
        "login",
        success,
        duration,
        None if success else Reason.STATUS,
        status_code=200 if success else 503,
        phases=Phases(0.001, 0.002, 0.0, duration / 2, 0.0005),
    )
    return Result(
        check,
        success,
        duration,
        started_at=1_700_000_000.0,
        steps=(step,),
        reason=None if success else Reason.STATUS,
        failed_step="" if success else "login",
        failures=() if success else (AttemptFailure(Reason.STATUS, "login"),),
    )


@pytest.fixture
def sink() -> MetricsSink:
    """A MetricsSink with two checks (quotes and backslashes in labels, the second with
    `detail: full`) after three runs."""
    sink = MetricsSink()
    sink.apply(
        {
            "a": SeriesPlan((("component", "api"),)),
            'b "q"': SeriesPlan((("component", "login"), ("team", "x\\y")), full=True),
        },
        {"vantage": "eu"},
    )
    sink.record(login_result("a", True, 0.02))
    sink.record(login_result("a", False, 0.3))
    sink.record(login_result('b "q"', True, 7.5))
    return sink


def exported_samples(result: Result, component: str, full: bool = False) -> list[Sample]:
    """The samples a fresh MetricsSink exports after recording this one result (of a check
    with `detail: full` if `full`)."""
    sink = MetricsSink()
    sink.apply({result.check: SeriesPlan((("component", component),), full=full)}, {})
    sink.record(result)
    return parse_samples(sink.render().decode())


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
