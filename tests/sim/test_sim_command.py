"""`prober sim` on the command line: arguments and the process."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import aiohttp
import pytest

from prober.sim import DEMO_PASSWORD, DEMO_USER
from prober.sim.faults import FaultError, FaultSpec, parse_fault_args
from prober.sim.server import add_sim_arguments, run_sim
from tests.support.processes import REPO
from tests.support.sim import NOTIFICATIONS, TIMELINE, get_json

# --- command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["notifications:status=503"], {"notifications": FaultSpec(status=503)}),
        (
            ["all:latency_ms=50,latency_jitter_ms=10"],
            {"all": FaultSpec(latency_ms=50, latency_jitter_ms=10)},
        ),
        (["timeline:hang"], {"timeline": FaultSpec(hang=True)}),
        (["login:malformed=truncated"], {"login": FaultSpec(malformed="truncated")}),
        (
            ["login:error_rate=0.2", "login:status=503"],
            {"login": FaultSpec(error_rate=0.2, status=503)},
        ),
        (["timeline:status=503,accounts=0.3"], {"timeline": FaultSpec(status=503, accounts=0.3)}),
        (["all:hang,accounts=1"], {"all": FaultSpec(hang=True, accounts=1.0)}),
        (
            ["notifications:propagation_delay_ms=20000"],
            {"notifications": FaultSpec(propagation_delay_ms=20000)},
        ),
    ],
    ids=[
        "status",
        "latency",
        "bare-flag",
        "malformed-mode",
        "repeated-merge",
        "accounts",
        "all-accounts",
        "propagation",
    ],
)
def test_fault_arguments_parse(args: list[str], expected: dict[str, FaultSpec]) -> None:
    assert parse_fault_args(args) == expected


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("status=503", "expected COMPONENT:KEY=VALUE"),
        ("search:status=503", "unknown component 'search'"),
        ("login:status=abc", "--fault login: status:"),
        ("login:error_rate=1.5", "error_rate:"),
        ("login:", "expected COMPONENT:KEY=VALUE"),
        ("login:=3", "empty key"),
        ("login:colour=red", "colour: unknown key"),
        ("timeline:status=503,accounts=0", "--fault timeline: accounts: Input should be greater"),
        ("timeline:accounts=30%", "accounts: Input should be a valid number"),
        ("api:propagation_delay_ms=100", "--fault api: propagation_delay_ms: only on timeline"),
    ],
    ids=[
        "no-component",
        "unknown-component",
        "bad-int",
        "rate",
        "no-fields",
        "empty-key",
        "key",
        "no-accounts",
        "accounts-percent",
        "propagation-on-api",
    ],
)
def test_bad_fault_arguments_are_refused(arg: str, message: str) -> None:
    with pytest.raises(FaultError, match=message.replace("(", r"\(")):
        parse_fault_args([arg])


def _sim_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fault", "login:colour=red"], "colour: unknown key"),
        (["--scenario", "no-such-outage"], "unknown scenario 'no-such-outage'"),
        (["--listen", "localhost"], "bad --listen"),
        (["--user", "alice"], "bad --user"),
        (["--speed", "0"], "speed:"),
        (["--accounts", "-1"], "accounts: Input should be greater than or equal to 0"),
        (["--accounts-password", ""], "accounts_password: String should have at least 1"),
        (["--fault", "login:propagation_delay_ms=5"], "propagation_delay_ms: only on"),
    ],
    ids=["fault", "scenario", "listen", "user", "speed", "accounts", "password", "propagation"],
)
def test_run_sim_rejects_bad_arguments_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run_sim(_sim_args(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("prober sim: ")
    assert message in err
    assert err.count("\n") == 1


async def test_sim_command_serves_until_sigint(client: aiohttp.ClientSession) -> None:
    code = (
        "import argparse, sys\n"
        "from prober.sim.server import add_sim_arguments, run_sim\n"
        "p = argparse.ArgumentParser(); add_sim_arguments(p)\n"
        "sys.exit(run_sim(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--listen", "127.0.0.1:0", "--latency-ms", "0",
        "--fault", "notifications:status=503", "--fault", "timeline:status=502,accounts=0.3",
        "--accounts", "3", "--accounts-password", "Rack-Pa55-7f2c",
        stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert f"demo user {DEMO_USER} / {DEMO_PASSWORD}" in line
        assert "accounts user-0001..user-0003" in line
        assert "Rack-Pa55-7f2c" not in line  # a chosen password is never printed
        url = line.split("serving ")[1].split()[0]
        async with client.get(url + NOTIFICATIONS) as resp:
            assert resp.status == 503
        assert (await get_json(client, f"{url}/-/accounts"))["accounts"] == 3
        creds = {"username": "user-0002", "password": "Rack-Pa55-7f2c"}
        async with client.post(f"{url}/api/v1/login", json=creds) as resp:
            token = (await resp.json())["access_token"]
        async with client.get(url + TIMELINE, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 502  # user-0002's shard (0.106) is in the 30%
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
