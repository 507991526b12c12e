"""Wires config -> scheduler -> probes -> sinks, and applies reloads as a diff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from prober.config.load import Config, ConfigError, load_config, load_off_loop, shared_fate_warnings
from prober.config.model import Check, FlowCheck
from prober.engine.loop import LoopLagMonitor, settle_heap
from prober.engine.runner import RunEnvironment, run_check
from prober.engine.scheduler import Scheduler
from prober.engine.shard import Shard, owned_checks
from prober.probes.context import HttpClients
from prober.probes.net.tls import tls_blocks
from prober.probes.sessions import SessionStore
from prober.result import Reason
from prober.sinks.log import Throttled, log_failure, log_recovery
from prober.sinks.metrics import MetricsSink, SeriesPlan
from prober.sinks.status import StatusSink, Watched

log = logging.getLogger("prober.engine.daemon")

VERDICT_EVERY = 1.0
# The verdict looks at every check (about 4 us each); at 10,000 checks it takes ~40 ms, so
# it runs at most this share of the time to keep event-loop stalls rare.
_VERDICT_DUTY = 0.005
_MAX_DRAIN = 30.0
# A check that disagrees with its confirmed state runs again this soon (at most a quarter
# of its interval): long enough for a lost packet to pass, short enough to confirm an
# outage within seconds of the first failing run.
CONFIRM_DELAY = 1.0


def _watched(check: Check) -> Watched:
    """What the status sink needs of a check: its component(s), kind and interval."""
    steps = check.steps if isinstance(check, FlowCheck) else []
    return Watched(
        check.component,
        check.kind,
        check.interval,
        {s.name: s.component for s in steps if s.component and s.component != check.component},
        pooled=isinstance(check, FlowCheck) and bool(check.account_names),
    )


class Daemon:
    """The long-running prober: owns the config, the schedule, the clients and the sinks."""

    def __init__(self, config_path: str | os.PathLike[str], shard: Shard | None = None) -> None:
        self.config_path = Path(config_path)
        self.shard = shard
        self.metrics = MetricsSink()
        self.status = StatusSink()
        self.sessions = SessionStore()
        self.metrics.watch_sessions(self.sessions.events)
        self.metrics.watch_verdict(
            self.status.component_conditions,
            lambda: self.status.verdict.scope,
            self.status.component_shares,
        )
        self.config: Config | None = None
        self.ready = False
        self._checks: dict[str, Check] = {}
        self._clients: HttpClients | None = None
        self._env: RunEnvironment | None = None
        self._scheduler = Scheduler(
            self._run_job,
            self.metrics.daemon.scheduler_lag.observe,
            self.metrics.daemon.runs_skipped.inc,
        )
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._extra: dict[str, asyncio.Task[None]] = {}  # confirmation and sweep runs due
        self._recheck: dict[str, frozenset[str]] = {}  # their components, to log in afresh
        self._semaphore = asyncio.Semaphore(1)
        self._reload_lock = asyncio.Lock()
        self._lag = LoopLagMonitor()
        self._background: set[asyncio.Task[None]] = set()
        self._fd_shortage = Throttled(
            log, "out of file descriptors: runs fail with reason resource (see RUNBOOK.md)"
        )

    async def _load(self) -> Config:
        """Load the config off the loop within its time limit (config.load_off_loop)."""
        return await load_off_loop(partial(load_config, self.config_path), str(self.config_path))

    async def start(self) -> None:
        """Load the config (raising ConfigError) and start probing."""
        config = await self._load()
        self._clients = HttpClients(config.settings.user_agent)
        self._semaphore = asyncio.Semaphore(config.settings.max_concurrent_probes)
        self._apply(config)
        # The first runs start with their SSL contexts built (a reload's runs wait for theirs
        # before their clock starts: runner.tls_ready).
        await self._clients.tls_ready(b for c in self._checks.values() for b in tls_blocks(c))
        settle_heap()
        self._scheduler.start()
        lag = self._lag.watch(config.settings.loop_lag_budget, self.metrics.daemon.loop_lag.observe)
        for coro in (lag, self._evaluate_verdicts()):
            task = asyncio.create_task(coro)
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.ready = True
        for warning in shared_fate_warnings(config):
            log.warning(warning)
        log.info(
            "prober started", extra={"checks": len(self._checks), "config": str(self.config_path)}
        )

    async def reload(self) -> Config:
        """Load the config again and apply it as a diff; on error keep the running one."""
        async with self._reload_lock:
            try:
                config = await self._load()
            except ConfigError as exc:
                self.metrics.daemon.reload_ok.set(0)
                log.error("reload failed, keeping the running config", extra={"errors": str(exc)})
                raise
            self._apply(config)
            settle_heap()
            log.info("config reloaded", extra={"checks": len(self._checks)})
            return config

    def status_snapshot(self) -> dict[str, Any]:
        """/api/status: the status sink's snapshot with the config's global labels (the
        vantage point)."""
        config = self.config
        return self.status.snapshot(config.settings.labels if config else None)

    def _apply(self, config: Config) -> None:
        owned = owned_checks(config.checks, self.shard)
        changed = {n for n, c in owned.items() if n in self._checks and self._checks[n] != c}
        for name in (set(self._checks) - set(owned)) | changed:
            task = self._inflight.get(name)
            if task is not None:
                task.cancel()
        assert self._clients is not None
        self._clients.forget_tls()  # a reload re-reads CA and client-certificate files
        self._clients.prepare_tls(b for c in owned.values() for b in tls_blocks(c))
        self._env = RunEnvironment(
            self._clients, config.template_values(), config.sensitive_values, self.sessions
        )
        self._checks = owned
        self.config = config
        self.metrics.apply({n: SeriesPlan.of(c) for n, c in owned.items()}, config.settings.labels)
        self.status.apply({n: _watched(c) for n, c in owned.items()})
        self._scheduler.apply({n: c.interval for n, c in owned.items()}, changed)
        self.sessions.forget_unused(
            {
                s.session
                for c in owned.values()
                if isinstance(c, FlowCheck)
                for s in c.steps
                if s.session
            }
        )
        daemon = self.metrics.daemon
        daemon.checks_configured.labels(scope="all").set(len(config.checks))
        daemon.checks_configured.labels(scope="owned").set(len(owned))
        daemon.reload_ok.set(1)
        daemon.reload_time.set(time.time())

    async def _run_job(self, name: str, recheck: frozenset[str] = frozenset()) -> None:
        """Run and record the check, in the task the scheduler made for this run.

        A reload or shutdown cancels that task (it is the one in `_inflight`); the scheduler
        treats a cancelled run as over, not as an error.
        """
        check = self._checks.get(name)
        env = self._env
        run = asyncio.current_task()
        if check is None or env is None or run is None:
            return
        if name in self._inflight:
            # A confirmation run of this check is still going: this run would overlap it.
            self.metrics.daemon.runs_skipped.inc()
            return
        self._inflight[name] = run
        try:
            await self._run_and_record(name, check, env, recheck)
        finally:
            if self._inflight.get(name) is run:
                del self._inflight[name]

    async def _run_and_record(
        self, name: str, check: Check, env: RunEnvironment, recheck: frozenset[str]
    ) -> None:
        """Run the check and record it; an extra run logs in afresh where it re-checks."""
        if self._semaphore.locked():
            self.metrics.daemon.probes_delayed.inc()
        async with self._semaphore:
            result = await run_check(
                check, env, recheck, lambda since: self._lag.over_budget_at >= since
            )
        if result.loop_lag_exceeded:
            self.metrics.daemon.lag_exceeded.inc()
        if self._checks.get(name) is not check:
            return  # changed or removed by a reload while it ran
        self.metrics.record(result)
        failing_since = self.status.failing_since(name)
        followup = self.status.record(result)
        if result.reason is Reason.RESOURCE:
            self._fd_shortage.note(check=name)  # one line a minute, not one per run
        elif not result.success:
            log_failure(result, check.component)
        elif failing_since is not None and self.status.failing_since(name) is None:
            log_recovery(result, check.component, failing_since)
        if followup.confirm:
            delay = min(CONFIRM_DELAY, check.interval / 4)
            self.run_soon(name, "confirm", delay, followup.confirm)
        for other, components in followup.sweep.items():
            self.run_soon(other, "sweep", 0.0, components)

    def run_soon(
        self, name: str, trigger: str, delay: float, recheck: frozenset[str] = frozenset()
    ) -> None:
        """Run a check once more, besides its schedule, unless such a run is already due.

        `recheck` names the components the run is for: its session steps of those log in
        afresh. A request folded into one already due adds its components to it. A run of
        the check still going when this one is due is waited for first.
        """
        self._recheck[name] = self._recheck.get(name, frozenset()) | recheck
        if name in self._extra or not self.ready:
            return

        async def run() -> None:
            try:
                await asyncio.sleep(delay)
                while (running := self._inflight.get(name)) is not None:
                    await asyncio.wait({running})
                if name in self._checks:
                    self.metrics.daemon.extra_runs.labels(trigger=trigger).inc()
                    del self._extra[name]  # a run that disagrees again may ask for another
                    await self._run_job(name, self._recheck.pop(name, frozenset()))
            finally:
                if self._extra.get(name) is task:
                    del self._extra[name]

        task = asyncio.create_task(run(), name=f"{trigger}:{name}")
        self._extra[name] = task

    async def _evaluate_verdicts(self) -> None:
        while True:
            budget = self.config.settings.loop_lag_budget if self.config else 0.1
            started = time.perf_counter()
            self.status.forget_stale()
            verdict = self.status.evaluate(self._lag.p99(), budget)
            self.metrics.daemon.set_verdict(verdict.state)
            took = time.perf_counter() - started
            await asyncio.sleep(max(VERDICT_EVERY, took / _VERDICT_DUTY))

    async def stop(self) -> None:
        """Stop scheduling, let in-flight runs finish within their timeouts, then close."""
        self.ready = False
        self._scheduler.apply({}, set())  # no new runs; the running ones finish below
        for extra in list(self._extra.values()):
            extra.cancel()
        pending = [t for t in self._inflight.values() if not t.done()]
        if pending:
            bound = min(
                _MAX_DRAIN,
                max(
                    (c.timeout * (c.retries + 1) + 0.5 for c in self._checks.values()),
                    default=1.0,
                ),
            )
            _, still = await asyncio.wait(pending, timeout=bound)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        self._scheduler.shutdown()
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._clients is not None:
            await self._clients.close()
        log.info("prober stopped")
