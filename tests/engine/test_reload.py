"""Reloads as an operator does them: good, bad, add/remove/change, mid-probe, in a row,
by file watch and by signal; and SIGTERM while probes hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from prober.config.load import ConfigError
from prober.engine.daemon import Daemon
from prober.engine.watch import watch, watched_files
from prober.sim import SimOptions, start_sim
from tests.support.certs import CertFactory
from tests.support.checks import WriteConfig
from tests.support.processes import read_base_url, run_prober, spawn_prober, wait_for
from tests.support.samples import Sample, parse_samples, sample_value
from tests.support.servers import Target, serve_app

BASE = """
interval: 0.2s
timeout: 0.15s
labels: {vantage: test}
checks:
  - {name: steady, kind: http, component: api, url: "${URL}/ok"}
"""


def samples(daemon: Daemon) -> list[Sample]:
    return parse_samples(daemon.metrics.render().decode())


def value(daemon: Daemon, name: str, **labels: str) -> float | None:
    return sample_value(samples(daemon), name, **labels)


def runs(daemon: Daemon, check: str) -> float:
    """Runs recorded so far, successful or not (a loaded machine may fail a few)."""
    return sum(
        v
        for name, labels, v in samples(daemon)
        if name == "prober_check_runs_total" and ("check", check) in labels
    )


def checks_in_metrics(daemon: Daemon) -> set[str]:
    return {
        dict(labels)["check"]
        for name, labels, _ in samples(daemon)
        if name == "probe_success" and "check" in dict(labels)
    }


def probe_tasks(check: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"check:{check}"]


@pytest.fixture
async def daemon(
    target: Target, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("URL", target.url)
    running = Daemon(write_config(BASE))
    await running.start()
    yield running
    await running.stop()


async def test_reload_adds_removes_and_changes_checks(
    daemon: Daemon, write_config: WriteConfig
) -> None:
    write_config(
        BASE
        + """
  - {name: doomed, kind: http, component: api, url: "${URL}/ok"}
  - {name: changing, kind: http, component: timeline, url: "${URL}/ok", labels: {tier: a}}
"""
    )
    await daemon.reload()
    await wait_for(lambda: checks_in_metrics(daemon) == {"steady", "doomed", "changing"})
    write_config(
        BASE
        + """
  - {name: changing, kind: http, component: timeline, url: "${URL}/ok", labels: {tier: b}}
  - {name: added, kind: http, component: notifications, url: "${URL}/ok"}
"""
    )
    config = await daemon.reload()
    assert {c.name for c in config.checks} == {"steady", "changing", "added"}
    # Removed: its series are gone at once, before any new run.
    assert "doomed" not in checks_in_metrics(daemon)
    await wait_for(lambda: value(daemon, "probe_success", check="added") == 1.0)
    await wait_for(lambda: value(daemon, "probe_success", check="changing", tier="b") == 1.0)
    assert value(daemon, "probe_success", check="changing", tier="a") is None
    assert value(daemon, "prober_config_last_reload_successful") == 1.0
    assert value(daemon, "prober_checks_configured", scope="owned") == 3.0


async def test_bad_reload_keeps_running_config_until_a_good_one(
    daemon: Daemon, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_for(lambda: runs(daemon, "steady") >= 1)
    write_config(BASE + "  - {name: broken, kind: http, component: api}\n")
    with pytest.raises(ConfigError) as caught:
        await daemon.reload()
    assert "prober.yml:7: check 'broken': checks[1].url: Field required" in str(caught.value)
    assert value(daemon, "prober_config_last_reload_successful") == 0.0
    assert any(
        r.levelno == logging.ERROR and "reload failed" in r.getMessage() for r in caplog.records
    )
    before = runs(daemon, "steady")
    await wait_for(lambda: runs(daemon, "steady") > before)  # the running config still probes
    write_config(BASE)
    await daemon.reload()
    assert value(daemon, "prober_config_last_reload_successful") == 1.0


async def test_reload_cancels_removed_checks_in_flight_probe_cleanly(
    daemon: Daemon, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hanging = """
  - {name: hanging, kind: http, component: api, url: "${URL}/hang", interval: 2s, timeout: 1.9s}
