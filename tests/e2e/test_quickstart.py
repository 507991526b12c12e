"""docs/QUICKSTART.md as a new user follows it: its files load, its OAuth2 flow works against a
token server, and against the simulator a broken component fires an alert in a real
Prometheus with the shipped rules."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.stack import wait_http
from prober.engine.daemon import Daemon
from prober.sim import SimOptions, start_sim
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.processes import REPO, require_tool, run_prober, spawn_prober, wait_for
from tests.support.servers import free_port, serve_app

QUICKSTART = REPO / "docs" / "QUICKSTART.md"
FILE_BLOCK = re.compile(r"```yaml\n# my-api/(\S+)\n(.*?)```", re.DOTALL)
CLIENT_ID = "prober-quickstart"
CLIENT_SECRET = "client-secret-5b1e7d"
DETECTION_LIMIT = 240.0


def quickstart_files() -> dict[str, str]:
    """Path under my-api/ -> content, for every file the page tells the user to write."""
    return {path: text for path, text in FILE_BLOCK.findall(QUICKSTART.read_text())}


def write_files(directory: Path, leave_out: tuple[str, ...] = (), fast: bool = False) -> Path:
    """The page's files under `directory`; `fast` runs every check each second."""
    for path, text in quickstart_files().items():
        if path in leave_out:
            continue
        if fast and path == "prober.yml":
            text = text.replace("interval: 15s", "interval: 1s").replace(
                "timeout: 5s", "timeout: 0.8s"
            )
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(text)
    return directory / "prober.yml"


def test_the_page_names_every_file_it_lists() -> None:
    assert sorted(quickstart_files()) == [
        "checks/api.yml", "checks/canary.yml", "checks/login.yml", "checks/oauth.yml",
        "prober.yml",
    ]  # fmt: skip


def test_the_files_validate(tmp_path: Path) -> None:
    config = write_files(tmp_path)
    env = {
        **os.environ,
        "API_URL": "http://127.0.0.1:1",
        "API_PASSWORD": "p",
        "CANARY_URL": "http://127.0.0.1:2",
        "AUTH_URL": "http://127.0.0.1:3",
        "OAUTH_CLIENT_ID": CLIENT_ID,
        "OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "PARTNER_API_URL": "http://127.0.0.1:4",
    }
    run = run_prober("validate", "--config.file", str(config), env=env)
    assert run.returncode == 0, run.stderr
    assert "OK, 4 checks from 5 files" in run.stdout
    assert "warning" not in run.stderr  # the canary shares no host with the platform


class TokenServer:
    """An OAuth2 token endpoint (client_secret_post) and an API that wants its tokens."""

    def __init__(self) -> None:
        self.tokens_issued = 0
        self.items_served = 0

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.content_type != "application/x-www-form-urlencoded":
            return web.json_response({"error": "invalid_request"}, status=400)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.tokens_issued += 1
        return web.json_response(
            {"access_token": f"token-{self.tokens_issued}", "token_type": "Bearer",
             "expires_in": 3600, "scope": form.get("scope")}
        )  # fmt: skip

    async def items(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer token-"):
            return web.json_response({"error": "unauthorized"}, status=401)
        self.items_served += 1
        return web.json_response({"items": [1, 2]})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/v1/items", self.items)
        return app


@pytest.fixture
async def token_server() -> AsyncIterator[tuple[TokenServer, str]]:
    server = TokenServer()
    runner, url = await serve_app(server.app())
    yield server, url
    await runner.cleanup()


async def test_the_oauth2_flow_gets_a_token_once_and_reuses_it(
    token_server: tuple[TokenServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = token_server
    for name, value in {
        "AUTH_URL": url, "PARTNER_API_URL": url, "OAUTH_CLIENT_ID": CLIENT_ID,
        "OAUTH_CLIENT_SECRET": CLIENT_SECRET, "API_URL": "http://127.0.0.1:1",
        "API_PASSWORD": "p", "CANARY_URL": "http://127.0.0.1:1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    config = write_files(tmp_path, fast=True)
    process = await spawn_prober("probe", "--config.file", str(config), "partner-api")
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    trace = out.decode() + err.decode()
    assert process.returncode == 0, trace
    assert "step token: ok" in trace and "step items: ok" in trace
    assert CLIENT_SECRET not in trace and "token-1" not in trace
    # In the daemon the token is kept for session_ttl: one token, many runs.
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(lambda: server.items_served >= 4, limit=60)
    finally:
        await daemon.stop()
    assert server.tokens_issued == 2  # one for `prober probe`, one for the daemon


@pytest.mark.integration
async def test_following_the_page_against_the_simulator_fires_an_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    # `reference` is `prober reference` in this process, with CANARY_URL set to it.
    prometheus_binary = require_tool("prometheus")
    api = await start_sim(options=SimOptions(latency_ms=1, latency_jitter_ms=0, seed=3))
    monkeypatch.setenv("API_URL", api.url)
    monkeypatch.setenv("API_PASSWORD", "demo-password")
    # The simulator has no OAuth2 token endpoint: the page says to leave that file out.
    config = write_files(tmp_path, leave_out=("checks/oauth.yml",), fast=True)
    daemon = Daemon(config)
    await daemon.start()
    server = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
    prometheus = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{REPO}/deploy/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: prober
    static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
""")
    process = await asyncio.create_subprocess_exec(
        prometheus_binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={prometheus.removeprefix('http://')}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_http(f"{prometheus}/-/ready", limit=60)
        # The rules see the login component (passing) before it is broken.
        login = 'component:probe_success:ratio_avg{component="login"}'
        await wait_for(lambda: _query(prometheus, login), limit=DETECTION_LIMIT)
        assert not await _firing(prometheus, "ProberComponentDown", "login")
        # The page's `curl -X PUT -d '{"status": 503}' .../-/faults/login`.
        async with (
            aiohttp.ClientSession() as session,
            session.put(f"{api.url}/-/faults/login", json={"status": 503}) as resp,
        ):
            assert resp.status in (200, 204), await resp.text()
        await wait_for(
            lambda: _firing(prometheus, "ProberComponentDown", "login"), limit=DETECTION_LIMIT
        )
        assert not await _firing(prometheus, "ProberImpaired")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)
        await server.cleanup()
        await daemon.stop()
        await api.stop()


async def _query(prometheus: str, expr: str) -> list[dict[str, object]]:
    url = f"{prometheus}/api/v1/query"
    async with aiohttp.ClientSession() as session, session.get(url, params={"query": expr}) as r:
        result: list[dict[str, object]] = (await r.json())["data"]["result"]
    return result


async def _firing(prometheus: str, alert: str, component: str | None = None) -> bool:
    url = f"{prometheus}/api/v1/alerts"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        alerts = (await resp.json())["data"]["alerts"]
    return any(
        a["labels"]["alertname"] == alert
        and (component is None or a["labels"].get("component") == component)
        and a["state"] == "firing"
        for a in alerts
    )
