"""The Grafana dashboard's queries on a real Prometheus: each runs, and the vantage variable,
the failing-since table and the TLS-expiry panel show what the prober saw."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from prober.engine.daemon import Daemon
from prober.web.app import build_app
from prober.web.server import WebServer, start_web
from tests.support.certs import CertFactory
from tests.support.deploy import (
    GRAFANA_VARIABLE,
    dashboard_panels,
    dashboard_queries,
    load_dashboard,
)
from tests.support.processes import REPO, require_tool, wait_for
from tests.support.servers import Target, free_port, serve_app

VANTAGE = "eu-test"
CERT_DAYS = 10


@dataclass
class Stack:
    target: Target
    daemon: Daemon
    server: WebServer
    prometheus_url: str

    @property
    def samples(self) -> dict[str, str]:
        """Grafana's variables as a user picks them: this vantage point, everything else."""
        return {
            "__rate_interval": "1m",
            "__interval": "15s",
            "__range": "1h",
            "datasource": "prometheus",
            "vantage": VANTAGE,
            "instance": f"127.0.0.1:{self.server.port}",
            "component": ".*",
            "check": ".*",
        }

    def promql(self, expr: str) -> str:
        return GRAFANA_VARIABLE.sub(lambda m: self.samples[m[1] or m[2]], expr)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params={"query": self.promql(expr)}) as resp,
        ):
            data: dict[str, Any] = await resp.json()
        assert data["status"] == "success", (expr, data)
        result: list[dict[str, Any]] = data["data"]["result"]
        return result


CONFIG = """
interval: 0.5s
timeout: 0.4s
labels: {vantage: VANTAGE}
checks:
  - {name: flaky, kind: http, component: api, url: "TARGET/ok"}
  - name: cert
    kind: http
    component: edge
    url: "HTTPS/"
    tls: {ca_file: "CA_FILE"}
    degraded_latency: 2s  # so prober_check_degraded ("Checks now") is exported
"""


@pytest.fixture
async def stack(target: Target, tmp_path: Path, certs: CertFactory) -> AsyncIterator[Stack]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    leaf = certs.issue(days=CERT_DAYS, starts_in_days=0)
    https_runner, https_url = await serve_app(app, ssl_context=leaf.server_context())
    config = tmp_path / "prober.yml"
    config.write_text(
        CONFIG.replace("VANTAGE", VANTAGE)
        .replace("TARGET", target.url)
        .replace("HTTPS", https_url)
        .replace("CA_FILE", str(certs.ca_file))
    )
    daemon = Daemon(config)
    await daemon.start()
    server = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
    port = free_port()
    prometheus_config = tmp_path / "prometheus.yml"
    prometheus_config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{REPO}/deploy/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: prober
    static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
""")
    process = await asyncio.create_subprocess_exec(
        require_tool("prometheus"),
        f"--config.file={prometheus_config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield Stack(target, daemon, server, f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
        await server.cleanup()
        await daemon.stop()
        await https_runner.cleanup()


def queries_of(title: str) -> list[str]:
    found = [expr for where, expr in dashboard_queries() if where.startswith(f"panel {title!r}")]
    assert found, f"no panel {title!r}"
    return found


async def answers(stack: Stack, expr: str) -> list[dict[str, Any]]:
    with contextlib.suppress(aiohttp.ClientError):
        return await stack.query(expr)
    return []


@pytest.mark.integration
async def test_dashboard_shows_vantage_failing_since_and_certificate_expiry(stack: Stack) -> None:
    # flaky passes until Prometheus has its last success, then fails.
    async def passed_once() -> bool:
        return bool(await answers(stack, 'prober_last_success_timestamp_seconds{check="flaky"}'))

    await wait_for(passed_once, limit=120)
    stack.target.status = 503

    (since, failing_for) = queries_of("Failing since")

    async def listed_as_failing() -> bool:
        return bool(await answers(stack, since))

    await wait_for(listed_as_failing, limit=120)
    (row,) = await stack.query(since)
    assert row["metric"]["check"] == "flaky" and row["metric"]["vantage"] == VANTAGE
    last_success_ms = float(row["value"][1])
    assert last_success_ms > 1e12  # unix milliseconds, as Grafana's dateTime units want
    (age,) = await stack.query(failing_for)
    assert float(age["value"][1]) >= 0

    (expiry,) = queries_of("TLS certificate expiry")
    (cert,) = await stack.query(expiry)
    assert cert["metric"] == {"vantage": VANTAGE, "component": "edge", "check": "cert"}
    left = float(cert["value"][1])
    assert (CERT_DAYS - 1) * 86400 < left <= CERT_DAYS * 86400

    variables = {w: e for w, e in dashboard_queries() if w.startswith("variable")}
    (vantages,) = [e for w, e in variables.items() if "'vantage'" in w]
    assert {s["metric"]["vantage"] for s in await stack.query(vantages)} == {VANTAGE}

    # With real data in, every panel, annotation and variable query runs.
    failed = []
    for where, expr in dashboard_queries():
        try:
            await stack.query(expr)
        except AssertionError as exc:
            failed.append(f"{where}: {exc}")
    assert not failed, failed
    # Recording rules over rate() windows need a few evaluations before they have data.
    for title in ("Check status", "Checks now", "Success ratio per component"):
        for expr in queries_of(title):
            await wait_for(partial(answers, stack, expr), limit=120)


def test_per_check_queries_filter_by_vantage_and_name_it_in_legends() -> None:
    per_check = re.compile(r"(?:probe_\w+|prober_(?:check|step)_\w+|check:\w+:\w+)\{")
    for panel in dashboard_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            if not per_check.search(target["expr"]):
                continue
            assert 'vantage=~"$vantage"' in target["expr"], panel["title"]
            legend = target["legendFormat"]
            if legend not in ("__auto", "{{le}}"):
                assert "{{vantage}}" in legend, (panel["title"], legend)
