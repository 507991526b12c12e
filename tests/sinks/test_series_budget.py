"""The series budget: what each kind of check exports, counted against the real sim.

Every check runs against the simulated platform (plain and behind TLS) or a loopback DNS
zone, first healthy, then failing for two different reasons (a 503, then a hang until the
timeout). The test enforces the budget on the default `detail: basic`, prints the table
(`pytest -s tests/sinks/test_series_budget.py`) and requires docs/METRICS.md to show that table.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from pydantic import TypeAdapter

from prober.config.model import Check
from prober.engine.runner import RunEnvironment, run_check
from prober.sim import DEMO_PASSWORD, DEMO_USER, RunningSim, SimOptions, start_sim
from prober.sim.app import create_app
from prober.sinks.metrics import MetricsSink, SeriesPlan
from tests.support.certs import CertFactory
from tests.support.processes import REPO
from tests.support.samples import parse_samples
from tests.support.servers import StartDnsServer, serve_app

METRICS_DOC = REPO / "docs" / "METRICS.md"
ONE_STEP_BUDGET = 20
FURTHER_STEP_BUDGET = 10
FAST = SimOptions(latency_ms=0.0, latency_jitter_ms=0.0, seed=7)
HANG_TIMEOUT = 0.5  # runs against a hung platform end here; healthy runs get 10 s
CHECKS = TypeAdapter(Check)


@dataclass(frozen=True)
class Targets:
    """Where the checks go: the sim over http and https, a DNS zone (and a silent one)."""

    http: str
    https: str
    ca_file: str
    dns: str
    silent_dns: str
    grpc: str
    stream: str  # the notification stream's ws:// URL
    token: str  # a logged-in account's bearer token, for the stream


def _login(base: str) -> dict[str, Any]:
    return {
        "name": "login",
        "method": "POST",
        "url": f"{base}/api/v1/login",
        "json": {"username": DEMO_USER, "password": DEMO_PASSWORD},
        "extract": {"token": "$.access_token"},
    }


def _authorized(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "url": url, "headers": {"Authorization": "Bearer ${token}"}}


def _flow(base: str, steps: int) -> dict[str, Any]:
    later = [
        _authorized("timeline", f"{base}/api/v1/timeline/home"),
        _authorized("notifications", f"{base}/api/v1/notifications"),
    ]
    return {"kind": "flow", "steps": [_login(base), *later[: steps - 1]]}


def _health(base: str) -> dict[str, Any]:
    return {"kind": "http", "url": f"{base}/api/v1/health"}


@dataclass(frozen=True)
class Case:
    """One row of the table: a kind of check, its steps and the series its settings add."""

    title: str
    steps: int
    added: int  # series the settings add to the budget (TLS, retries, degraded_latency)
    settings: Callable[[Targets], dict[str, Any]]

    @property
    def budget(self) -> int:
        return ONE_STEP_BUDGET + FURTHER_STEP_BUDGET * (self.steps - 1) + self.added


def _tcp(t: Targets) -> dict[str, Any]:
    return {
        "kind": "tcp",
        "target": t.http.removeprefix("http://"),
        "send": ["GET /api/v1/health HTTP/1.0\r\n\r"],
        "expect": [r"^HTTP/1\.[01] 200"],
    }


def _websocket(t: Targets) -> dict[str, Any]:
    return {
        "kind": "websocket",
        "url": t.stream,
        "headers": {"Authorization": f"Bearer {t.token}"},
        "expect": r'"type":\s*"hello"',
    }


CASES = (
    Case("http", 1, 0, lambda t: _health(t.http)),
    Case("http over TLS", 1, 1, lambda t: {**_health(t.https), "tls": {"ca_file": t.ca_file}}),
    Case("http, `retries: 1`", 1, 1, lambda t: {**_health(t.http), "retries": 1}),
    Case("http, `degraded_latency`", 1, 1, lambda t: {**_health(t.http), "degraded_latency": 1}),
    Case("flow, 2 steps", 2, 0, lambda t: _flow(t.http, 2)),
    Case("flow, 3 steps", 3, 0, lambda t: _flow(t.http, 3)),
    Case("tcp", 1, 0, _tcp),
    Case("dns", 1, 0, lambda t: {"kind": "dns", "query_name": "api.example.test", "server": t.dns}),
    Case("grpc", 1, 0, lambda t: {"kind": "grpc", "target": t.grpc}),
    Case("websocket", 1, 0, _websocket),
)
DETAILS = ("basic", "full")


def _check(case: Case, detail: str, targets: Targets, **changes: Any) -> Check:
    fields = {
        "name": f"{CASES.index(case)}-{detail}",
        "component": "api",
        "interval": 60,
        "timeout": 10,
        "detail": detail,
        **case.settings(targets),
        **changes,
    }
    return CHECKS.validate_python(fields)


# The two failures every check meets: the sim answers 503, then hangs until the timeout
# (a dns check asks for a name that fails with SERVFAIL, then asks a server that never answers).
FAULTS = (("status", {"status": 503}), ("hang", {"hang": True}))


def _broken(check: Check, targets: Targets, fault: str) -> Check:
    """The same check (same name, so the same series) where it meets `fault`."""
    if fault == "status":
        if check.kind == "dns":
            return check.model_copy(update={"query_name": "broken.example.test"})
        return check
    update: dict[str, Any] = {"timeout": HANG_TIMEOUT}
    if check.kind == "dns":
        update["server"] = targets.silent_dns
    return check.model_copy(update=update)


@pytest.fixture
async def targets(
    certs: CertFactory, dns_server: StartDnsServer
) -> AsyncIterator[tuple[Targets, list[str], ssl.SSLContext]]:
    sim: RunningSim = await start_sim(options=FAST, grpc_listen=("127.0.0.1", 0))
    assert sim.grpc is not None
    runner, https = await serve_app(create_app(FAST), ssl_context=certs.issue().server_context())
    try:
        found = Targets(
            sim.url,
            https,
            str(certs.ca_file),
            await dns_server(),
            await dns_server(silent=True),
            sim.grpc.address,
            sim.url.replace("http://", "ws://") + "/api/v1/notifications/stream",
            await _token(sim.url),
        )
        client_ssl = ssl.create_default_context(cafile=str(certs.ca_file))
        yield found, [sim.url, https], client_ssl
    finally:
        await runner.cleanup()
        await sim.stop()


async def _token(base: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/api/v1/login", json=_login(base)["json"]) as reply,
    ):
        return str((await reply.json())["access_token"])


async def _fault_everything(bases: list[str], client_ssl: ssl.SSLContext, fault: object) -> None:
    async with aiohttp.ClientSession() as session:
        for base in bases:
            async with session.put(f"{base}/-/faults/all", json=fault, ssl=client_ssl) as reply:
                assert reply.status == 200, await reply.text()


def _series_per_check(sink: MetricsSink) -> dict[str, list[str]]:
    """Each check's series, by name (one entry per series)."""
    found: dict[str, list[str]] = {}
    for name, labels, _ in parse_samples(sink.render().decode()):
        check = dict(labels).get("check")
        if check is not None:
            found.setdefault(check, []).append(name)
    return found