"""
    write_config(BASE + hanging)
    await daemon.reload()
    await wait_for(lambda: probe_tasks("hanging"))
    in_flight = probe_tasks("hanging")[0]
    write_config(BASE)
    await daemon.reload()
    await wait_for(in_flight.done, limit=1.0)
    assert in_flight.cancelled()
    assert "hanging" not in checks_in_metrics(daemon)
    before = runs(daemon, "steady")
    await wait_for(lambda: runs(daemon, "steady") > before)
    problems = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        or (r.name.startswith("apscheduler") and r.levelno >= logging.WARNING)
    ]
    assert problems == [], [r.getMessage() for r in problems]


async def test_reload_restarts_changed_check_in_flight(
    daemon: Daemon, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    slow = (
        '  - {name: moving, kind: http, component: api, url: "${URL}/hang",'
        " interval: 2s, timeout: 1.9s}\n"
    )
    fast = '  - {name: moving, kind: http, component: api, url: "${URL}/ok"}\n'
    write_config(BASE + slow)
    await daemon.reload()
    await wait_for(lambda: probe_tasks("moving"))
    in_flight = probe_tasks("moving")[0]
    write_config(BASE + fast)
    await daemon.reload()
    await wait_for(in_flight.done, limit=1.0)
    # The cancelled run recorded nothing; the new settings run and succeed.
    await wait_for(lambda: value(daemon, "probe_success", check="moving") == 1.0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_twenty_reloads_in_a_row_keep_unchanged_series_counting(
    daemon: Daemon, write_config: WriteConfig
) -> None:
    await wait_for(lambda: runs(daemon, "steady") >= 1)
    extra = '  - {name: toggled, kind: http, component: api, url: "${URL}/ok"}\n'
    seen = runs(daemon, "steady")
    for index in range(20):
        write_config(BASE + (extra if index % 2 == 0 else ""))
        await daemon.reload()
        now = runs(daemon, "steady")
        assert now >= seen, "an unchanged check's counter went backwards on reload"
        seen = now
        # The unchanged check keeps running between reloads: its schedule was not reset.
        await wait_for(lambda: runs(daemon, "steady") > seen)  # noqa: B023
        seen = runs(daemon, "steady")
    assert "toggled" not in checks_in_metrics(daemon)
    assert value(daemon, "prober_config_last_reload_successful") == 1.0


def replace_file(path: Path, text: str) -> None:
    """Write as editors and kubelet do, by renaming a complete file into place."""
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text)
    os.replace(staged, path)


async def test_auto_reload_watch_applies_changed_and_new_check_files(
    target: Target,
    write_config: WriteConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("URL", target.url)
    main = BASE + "check_files: [checks/*.yml]\n"
    path = write_config(main, api="checks: []\n")
    checks = path.parent / "checks"
    daemon = Daemon(path)
    await daemon.start()
    polls: list[int] = []

    def files() -> list[Path]:
        polls.append(1)
        return watched_files(path, daemon.config)

    def has(check: str) -> bool:
        return value(daemon, "probe_success", check=check) is not None

    def reload_ok() -> float | None:
        return value(daemon, "prober_config_last_reload_successful")

    one = 'checks:\n  - {{name: {}, kind: http, component: api, url: "${{URL}}/ok"}}\n'
    watcher = asyncio.create_task(watch(files, 0.05, _quiet(daemon)))
    try:
        await wait_for(lambda: len(polls) >= 2)  # the baseline is taken: changes count from here
        replace_file(checks / "api.yml", one.format("from-file"))
        await wait_for(lambda: has("from-file"))
        replace_file(checks / "extra.yml", one.format("new-file"))  # a new file, same glob
        await wait_for(lambda: has("new-file"))
        (checks / "extra.yml").unlink()
        await wait_for(lambda: not has("new-file"))
        replace_file(path, main + "bogus: 1\n")
        await wait_for(lambda: reload_ok() == 0.0)
        replace_file(path, main)
        await wait_for(lambda: reload_ok() == 1.0)
        failures = [r for r in caplog.records if "reload failed" in r.getMessage()]
        assert len(failures) == 1, "a bad config is reported once, not on every poll"
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await daemon.stop()


def _quiet(daemon: Daemon) -> Callable[[], Awaitable[None]]:
    """Reload, as the watch in serve.py does: a bad config is logged by the daemon."""

    async def reload() -> None:
        with contextlib.suppress(ConfigError):
            await daemon.reload()

    return reload


class HangingTarget:
    """A target whose every request hangs; counts the requests that arrived."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, _: web.Request) -> web.Response:
        self.arrived += 1
        await self.release.wait()
        return web.Response(text="late")


@pytest.fixture
async def hanging() -> AsyncIterator[HangingTarget]:
    state = HangingTarget()
    app = web.Application()
    app.router.add_get("/hang", state.handle)
    runner, state.url = await serve_app(app)
    yield state
    state.release.set()
    await runner.cleanup()


