"""Flows against the real simulated platform: login, token reuse, re-login, failures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from prober.cli.trace import format_result, metric_lines
from prober.config.load import Config, load_config
from prober.config.model import FlowCheck
from prober.engine.daemon import Daemon
from prober.engine.runner import RunEnvironment, run_check
from prober.probes.context import HttpClients
from prober.probes.sessions import SessionStore
from prober.result import Reason
from prober.sim import SimOptions, shard_share, start_sim
from prober.sim.server import RunningSim
from prober.sinks.metrics import MetricsSink, SeriesPlan
from prober.web.app import build_app
from prober.web.server import start_web
from tests.support.checks import WriteConfig, fast_shipped_config, run_environment, shipped_env
from tests.support.processes import REPO, wait_for

CANARY = "Canary-Pa55word-9d1e"
API_CANARY = "Canary-Ap1-T0ken-4b7c"


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    running = await start_sim(
        options=SimOptions(
            latency_ms=0,
            latency_jitter_ms=0,
            seed=1,
            users={"demo": CANARY},
            accounts_password=CANARY,
            token_ttl_s=3600,
            api_tokens={API_CANARY: "demo"},
        ),
        grpc_listen=("127.0.0.1", 0),
    )
    yield running
    await running.stop()


def shipped(sim: RunningSim, password: str = CANARY) -> Config:
    return load_config(
        REPO / "prober.yml", env={"PLATFORM_URL": sim.url, "DEMO_PASSWORD": password}
    )


@pytest.fixture
async def env_factory() -> AsyncIterator[Any]:
    clients = HttpClients("prober-test")
    sessions = SessionStore()

    def make(config: Config) -> RunEnvironment:
        return RunEnvironment(clients, config.template_values(), config.sensitive_values, sessions)

    yield make
    await clients.close()


async def set_fault(sim: RunningSim, component: str, **fault: Any) -> None:
    url = f"{sim.url}/-/faults/{component}"
    async with aiohttp.ClientSession() as session, session.put(url, json=fault) as resp:
        assert resp.status == 200, await resp.text()


async def sim_stats(sim: RunningSim) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/-/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


@pytest.mark.parametrize("name", ["login", "timeline", "notifications"])
async def test_shipped_flow_passes(sim: RunningSim, env_factory: Any, name: str) -> None:
    config = shipped(sim)
    result = await run_check(config.check(name), env_factory(config))
    assert result.success, format_result(result)
    assert all(step.success for step in result.steps)


async def test_wrong_password_fails_at_login_with_status(sim: RunningSim, env_factory: Any) -> None:
    config = shipped(sim, password="not-the-password")
    result = await run_check(config.check("timeline"), env_factory(config))
    assert not result.success
    assert result.failed_step == "login"
    assert result.reason == Reason.STATUS
    assert [s.name for s in result.steps] == ["login"]


async def test_session_token_is_reused_across_checks(sim: RunningSim, env_factory: Any) -> None:
    config = shipped(sim)
    env = env_factory(config)
    env.rotation.update(timeline=0, notifications=0)  # both start at the pool's first account
    first = await run_check(config.check("timeline"), env)
    second = await run_check(config.check("notifications"), env)
    assert first.success and second.success
    assert second.steps[0].cached  # every account of the run reused its session
    assert [run.account for run in first.accounts] == [run.account for run in second.accounts]
    # One session per account, counted under the configured session name.
    assert env.sessions.events[("user", "success")] == 3
    assert env.sessions.events[("user", "reused")] == 3


async def test_expired_token_triggers_exactly_one_relogin(env_factory: Any) -> None:
    sim = await start_sim(
        options=SimOptions(
            latency_ms=0,
            latency_jitter_ms=0,
            users={"demo": CANARY},
            accounts_password=CANARY,
            token_ttl_s=0.2,
        )
    )
    try:
        config = shipped(sim)
        env = env_factory(config)
        env.rotation["timeline"] = 0
        assert (await run_check(config.check("timeline"), env)).success

        async def token_expired() -> bool:
            async with aiohttp.ClientSession() as session:
                token = next(iter(env.sessions._logins.values())).variables["token"]
                headers = {"Authorization": f"Bearer {token}"}
                async with session.get(f"{sim.url}/api/v1/notifications", headers=headers) as resp:
                    return resp.status == 401

        await wait_for(token_expired, limit=5)
        env.rotation["timeline"] = 0  # the same three accounts, whose tokens expired
        result = await run_check(config.check("timeline"), env)
        assert result.success, format_result(result)
        assert env.sessions.events[("user", "rejected")] == 3  # once per account
        assert env.sessions.events[("user", "success")] == 6
        for run in result.accounts:
            logins = [s for s in run.steps if s.name == "login"]
            assert [s.cached for s in logins] == [True, False]
    finally:
        await sim.stop()


async def test_broken_notifications_fail_only_that_step(sim: RunningSim, env_factory: Any) -> None:
    config = shipped(sim)
    env = env_factory(config)
    await set_fault(sim, "notifications", status=503)
    sink = MetricsSink()
    checks = [config.check("timeline"), config.check("notifications")]
    sink.apply({c.name: SeriesPlan.of(c) for c in checks}, {})
    results = [await run_check(check, env) for check in checks]
    for result in results:
        sink.record(result)
    timeline, notifications = results
    assert timeline.success
    assert not notifications.success
    assert notifications.failed_step == "notifications"
    assert notifications.reason == Reason.STATUS
    text = sink.render().decode()
    assert (
        'prober_step_success{check="timeline",component="timeline",step="home-timeline"} 1.0'
        in text
    )
    assert (
        'prober_step_success{check="notifications",component="notifications",'
        'step="notifications"} 0.0'
    ) in text
    assert (
        'prober_check_failures_total{check="notifications",component="notifications",'
        'reason="status",failed_step="notifications"} 1.0'
    ) in text
    # What the prober saw matches what the platform did.
    stats = (await sim_stats(sim))["components"]
    assert stats["notifications"]["outcomes"]["error_status"] == 3  # fanout: 3 accounts
    assert stats["timeline"]["outcomes"]["ok"] == 3


FLOW_OPTIONS = """
checks:
  - name: f
    kind: flow
    component: api
    interval: 10s
    timeout: 2s
    steps:
      - name: optional
        url: "${URL}/api/v1/nothing-here"
        allow_failure: true
        extract: {later: $.x}
      - name: uses-missing
        url: "${URL}/api/v1/health?v=${later}"
      - name: cleanup
        always_run: true
        url: "${URL}/api/v1/health"
