"""`kind: websocket` through `run_check`, against the simulated platform's notification
stream: hello within the time passes; no token is a 401, a hang a timeout naming
first_message, a mismatching message an assertion; the series are probe_websocket_*."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from prober.config.model import WebsocketCheck
from prober.config.secrets import Secret
from prober.engine.runner import RunEnvironment, run_check
from prober.result import Reason, Result, WsFacts
from prober.sim import DEMO_PASSWORD, RunningSim, SimOptions, start_sim
from tests.support.certs import CertFactory
from tests.support.checks import facts_of, run_environment
from tests.support.samples import exported_samples
from tests.support.servers import free_port, serve_app

FAST = SimOptions(latency_ms=0, latency_jitter_ms=0, seed=5)
STREAM = "/api/v1/notifications/stream"
HELLO = r'"type":\s*"hello"'
HANG = 0.5  # the `within`, or the timeout, of checks that are meant to wait in vain


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(options=FAST)
    yield running
    await running.stop()


async def token_of(sim: RunningSim) -> str:
    creds = {"username": "user-0001", "password": DEMO_PASSWORD}
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{sim.url}/api/v1/login", json=creds) as resp,
    ):
        return str((await resp.json())["access_token"])


@pytest.fixture
async def authorized(sim: RunningSim) -> AsyncIterator[RunEnvironment]:
    """A run environment whose secret `token` is a logged-in account's."""
    token = await token_of(sim)
    async with run_environment({"token": Secret(token)}, frozenset({token})) as env:
        yield env


def ws_check(url: str, **fields: Any) -> WebsocketCheck:
    settings: dict[str, Any] = {
        "name": "w",
        "kind": "websocket",
        "component": "notifications",
        "url": url,
        "headers": {"Authorization": "Bearer ${token}"},
        "expect": HELLO,
        "within": 2.0,
        "interval": 10.0,
        "timeout": 5.0,
    }
    return WebsocketCheck.model_validate({**settings, **fields})


def stream_url(sim: RunningSim) -> str:
    return sim.url.replace("http://", "ws://") + STREAM


async def put_fault(sim: RunningSim, fault: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.put(f"{sim.url}/-/faults/notifications", json=fault) as resp,
    ):
        assert resp.status == 200, await resp.text()


def ws_facts(result: Result) -> WsFacts:
    (step,) = result.steps
    return facts_of(step, WsFacts)


async def test_hello_within_the_time_passes(sim: RunningSim, authorized: RunEnvironment) -> None:
    result = await run_check(ws_check(stream_url(sim)), authorized)
    assert result.success, result.message
    facts = ws_facts(result)
    assert (facts.status_code, facts.messages, facts.tls) == (101, 1, None)
    assert facts.phases.processing > 0 and facts.phases.transfer > 0  # handshake, first_message
    samples = {(n, dict(labels).get("phase")): v for n, labels, v in exported_samples(result, "n")}
    assert samples[("probe_websocket_status_code", None)] == 101
    phases = {p for n, p in samples if n == "probe_websocket_duration_seconds"}
    assert phases == {"resolve", "connect", "tls", "handshake", "first_message"}


async def test_without_token_the_upgrade_is_refused_with_401(
    sim: RunningSim, env: RunEnvironment
) -> None:
    result = await run_check(ws_check(stream_url(sim), headers={}), env)
    assert result.reason is Reason.STATUS
    assert ws_facts(result).status_code == 401
    samples = {n: v for n, _, v in exported_samples(result, "n")}
    assert samples["probe_websocket_status_code"] == 401


async def test_hang_times_out_naming_first_message(
    sim: RunningSim, authorized: RunEnvironment
) -> None:
    await put_fault(sim, {"hang": True})
    result = await run_check(ws_check(stream_url(sim), within=HANG), authorized)
    assert result.reason is Reason.TIMEOUT
    assert "first_message" in result.message
    assert ws_facts(result).status_code == 101
    deadline = await run_check(ws_check(stream_url(sim), within=None, timeout=HANG), authorized)
    assert deadline.reason is Reason.TIMEOUT
    assert "first_message" in deadline.message


async def test_mismatching_message_fails_the_expectation(
    sim: RunningSim, authorized: RunEnvironment
) -> None:
    result = await run_check(ws_check(stream_url(sim), expect="welcome", within=HANG), authorized)
    assert result.reason is Reason.ASSERTION
    assert ws_facts(result).messages == 1
    assert "hello" not in result.message


async def test_refused_port_fails_in_connect(env: RunEnvironment) -> None:
    result = await run_check(ws_check(f"ws://127.0.0.1:{free_port()}/s", headers={}), env)
    assert result.reason is Reason.CONNECT_REFUSED
    assert ws_facts(result).status_code is None


async def test_secret_in_the_url_never_shows(sim: RunningSim, authorized: RunEnvironment) -> None:
    token = await token_of(sim)
    check = ws_check(stream_url(sim) + "?access_token=${token}", expect="welcome", within=HANG)
    result = await run_check(check, authorized)
    (step,) = result.steps
    assert token not in step.request_line and token not in result.message
    assert "access_token" not in step.request_line  # the query is left out


async def test_sent_message_is_answered_over_wss(certs: CertFactory, env: RunEnvironment) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner, url = await serve_app(app, ssl_context=certs.issue().server_context())
    try:
        wss = url.replace("https://", "wss://") + "/echo"
        tls = {"ca_file": str(certs.ca_file)}
        check = ws_check(wss, headers={}, send="ping", expect="^echo ping$", tls=tls)
        result = await run_check(check, env)
        assert result.success, result.message
        facts = ws_facts(result)
        assert facts.tls is not None and facts.tls.expiry is not None
        assert facts.phases.tls > 0
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "http://127.0.0.1/stream"}, "ws:// or wss://"),
        ({"url": "ws:///stream"}, "no host"),
        ({"expect": None}, "give expect too"),
        ({"expect": "("}, "missing"),
    ],
)
def test_bad_keys_are_refused_at_load(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ws_check(**{"url": "ws://127.0.0.1/s", **fields})