async def _run_all(checks: list[Check], env: RunEnvironment, sink: MetricsSink) -> list[bool]:
    results = await asyncio.gather(*(run_check(check, env) for check in checks))
    for result in results:
        sink.record(result)
    return [result.success for result in results]


def _table(counts: dict[tuple[int, str, str], int]) -> str:
    lines = [
        "| check | budget | basic, passing | basic, failing | full, passing | full, failing |",
        "|---|---|---|---|---|---|",
    ]
    for index, case in enumerate(CASES):
        cells = [
            str(counts[(index, detail, state)])
            for detail in DETAILS
            for state in ("passing", "failing")
        ]
        lines.append(f"| {case.title} | {case.budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def test_every_kind_keeps_its_series_budget_passing_and_failing(
    targets: tuple[Targets, list[str], ssl.SSLContext], env: RunEnvironment
) -> None:
    found, bases, client_ssl = targets
    checks = {
        (index, detail): _check(case, detail, found)
        for index, case in enumerate(CASES)
        for detail in DETAILS
    }
    sink = MetricsSink()
    sink.apply({c.name: SeriesPlan.of(c) for c in checks.values()}, {"vantage": "eu"})
    counts: dict[tuple[int, str, str], int] = {}

    passed = await _run_all(list(checks.values()), env, sink)
    assert all(passed), "every check must pass against the healthy sim before counting"
    series = _series_per_check(sink)
    for key, check in checks.items():
        counts[(*key, "passing")] = len(series[check.name])

    for fault, spec in FAULTS:
        await _fault_everything(bases, client_ssl, spec)
        broken = [_broken(check, found, fault) for check in checks.values()]
        assert not any(await _run_all(broken, env, sink)), f"a check passed despite {fault}"
    await _fault_everything(bases, client_ssl, {})
    series = _series_per_check(sink)
    for key, check in checks.items():
        counts[(*key, "failing")] = len(series[check.name])

    table = _table(counts)
    print(f"\n{table}\n")
    for index, case in enumerate(CASES):
        basic = checks[(index, "basic")]
        assert counts[(index, "basic", "failing")] <= case.budget, (case.title, table)
        histograms = {n for n in series[basic.name] if n.endswith("_bucket")}
        assert histograms == {"prober_check_duration_seconds_bucket"}, case.title
        assert counts[(index, "full", "failing")] > counts[(index, "basic", "failing")]
    assert table in METRICS_DOC.read_text(encoding="utf-8"), "docs/METRICS.md shows another table"