"""


async def test_allow_failure_always_run_and_runtime_template_error(
    sim: RunningSim, env_factory: Any, write_config: WriteConfig
) -> None:
    config = load_config(write_config(FLOW_OPTIONS), env={"URL": sim.url})
    check = config.checks[0]
    assert isinstance(check, FlowCheck)
    result = await run_check(check, env_factory(config))
    names = [(s.name, s.success) for s in result.steps]
    assert names == [("optional", False), ("uses-missing", False), ("cleanup", True)]
    assert result.failed_step == "uses-missing"
    assert result.reason == Reason.TEMPLATE
    assert "variable 'later' has no value" in result.message


async def test_secret_never_appears_in_any_output(
    sim: RunningSim,
    reference: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo password, the API token (the websocket and grpc checks send it) and the
    session token appear in no metric, status, log or trace."""
    caplog.set_level(logging.DEBUG)
    for name, value in shipped_env(sim).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEMO_PASSWORD", CANARY)
    monkeypatch.setenv("API_TOKEN", API_CANARY)
    config_path = fast_shipped_config(tmp_path)
    daemon = Daemon(config_path)
    await daemon.start()
    runner = await start_web(build_app(daemon.metrics, daemon), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{runner.port}"
    try:
        await wait_for(lambda: all(s.success is not None for s in daemon.status.states()), limit=10)
        await set_fault(sim, "notifications", status=401)
        await wait_for(lambda: any(s.success is False for s in daemon.status.states()), limit=10)
        outputs = []
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/api/status", "/status"):
                async with session.get(base + path) as resp:
                    outputs.append(await resp.text())
        config = load_config(config_path)
        async with run_environment(config.template_values(), config.sensitive_values) as env:
            for name in ("timeline", "notifications-websocket", "notifications-grpc"):
                result = await run_check(config.check(name), env)
                outputs.append(format_result(result))
                outputs.append(metric_lines(config, result))
        outputs.append(caplog.text)
        tokens = [v for c in daemon.sessions._logins.values() for v in c.variables.values()]
    finally:
        await runner.cleanup()
        await daemon.stop()
    assert tokens, "the flow should have logged in and cached a token"
    everything = "\n".join(outputs)
    assert "check failed" in caplog.text
    assert CANARY not in everything
    assert API_CANARY not in everything
    for token in tokens:
        assert token not in everything


def test_reload_forgets_sessions_no_check_names() -> None:
    store = SessionStore()
    store.put("old", {"token": "t"}, 60)
    store.record("old", "success")
    store.lock("old")
    store.put("kept", {"token": "u"}, 60)
    store.record("kept", "reused")
    store.forget_unused({"kept"})
    assert store.get("old") is None
    assert set(store.events) == {("kept", "reused")}


async def test_a_pooled_flow_runs_as_fanout_accounts_rotating_through_the_pool(
    sim: RunningSim, env_factory: Any
) -> None:
    config = shipped(sim)
    check = config.check("timeline")
    env = env_factory(config)
    seen: list[str] = []
    for _ in range(4):
        result = await run_check(check, env)
        assert result.success, result.message
        assert len(result.accounts) == 3
        seen += [run.account for run in result.accounts]
        (login, home) = result.steps
        assert (login.name, home.name, home.accounts, home.accounts_failed) == (
            "login",
            "home-timeline",
            3,
            0,
        )
    assert len(set(seen)) == 12  # rotating: no account twice in 4 runs of 3
    assert all(name.startswith("user-") for name in seen)


async def test_an_account_scoped_fault_fails_exactly_the_accounts_on_that_shard(
    sim: RunningSim, env_factory: Any
) -> None:
    await set_fault(sim, "timeline", status=503, accounts=0.3)
    config = shipped(sim)
    check = config.check("timeline")
    env = env_factory(config)
    outcomes: dict[str, bool] = {}
    for _ in range(10):
        result = await run_check(check, env)
        for run in result.accounts:
            outcomes[run.account] = run.success
        failing = sum(1 for run in result.accounts if not run.success)
        assert result.success == (failing == 0)
        assert result.steps[-1].accounts_failed == failing
    assert len(outcomes) == 30
    assert {name: shard_share(name) >= 0.3 for name in outcomes} == outcomes
    assert 0 < sum(1 for ok in outcomes.values() if not ok) < 30


async def test_the_write_journey_measures_propagation_and_degrades_when_it_is_slow(
    sim: RunningSim, env_factory: Any
) -> None:
    config = shipped(sim)
    check = config.check("reply-journey")
    env = env_factory(config)
    quick = await run_check(check, env)
    assert quick.success and not quick.degraded, format_result(quick)
    await set_fault(sim, "notifications", propagation_delay_ms=2500)
    slow = await run_check(check, env)
    notified = next(s for s in slow.steps if s.name == "reply-notified")
    assert slow.success, format_result(slow)
    assert notified.waited is not None and notified.waited >= 2.5  # it waited for the write
    assert slow.degraded  # over the step's degraded_after (2 s)
    await set_fault(sim, "notifications", propagation_delay_ms=60_000)
    lost = await run_check(check, env)
    assert not lost.success
    assert lost.failed_step == "reply-notified"  # the write never showed within 4 s
