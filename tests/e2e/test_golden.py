"""Behaviour pinned from the outside: the /metrics text and /api/status of a fixed set of
checks (http, flow, pooled flow, tcp, dns, https; passing and failing) against the sim with a
fixed seed, compared with the files in golden/.

It drives `python -m prober` as child processes and reads only HTTP, so moving code inside
the package cannot change it; values that vary by run (durations, timestamps, counts of runs,
the order checks happened to start in) are normalised, everything else (names, labels, help
texts, order, states, reasons, status codes, messages) must stay byte for byte.
Regenerate after an intended change with `PROBER_GOLDEN_WRITE=1 pytest tests/e2e/test_golden.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

GOLDEN = Path(__file__).parent / "golden"
WRITE = os.environ.get("PROBER_GOLDEN_WRITE") == "1"
REPO = Path(__file__).resolve().parents[2]
# Families whose values depend on timing or on how many runs happened.
VOLATILE = re.compile(
    r"seconds|duration|timestamp|_bucket|_count|_sum|_created|_total|lag|expiry|"
    r"^prober_tasks|^prober_scheduler|^prober_open_fds"
)
# Families that describe the Python process, not the checks.
PROCESS = re.compile(r"^(process_|python_|prober_build_info)")
RUNS_BEFORE_SNAPSHOT = 2


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prober",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _line_with(stream: asyncio.StreamReader | None, pattern: str) -> re.Match[str]:
    assert stream is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout=60)).decode()
        if not line:
            pytest.fail(f"child exited before printing {pattern!r}: {''.join(seen)}")
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


@pytest.fixture
async def https_url(certs: Any) -> AsyncIterator[str]:
    """A local https server, certified by the test CA, answering 200 on /ok."""
    leaf = certs.issue(days=30)

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=leaf.server_context())
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


def _checks(platform: str, host_port: str, dns_at: str, https_at: str, ca_file: str) -> str:
    return textwrap.dedent(f"""\
        checks:
          - name: api
            url: {platform}/api/v1/health
            assert: ['$.status == "ok"']
          - name: api-wrong-status
            component: api
            url: {platform}/api/v1/health
            expected_status: [201]
          - name: journey
            steps:
              - name: login
                component: login
                session: user
                method: POST
                url: {platform}/api/v1/login
                json: {{username: demo, password: "${{demo_password}}"}}
                extract: {{token: $.access_token}}
              - name: timeline
                url: {platform}/api/v1/timeline/home?limit=5
                headers: {{Authorization: "Bearer ${{token}}"}}
                assert: ['len($.posts) > 0']
              - name: notifications
                component: notifications
                url: {platform}/api/v1/notifications
                headers: {{Authorization: "Bearer ${{token}}"}}
          - name: pooled-login
            component: login
            accounts: {{pattern: "user-{{i:04d}}", count: 4}}
            fanout: 2
            steps:
              - name: login
                method: POST
                url: {platform}/api/v1/login
                json: {{username: "${{account}}", password: "${{demo_password}}"}}
                assert: ['$.access_token exists']
          - name: tcp-http
            kind: tcp
            component: api
            target: {host_port}
            send: ["HEAD /api/v1/health HTTP/1.0\\r\\n\\r"]
            expect: ["^HTTP/1\\\\.[01] 200"]
          - name: tcp-closed
            kind: tcp
            component: edge
            target: 127.0.0.1:1
          - name: dns-a
            kind: dns
            component: dns
            server: {dns_at}
            query_name: api.example.test
            query_type: A
            valid_rcodes: [NOERROR]
          - name: https
            component: edge
            url: {https_at}/ok
            tls: {{ca_file: {ca_file}}}
        """)


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})? (?P<value>\S+)$")


def normalise_metrics(text: str) -> str:
    """The exposition with volatile values as `<v>` and process families left out."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            family = line.split(" ", 3)[2]
            if not PROCESS.search(family):
                kept.append(line)
            continue
        sample = _SAMPLE.match(line)
        assert sample, f"not an exposition line: {line!r}"
        name = sample["name"]
        if PROCESS.search(name):
            continue
        labels = sample["labels"] or ""
        value = "<v>" if VOLATILE.search(name) else sample["value"]
        kept.append(f"{name}{labels} {value}")
    return "\n".join(kept) + "\n"