async def _start_prober(config: Path, *extra: str) -> tuple[asyncio.subprocess.Process, str]:
    """`prober run` on a free port; returns the process and its base URL once it serves."""
    process = await spawn_prober(
        "run", "--config.file", str(config), "--web.listen-address", "127.0.0.1:0", *extra
    )
    return process, await read_base_url(process)


async def _scrape(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as resp:
        return await resp.text()


async def test_sigterm_during_hanging_probes_exits_0(
    hanging: HangingTarget, write_config: WriteConfig
) -> None:
    timeout = 2.0
    checks = "\n".join(
        f'  - {{name: hang-{i}, kind: http, component: api, url: "{hanging.url}/hang"}}'
        for i in range(3)
    )
    config = write_config(f"interval: 3s\ntimeout: {timeout}s\nchecks:\n{checks}\n")
    process, _ = await _start_prober(config)
    await wait_for(lambda: hanging.arrived >= 3, limit=15)
    process.send_signal(signal.SIGTERM)
    # The daemon lets in-flight probes run out their timeout, then exits; bound it generously.
    _, err = await asyncio.wait_for(process.communicate(), timeout=timeout + 20)
    stderr = err.decode()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "level=error" not in stderr, stderr
    assert "prober stopped" in stderr


@pytest.mark.parametrize("trigger", ["sighup", "auto-reload"])
async def test_cli_daemon_reloads_on_sighup_or_file_change(
    target: Target, write_config: WriteConfig, trigger: str
) -> None:
    check = '  - {{name: {name}, kind: http, component: api, url: "{url}/ok"}}\n'
    head = "interval: 0.5s\ntimeout: 0.3s\nchecks:\n"
    config = write_config(head + check.format(name="one", url=target.url))
    extra = ["--config.auto-reload-interval", "100ms"] if trigger == "auto-reload" else []
    process, base = await _start_prober(config, *extra)
    try:
        await wait_for(lambda: _has_check(base, "one"))
        write_config(head + check.format(name="two", url=target.url))
        if trigger == "sighup":
            process.send_signal(signal.SIGHUP)
        await wait_for(lambda: _has_check(base, "two"))
        assert not await _has_check(base, "one")
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    stderr = err.decode()
    assert process.returncode == 0, stderr
    assert "config reloaded" in stderr and "Traceback" not in stderr


async def _has_check(base: str, check: str) -> bool:
    return f'probe_success{{check="{check}"' in await _scrape(base)


def test_bad_auto_reload_interval_is_a_usage_error() -> None:
    run = run_prober("run", "--config.auto-reload-interval", "soon")
    assert run.returncode == 2
    assert "--config.auto-reload-interval: 'soon' is not a duration" in run.stderr
    assert "Traceback" not in run.stderr


GRPC_TLS = """
interval: 1s
timeout: 0.8s
checks:
  - name: g
    kind: grpc
    component: api
    target: TARGET
    use_tls: true
    tls: {ca_file: CA_FILE}
"""


async def test_reload_rebuilds_a_grpc_checks_tls_context(
    certs: CertFactory, tmp_path: Path
) -> None:
    """A reload drops the gRPC (ALPN h2) SSL contexts with the http ones: the CA file
    rewritten in place under the same `tls` block is read again, and a changed block's new
    CA is the one used."""
    server = certs.issue().server_context()
    server.set_alpn_protocols(["h2"])
    sim = await start_sim(
        options=SimOptions(latency_ms=0, latency_jitter_ms=0),
        grpc_listen=("127.0.0.1", 0),
        grpc_tls=server,
    )
    assert sim.grpc is not None
    (tmp_path / "other-ca").mkdir()
    other = CertFactory(tmp_path / "other-ca")  # a CA that did not sign the server's leaf
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(other.ca_file.read_bytes())
    config = tmp_path / "prober.yml"
    target = sim.grpc.address.replace("127.0.0.1", "localhost")
    config.write_text(GRPC_TLS.replace("TARGET", target).replace("CA_FILE", str(ca_file)))
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(lambda: value(daemon, "probe_success", check="g") == 0, limit=20)
        ca_file.write_bytes(certs.ca_file.read_bytes())  # the right CA, same block
        await daemon.reload()
        await wait_for(lambda: value(daemon, "probe_success", check="g") == 1, limit=20)
        moved = tmp_path / "moved-ca.pem"
        moved.write_bytes(other.ca_file.read_bytes())
        config.write_text(GRPC_TLS.replace("TARGET", target).replace("CA_FILE", str(moved)))
        await daemon.reload()
        await wait_for(lambda: value(daemon, "probe_success", check="g") == 0, limit=20)
    finally:
        await daemon.stop()
        await sim.stop()
