"""`prober run` as an operator runs it: where it listens, what it logs, how it fails to start."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import aiohttp
import pytest

from tests.support.checks import WriteConfig
from tests.support.processes import log_fields, log_message, read_log_until, spawn_prober
from tests.support.servers import Target

ONE_CHECK = """
interval: 0.5s
timeout: 0.4s
checks:
  - {name: good, kind: http, component: api, url: "URL/ok"}
"""


async def stop(process: asyncio.subprocess.Process) -> list[str]:
    """SIGTERM, then the rest of stderr; the exit code must be 0."""
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return err.decode().splitlines(keepends=True)


async def healthy(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/-/healthy") as resp:
        return resp.status


async def test_every_interface_is_dual_stack_and_the_flag_repeats(
    target: Target, write_config: WriteConfig
) -> None:
    config = write_config(ONE_CHECK.replace("URL", target.url))
    process = await spawn_prober(
        "run", "--config.file", str(config),
        "--web.listen-address", ":0", "--web.listen-address", "[::1]:0",
    )  # fmt: skip
    try:
        lines = await read_log_until(process, log_message("serving"))
        addresses = [log_fields(line)["address"] for line in lines if "msg=listening" in line]
        assert len(addresses) == 2, lines
        every, loopback6 = (str(a).rpartition(":") for a in addresses)
        assert every[0] == "[::]" and loopback6[0] == "[::1]", addresses
        # One dual-stack socket: the same port answers over IPv4 and IPv6.
        assert await healthy(f"http://127.0.0.1:{every[2]}") == 200
        assert await healthy(f"http://[::1]:{every[2]}") == 200
        assert await healthy(f"http://[::1]:{loopback6[2]}") == 200
    finally:
        await stop(process)


async def test_json_logs_every_line_and_a_recovery_says_how_long_it_failed(
    target: Target, write_config: WriteConfig
) -> None:
    target.status = 503
    config = write_config(ONE_CHECK.replace("URL", target.url))
    process = await spawn_prober(
        "run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0",
        "--log.format", "json",
    )  # fmt: skip
    try:
        # Two failed runs in a row confirm the failure (the second is the confirming re-run);
        # a check that was never confirmed failing has nothing to recover from.
        lines = await read_log_until(process, log_message("check failed"))
        lines += await read_log_until(process, log_message("check failed"))
        target.status = 200
        lines += await read_log_until(process, log_message("check recovered"))
    finally:
        lines += await stop(process)
    records = [json.loads(line) for line in lines]  # every line is JSON
    messages = [r["msg"] for r in records]
    for expected in ("prober started", "listening", "serving", "check recovered", "prober stopped"):
        assert expected in messages, messages
    assert messages.index("prober started") < messages.index("serving")
    (recovered,) = [r for r in records if r["msg"] == "check recovered"]
    assert recovered["check"] == "good" and recovered["component"] == "api"
    assert recovered["level"] == "info"
    assert isinstance(recovered["failing_seconds"], float) and recovered["failing_seconds"] >= 0


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
async def test_busy_port_exits_1_before_anything_runs(
    target: Target, write_config: WriteConfig, log_format: str
) -> None:
    config = write_config(ONE_CHECK.replace("URL", target.url))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = await spawn_prober(
            "run", "--config.file", str(config), "--log.format", log_format,
            "--web.listen-address", f"127.0.0.1:{port}",
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    fields = log_fields(lines[0])
    assert fields["level"] == "error"
    assert str(fields["msg"]).startswith(f"cannot listen on 127.0.0.1:{port}: "), fields
    if log_format == "json":
        json.loads(lines[0])
    assert target.hits == 0  # no probe ran


@pytest.mark.parametrize("level", ["warn", "warning"])
async def test_log_level_warn_keeps_failures_and_drops_info(
    target: Target, write_config: WriteConfig, level: str
) -> None:
    target.status = 503
    config = write_config(ONE_CHECK.replace("URL", target.url))
    process = await spawn_prober(
        "run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0",
        "--log.level", level,
    )  # fmt: skip
    try:
        lines = await read_log_until(process, log_message("check failed"))
    finally:
        lines += await stop(process)
    levels = {log_fields(line)["level"] for line in lines}
    assert levels == {"warning"}, lines


async def test_invalid_config_is_logged_one_located_line_per_issue(
    write_config: WriteConfig,
) -> None:
    config = write_config("""
        checks:
          - {name: a, kind: http}
          - {name: b, kind: http, component: api, url: "http://127.0.0.1:1/", retires: 3}
    """)
    process = await spawn_prober(
        "run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0",
        "--log.format", "json",
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    records = [json.loads(line) for line in err.decode().splitlines()]
    errors = [r["error"] for r in records if r["msg"] == "invalid configuration"]
    assert len(errors) == 2, records
    assert errors[0].startswith(f"{config}:3: check 'a'") and "url: Field required" in errors[0]
    assert errors[1].startswith(f"{config}:4: check 'b'") and "retires: unknown key" in errors[1]
    assert "prober started" not in [r["msg"] for r in records]