_VOLATILE_KEYS = re.compile(
    r"duration|since|_at$|^at$|when|uptime|runs|age|lag|latency|expiry|elapsed|days|passed_count|"
    r"history|sparkline|last_|count|time|^seconds$"
)


def normalise_status(value: Any, key: str = "") -> Any:
    """/api/status with timing- and run-count-dependent values replaced by their type."""
    if isinstance(value, dict):
        return {k: normalise_status(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        if key == "recent_runs":  # as many as ran: the newest one stands for them
            return [normalise_status(value[-1], key)] if value else []
        if _VOLATILE_KEYS.search(key):
            return f"<list of {type(value[0]).__name__}>" if value else "<list>"
        return [normalise_status(v, key) for v in value]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and _VOLATILE_KEYS.search(key):
        return f"<{type(value).__name__}>"
    if isinstance(value, str):
        timed = re.sub(r"\d+(\.\d+)?\s?m?s\b", "<t>", value)
        return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", timed)
    return value


def _compare(name: str, actual: str) -> None:
    path = GOLDEN / name
    if WRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} missing: run with PROBER_GOLDEN_WRITE=1 once"
    expected = path.read_text()
    assert actual == expected, f"{name} changed; diff it against {path}"


async def _runs(session: aiohttp.ClientSession, base: str) -> dict[str, int]:
    async with session.get(f"{base}/api/status") as response:
        status = await response.json()
    return {c["name"]: len(c.get("history", [])) for c in status.get("checks", [])}


async def test_metrics_and_status_are_unchanged(
    tmp_path: Path, dns_server: Any, https_url: str, certs: Any
) -> None:
    sim = await _spawn(
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--seed",
        "7",
        "--latency-ms",
        "0",
        "--latency-jitter-ms",
        "0",
        "--fault",
        "notifications:status=503",
    )
    daemon: asyncio.subprocess.Process | None = None
    try:
        platform = (await _line_with(sim.stdout, r"serving (http://\S+)"))[1]
        host_port = platform.removeprefix("http://")
        dns_at = await dns_server()
        (tmp_path / "checks").mkdir()
        (tmp_path / "checks" / "golden.yml").write_text(
            _checks(platform, host_port, dns_at, https_url, str(certs.ca_file))
        )
        (tmp_path / "prober.yml").write_text(
            textwrap.dedent("""\
            interval: 4s
            timeout: 2s
            labels: {vantage: golden}
            secrets:
              demo_password: {env: PROBER_GOLDEN_UNSET, default: demo-password}
            check_files: [checks/*.yml]
            """)
        )
        daemon = await _spawn(
            "run",
            "--config.file",
            str(tmp_path / "prober.yml"),
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.format",
            "json",
        )
        serving = await _line_with(daemon.stderr, r'"metrics": "(http://[^"]+)/metrics"')
        base = serving[1]
        async with aiohttp.ClientSession() as session:
            for _ in range(120):
                runs = await _runs(session, base)
                if len(runs) == 8 and min(runs.values()) >= RUNS_BEFORE_SNAPSHOT:
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail(f"checks did not all run twice: {runs}")
            await asyncio.sleep(1.5)  # confirmations and sweeps settle
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
            async with session.get(f"{base}/api/status") as response:
                status = await response.json()
    finally:
        for child in (daemon, sim):
            if child is not None:
                await _stop(child)
    _compare("metrics.txt", normalise_metrics(metrics))
    _compare("status.json", json.dumps(normalise_status(status), indent=1, sort_keys=True) + "\n")
