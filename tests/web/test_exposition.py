"""/metrics content negotiation: OpenMetrics when asked, gzip when asked, same samples."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from prober.engine.daemon import Daemon
from prober.sinks.metrics import CONTENT_TYPE, FAMILIES, MetricsSink
from prober.web.app import build_app
from prober.web.exposition import OPENMETRICS_CONTENT_TYPE, negotiate
from prober.web.server import WebServer, start_web
from tests.support.checks import WriteConfig
from tests.support.processes import require_tool, wait_for
from tests.support.samples import Sample, parse_samples
from tests.support.servers import Target, free_port

# What Prometheus 2.x sends (scrape/scrape.go, acceptHeader with OpenMetrics enabled).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
COUNTERS = [f.name.removesuffix("_total") for f in FAMILIES if f.type == "counter"]


def openmetrics_samples(text: str) -> list[Sample]:
    """Every sample of an OpenMetrics exposition, by prometheus-client's strict parser."""
    return [
        (s.name, frozenset(s.labels.items()), s.value)
        for family in parse_openmetrics(text)
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def per_check(samples: list[Sample]) -> set[Sample]:
    return {s for s in samples if any(k == "check" for k, _ in s[1])}


@pytest.mark.parametrize(
    ("accept", "accept_encoding", "openmetrics", "gzipped"),
    [
        (PROMETHEUS_ACCEPT, "gzip", True, True),
        ("application/openmetrics-text", "", True, False),
        ("text/plain;version=0.0.4", "gzip, deflate", False, True),
        ("application/openmetrics-text;version=0.0.1", "identity", False, False),
        ("*/*", None, False, False),
        (None, None, False, False),
    ],
    ids=["prometheus", "openmetrics-no-version", "text-gzip", "openmetrics-too-old",
         "anything", "no-headers"],
)  # fmt: skip
def test_negotiation_follows_the_accept_headers(
    accept: str | None, accept_encoding: str | None, openmetrics: bool, gzipped: bool
) -> None:
    exposition = negotiate(accept, accept_encoding)
    assert exposition.openmetrics is openmetrics
    assert exposition.gzip is gzipped
    assert exposition.content_type == (OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE)


def test_openmetrics_names_counter_families_without_total_and_ends_with_eof(
    sink: MetricsSink,
) -> None:
    text = b"".join(sink.render_chunks(openmetrics=True)).decode()
    assert text.endswith("\n# EOF\n")
    assert text.count("# EOF") == 1
    for name in COUNTERS:
        assert f"# TYPE {name} counter\n" in text
        assert f"# TYPE {name}_total" not in text
    families = {f.name: f for f in parse_openmetrics(text)}
    runs = families["prober_check_runs"]
    assert runs.type == "counter"
    assert {s.name for s in runs.samples} == {"prober_check_runs_total"}


def test_openmetrics_has_the_same_samples_as_the_text_format(
    sink: MetricsSink,
) -> None:
    text = per_check(parse_samples(sink.render().decode()))
    openmetrics = per_check(openmetrics_samples(b"".join(sink.render_chunks(openmetrics=True))
                                               .decode()))  # fmt: skip
    assert openmetrics == text
    assert len(text) > 50


def test_openmetrics_is_served_from_the_cached_text(sink: MetricsSink) -> None:
    sink.render()
    cached = {name: series.chunks for name, series in sink._checks.items()}
    b"".join(sink.render_chunks(openmetrics=True))
    assert {name: series.chunks for name, series in sink._checks.items()} == cached


@pytest.mark.integration
def test_promtool_parses_openmetrics_and_finds_only_the_counter_naming(
    sink: MetricsSink,
) -> None:
    """promtool 2.x lints with the text format's rules, where a counter family carries
    `_total`; on OpenMetrics those names are its only findings, as for prometheus-client's own
    OpenMetrics output. A parse error would exit 1 instead of 3."""
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "metrics"],
        input=b"".join(sink.render_chunks(openmetrics=True)),
        capture_output=True,
        timeout=30,
        check=False,
    )
    findings = (run.stdout + run.stderr).decode().splitlines()
    assert run.returncode in (0, 3), findings
    for finding in findings:
        name, _, problem = finding.partition(" ")
        assert problem == "no help text", finding
        assert name.endswith(("_total", "_created")), finding


