"""The command line as a user runs it: validate, probe, errors without tracebacks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import aiohttp
import pytest

from prober.sim.server import start_sim
from tests.support.checks import WriteConfig
from tests.support.processes import (
    log_fields,
    log_message,
    read_log_until,
    run_prober,
    spawn_prober,
    wait_for,
)
from tests.support.servers import Target, free_port


def test_validate_shipped_config() -> None:
    run = run_prober("validate", "--config.file", "prober.yml")
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout


def test_validate_broken_file_prints_every_located_error(write_config: WriteConfig) -> None:
    path = write_config("""
        interval: 10s
        checks:
          - name: a
            kind: http
            component: api
            url: http://127.0.0.1:1/
            timeout: 20s
          - name: b
            kind: http
            retires: 3
          - name: c
            url: http://127.0.0.1:1/${nope}
    """)
    run = run_prober("validate", "--config.file", str(path))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "prober.yml:8: check 'a': checks[0].timeout" in run.stderr
    assert "prober.yml:9: check 'b': checks[1].url: Field required" in run.stderr
    assert "prober.yml:11: check 'b': checks[1].retires: unknown key" in run.stderr
    assert "prober.yml:13: check 'c': checks[2].url: unknown variable 'nope'" in run.stderr
    assert "4 error(s)" in run.stderr


def test_validate_missing_file() -> None:
    run = run_prober("validate", "--config.file", "/nonexistent/prober.yml")
    assert run.returncode == 1
    assert "cannot read file" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("show_metrics", [False, True], ids=["trace-only", "with-metrics"])
async def test_probe_prints_the_trace_and_metrics_only_when_asked(show_metrics: bool) -> None:
    sim = await start_sim()
    canary = "canary-password-7f3a9"
    try:
        env = {"PATH": "/usr/bin:/bin", "PLATFORM_URL": sim.url, "DEMO_PASSWORD": canary}
        args = ["probe", "--config.file", "prober.yml", "timeline"]
        # The sim runs in this event loop, so the CLI must run without blocking it.
        process = await spawn_prober(*args, *(["--metrics"] if show_metrics else []), env=env)
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        await sim.stop()
    stdout, stderr = out.decode(), err.decode()
    # The canary is not the sim's password, so login fails at the login step with 401.
    assert process.returncode == 1, stdout + stderr
    assert "step login: FAILED" in stdout
    assert "reason: status: status 401" in stdout
    assert "path: lean" in stdout
    assert ('probe_success{check="timeline"' in stdout) is show_metrics
    assert ("metrics:" in stdout) is show_metrics
    assert canary not in stdout + stderr


async def _status_of(base: str, check: str) -> str | None:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/api/status") as resp:
        checks = (await resp.json())["checks"]
    return next((str(c["state"]) for c in checks if c["name"] == check), None)


async def _refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/-/healthy"):
            return False
    except aiohttp.ClientConnectionError:
        return True


FREE_PORTS = (
    "--sim.listen-address", "127.0.0.1:0", "--sim.grpc-listen-address", "127.0.0.1:0",
    "--reference.listen-address", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0",
)  # fmt: skip


def _child_url(lines: list[str], what: str) -> str:
    (line,) = [line for line in lines if f"{what} serving" in line]
    url = str(log_fields(line)["url"])
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0"), url
    return url


async def test_demo_on_port_0_probes_the_sim_and_the_reference_where_they_listen() -> None:
    process = await spawn_prober("demo", "--config.file", "prober.yml", *FREE_PORTS)
    try:
        lines = await read_log_until(process, log_message("serving"))
        sim_url = _child_url(lines, "simulated platform")
        reference_url = _child_url(lines, "reference endpoint")
        base = str(log_fields(lines[-1])["metrics"]).removesuffix("/metrics")

        shown = ("api-health", "canary", "notifications-grpc", "notifications-websocket")

        async def all_ok() -> bool:
            return [await _status_of(base, name) for name in shown] == ["ok"] * len(shown)

        await wait_for(all_ok, limit=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert await _refused(sim_url)  # the children stopped with the demo
    assert await _refused(reference_url)


async def test_demo_with_the_sim_port_taken_exits_1_and_probes_nothing(target: Target) -> None:
    taken = target.url.rpartition(":")[2]
    process = await spawn_prober(
        "demo", "--config.file", "prober.yml", "--log.format", "json",
        "--sim.listen-address", f"127.0.0.1:{taken}", "--reference.listen-address", "127.0.0.1:0",
        "--sim.grpc-listen-address", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0",
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert out == b""
    records = [json.loads(line) for line in err.decode().splitlines()]
    messages = [str(r["msg"]) for r in records]
    assert any(f"cannot listen on 127.0.0.1:{taken}" in m for m in messages), messages
    assert messages[-1] == "the simulated platform did not start"
    assert "prober started" not in messages
    assert target.hits == 0  # the process on that port was never probed


async def test_demo_with_the_grpc_port_taken_exits_1_and_probes_nothing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = await spawn_prober(
            "demo", "--config.file", "prober.yml", "--log.format", "json",
            "--sim.listen-address", "127.0.0.1:0", "--sim.grpc-listen-address", f"127.0.0.1:{port}",
            "--reference.listen-address", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0",
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    messages = [str(json.loads(line)["msg"]) for line in err.decode().splitlines()]
    assert f"prober sim: cannot listen on 127.0.0.1:{port}: Address already in use" in messages
    assert messages[-1] == "the simulated platform did not start"
    assert "prober started" not in messages


async def test_demo_with_the_reference_port_taken_exits_1_and_stops_the_sim(
    target: Target,
) -> None:
    taken = target.url.rpartition(":")[2]
    process = await spawn_prober(
        "demo", "--config.file", "prober.yml", "--log.format", "json",
        "--sim.listen-address", "127.0.0.1:0", "--reference.listen-address", f"127.0.0.1:{taken}",
        "--sim.grpc-listen-address", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0",
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    records = [json.loads(line) for line in err.decode().splitlines()]
    messages = [str(r["msg"]) for r in records]
    assert any(f"cannot listen on 127.0.0.1:{taken}" in m for m in messages), messages
    assert messages[-1] == "the reference endpoint did not start"
    assert "prober started" not in messages
    assert target.hits == 0  # the canary never probed the process on that port
    (sim_url,) = [str(r["url"]) for r in records if r["msg"] == "simulated platform serving"]
    assert await _refused(sim_url)


async def test_demo_with_the_web_port_taken_exits_1_and_stops_the_sim() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = await spawn_prober(
            "demo", "--config.file", "prober.yml",
            "--sim.listen-address", "127.0.0.1:0", "--reference.listen-address", "127.0.0.1:0",
            "--sim.grpc-listen-address", "127.0.0.1:0", "--web.listen-address", f"127.0.0.1:{port}",
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    lines = err.decode().splitlines()
    fields = [log_fields(line) for line in lines]
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in [
        f["msg"] for f in fields
    ]
    assert "prober started" not in [f["msg"] for f in fields]
    (sim_url,) = [str(f["url"]) for f in fields if f["msg"] == "simulated platform serving"]
    assert await _refused(sim_url)


@pytest.mark.parametrize(
    "args",
    [["run", "--shard", "3/2"], ["run", "--web.listen-address", "nowhere"]],
    ids=["bad-shard", "bad-listen"],
)
def test_bad_flags_give_one_line_error(args: list[str]) -> None:
    run = run_prober(*args)
    assert run.returncode in (1, 2)
    assert "Traceback" not in run.stderr


async def test_healthcheck_follows_the_listen_address_from_the_environment(
    target: Target, write_config: WriteConfig
) -> None:
    config = write_config(f"""
        checks:
          - {{name: good, kind: http, component: api, url: "{target.url}/ok"}}
    """)
    env = {**os.environ, "PROBER_WEB_LISTEN_ADDRESS": f":{free_port()}"}
    process = await spawn_prober("run", "--config.file", str(config), env=env)
    try:
        await read_log_until(process, log_message("serving"))
        health = await spawn_prober("healthcheck", env=env)
        _, err = await asyncio.wait_for(health.communicate(), timeout=30)
        assert health.returncode == 0, err.decode()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    health = await spawn_prober("healthcheck", env=env)
    _, err = await asyncio.wait_for(health.communicate(), timeout=30)
    assert health.returncode == 1
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "/-/healthy: " in lines[0] and "refused" in lines[0], lines


def test_validate_warns_when_a_canary_shares_fate_with_the_platform(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        checks:
          - {name: api, url: "http://127.0.0.1:8180/api/v1/health"}
          - {name: canary, canary: true, url: "http://127.0.0.1:8180/-/healthy"}
          - {name: elsewhere, canary: true, url: "http://127.0.0.1:8181/-/healthy"}
    """)
    run = run_prober("validate", "--config.file", str(path))
    assert run.returncode == 0, run.stderr
    assert "warning: check 'canary': this canary probes 127.0.0.1:8180" in run.stderr
    assert "'elsewhere'" not in run.stderr
