"""One sweep over every output: canary secrets from env, files and headers never appear."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from prober.config.load import ConfigError, load_config
from prober.engine.daemon import Daemon
from prober.sinks.log import JsonFormatter, LogfmtFormatter
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.checks import WriteConfig
from tests.support.processes import spawn_prober, wait_for
from tests.support.servers import Target

ENV_SECRET = "env-canary-0b7e2c41"
FILE_SECRET = "file-canary-5d93aa17"
RAW_ENV_SECRET = "raw-env-canary-77f0e1"
CANARIES = (ENV_SECRET, FILE_SECRET, RAW_ENV_SECRET)

CONFIG = """
interval: 0.5s
timeout: 0.4s
secrets:
  api_token: {env: API_TOKEN}
  file_token: {file: token.txt}
checks:
  - name: header-from-env-secret
    kind: http
    component: api
    url: "${URL}/echo"
    headers: {Authorization: "Bearer ${api_token}"}
    assert: ['$.headers.Authorization == "nope"']
  - name: header-from-file-secret
    kind: http
    component: api
    url: "${URL}/echo"
    headers: {X-Key: "${file_token}"}
    assert: ['body contains "never-there"']
  - name: header-from-raw-env
    kind: http
    component: api
    url: "${URL}/echo"
    headers: {X-Env: "${RAW_ENV_SECRET}"}
    expected_status: [418]
  - name: secret-in-query-and-userinfo
    kind: flow
    component: login
    steps:
      - name: login
        url: "http://user:${api_token}@${HOSTPORT}/echo?token=${file_token}"
        extract: {echoed: $.query.token}
      - name: use
        method: POST
        url: "${URL}/echo"
        json: {token: "${echoed}"}
        assert: ['$.body contains "nothing"']
"""


async def run_cli(*args: str, env: dict[str, str]) -> str:
    process = await spawn_prober(*args, env=env, merge_stderr=True)
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return out.decode()


async def test_canary_secrets_appear_in_no_output(
    target: Target,
    write_config: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "token.txt").write_text(FILE_SECRET + "\n")
    env = {
        "URL": target.url,
        "HOSTPORT": target.url.removeprefix("http://"),
        "API_TOKEN": ENV_SECRET,
        "RAW_ENV_SECRET": RAW_ENV_SECRET,
        "PATH": "/usr/bin:/bin",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = write_config(CONFIG)
    outputs: list[str] = []
    daemon = Daemon(path)
    await daemon.start()
    runner = await start_web(build_app(daemon.metrics, daemon, daemon.reload), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{runner.port}"
    try:
        await wait_for(lambda: all(s.success is False for s in daemon.status.states()))
        async with aiohttp.ClientSession() as session:
            for endpoint in ("/metrics", "/api/status", "/status"):
                async with session.get(base + endpoint) as resp:
                    outputs.append(await resp.text())
            # A bad reload whose error would quote an environment value.
            path.write_text(CONFIG.replace("interval: 0.5s", "interval: ${API_TOKEN}"))
            async with session.post(base + "/-/reload") as resp:
                assert resp.status == 400
                outputs.append(await resp.text())
        for check in (
            "header-from-env-secret",
            "header-from-file-secret",
            "header-from-raw-env",
            "secret-in-query-and-userinfo",
        ):
            path.write_text(CONFIG)
            outputs.append(
                await run_cli("probe", "--config.file", str(path), check, "--metrics", env=env)
            )
        path.write_text(CONFIG.replace("interval: 0.5s", "interval: ${API_TOKEN}"))
        outputs.append(await run_cli("validate", "--config.file", str(path), env=env))
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        outputs.append(str(caught.value))
    finally:
        await runner.cleanup()
        await daemon.stop()
    # Every log record the prober wrote, with its structured fields, in both formats (the
    # test target's own access log is not the prober's output).
    records = [r for r in caplog.records if r.name != "aiohttp.access"]
    outputs += [JsonFormatter().format(r) for r in records]
    outputs += [LogfmtFormatter().format(r) for r in records]
    everything = "\n".join(outputs)
    # The sweep saw real failures and traces, not empty pages.
    assert "assertion failed" in everything and "step login" in everything
    assert "echoed = ***" in everything
    assert "detail=" in everything
    for canary in CANARIES:
        assert canary not in everything, f"{canary} leaked"