@dataclass
class Scrapes:
    """What /metrics answered, as seen by a middleware in front of the real handler."""

    seen: list[tuple[str, str, str]] = field(default_factory=list)

    @web.middleware
    async def record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.path == "/metrics":
            self.seen.append(
                (
                    request.headers.get("User-Agent", ""),
                    response.headers.get("Content-Type", ""),
                    response.headers.get("Content-Encoding", ""),
                )
            )
        return response


CONFIG = """
interval: 0.5s
timeout: 0.4s
labels: {vantage: test}
checks:
  - {name: good, kind: http, component: api, url: "${URL}/ok"}
  - name: flow
    kind: flow
    component: timeline
    steps:
      - {name: first, url: "${URL}/ok"}
"""


@dataclass
class Served:
    daemon: Daemon
    server: WebServer
    scrapes: Scrapes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"


@pytest.fixture
async def served(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    monkeypatch.setenv("URL", target.url)
    daemon = Daemon(write_config(CONFIG))
    await daemon.start()
    scrapes = Scrapes()
    server = await start_web(
        build_app(daemon.metrics, daemon, middlewares=[scrapes.record]), "127.0.0.1", 0
    )
    try:
        await wait_for(lambda: all(s.success is not None for s in daemon.status.states()), limit=30)
        yield Served(daemon, server, scrapes)
    finally:
        await server.cleanup()
        await daemon.stop()


async def fetch(url: str, headers: dict[str, str]) -> tuple[str, str, bytes]:
    """Content-Type, Content-Encoding and the body exactly as sent (not decompressed)."""
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s,
        s.get(url, headers=headers) as resp,
    ):
        assert resp.status == 200
        body = await resp.read()
        return resp.headers["Content-Type"], resp.headers.get("Content-Encoding", ""), body


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
async def test_metrics_endpoint_answers_in_the_format_asked(
    served: Served, openmetrics: bool, compressed: bool
) -> None:
    headers = {"Accept": PROMETHEUS_ACCEPT if openmetrics else "text/plain;version=0.0.4"}
    if compressed:
        headers["Accept-Encoding"] = "gzip"
    content_type, encoding, body = await fetch(served.url, headers)
    assert content_type == (OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE)
    assert encoding == ("gzip" if compressed else "")
    text = (gzip.decompress(body) if compressed else body).decode()
    samples = openmetrics_samples(text) if openmetrics else parse_samples(text)
    names = {name for name, _, _ in per_check(samples)}
    assert {"probe_success", "prober_check_runs_total", "prober_check_duration_seconds_bucket"} <= (
        names
    )
    assert text.endswith("# EOF\n") is openmetrics


async def query(base: str, expr: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/query", params={"query": expr}) as resp,
    ):
        data: dict[str, Any] = await resp.json()
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


@pytest.mark.integration
async def test_prometheus_scrapes_openmetrics_gzipped(served: Served, tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: prober
    static_configs: [{{targets: ["127.0.0.1:{served.server.port}"]}}]
""")
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def ingested() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                runs = await query(base, 'prober_check_runs_total{check="good",result="success"}')
                buckets = await query(base, 'prober_check_duration_seconds_bucket{check="flow"}')
                return bool(runs and buckets)
            return False

        await wait_for(ingested, limit=120)
        (up,) = await query(base, 'up{job="prober"}')
        assert up["value"][1] == "1"
        # The OpenMetrics family name is not a series; no per-check _created series either.
        assert not await query(base, '{__name__=~"prober_check_runs|prober_check_runs_created"}')
        assert (await query(base, 'probe_success{check="good"}'))[0]["value"][1] == "1"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
    prometheus_scrapes = [s for s in served.scrapes.seen if s[0].startswith("Prometheus/")]
    assert prometheus_scrapes, served.scrapes.seen
    assert all(
        (content_type, encoding) == (OPENMETRICS_CONTENT_TYPE, "gzip")
        for _, content_type, encoding in prometheus_scrapes
    ), prometheus_scrapes
