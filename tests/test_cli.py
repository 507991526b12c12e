"""The command line as a user runs it: validate, probe, errors without tracebacks."""

from __future__ import annotations

import asyncio

import pytest

from prober.sim.server import start_sim
from tests.conftest import WriteConfig, run_prober, spawn_prober


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


async def test_probe_prints_trace_and_metrics_without_secrets() -> None:
    sim = await start_sim()
    canary = "canary-password-7f3a9"
    try:
        env = {"PATH": "/usr/bin:/bin", "PLATFORM_URL": sim.url, "DEMO_PASSWORD": canary}
        # The sim runs in this event loop, so the CLI must run without blocking it.
        process = await spawn_prober("probe", "--config.file", "prober.yml", "timeline", env=env)
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        await sim.stop()
    stdout, stderr = out.decode(), err.decode()
    # The canary is not the sim's password, so login fails at the login step with 401.
    assert process.returncode == 1, stdout + stderr
    assert "step login: FAILED" in stdout
    assert "reason: status: status 401" in stdout
    assert 'probe_success{check="timeline"' in stdout
    assert canary not in stdout + stderr


@pytest.mark.parametrize(
    "args",
    [["run", "--shard", "3/2"], ["run", "--web.listen-address", "nowhere"]],
    ids=["bad-shard", "bad-listen"],
)
def test_bad_flags_give_one_line_error(args: list[str]) -> None:
    run = run_prober(*args)
    assert run.returncode in (1, 2)
    assert "Traceback" not in run.stderr


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
